"""Wide ResNets against Zagoruyko & Komodakis 2016 (parameter counts of Tables 4 and 5)."""

import pytest
import torch

from vislab.models import create_model
from vislab.models.wrn import wide_resnet_cifar


@pytest.mark.parametrize("name,paper", [("wrn_40_4", 8.9), ("wrn_16_8", 11.0), ("wrn_28_10", 36.5)])
def test_parameter_counts_match_the_paper(name, paper):
    with torch.device("meta"):
        model = create_model(name, num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == paper


def test_generic_builder_widths_and_depth():
    with torch.device("meta"):
        model = wide_resnet_cifar(22, 8)
    assert [len(s) for s in model.stages] == [3, 3, 3]                       # (22 - 4) / 6
    assert [f["num_chs"] for f in model.feature_info] == [128, 256, 512]     # 16k, 32k, 64k
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 17.2   # WRN-22-8, Table 5
    with pytest.raises(ValueError, match="6n\\+4"):
        wide_resnet_cifar(27, 10)


def test_dropout_sits_between_the_convolutions():
    torch.manual_seed(0)
    model = create_model("wrn_16_4", num_classes=10, drop=0.3)
    x = torch.randn(2, 3, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))
