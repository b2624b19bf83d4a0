"""DenseNet against Huang et al. 2017 (Table 2 parameter counts, growth and compression)."""

import pytest
import torch

from vislab.models import create_model
from vislab.models.densenet import DenseBlock


@pytest.mark.parametrize("name,paper", [("densenet_40_12", 1.0), ("densenet_bc_100_12", 0.8),
                                        ("densenet_bc_250_24", 15.3), ("densenet_bc_190_40", 25.6)])
def test_cifar_parameter_counts_match_table_2(name, paper):
    with torch.device("meta"):
        model = create_model(name, num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == paper


def test_each_layer_adds_k_channels_and_sees_all_before_it():
    block = DenseBlock(4, 16, growth_rate=12)
    assert [layer.norm1.num_features for layer in block.layers] == [16, 28, 40, 52]
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    assert out.shape == (2, 16 + 4 * 12, 8, 8)
    torch.testing.assert_close(out[:, :16], x)                  # the input is passed on unchanged


def test_transitions_compress_by_half():
    with torch.device("meta"):
        model = create_model("densenet121", num_classes=1000)
    # 64 + 6*32 = 256 -> 128 + 12*32 = 512 -> 256 + 24*32 = 1024 -> 512 + 16*32 = 1024
    assert [f["num_chs"] for f in model.feature_info] == [256, 512, 1024, 1024]
    assert [s.transition.conv.out_channels for s in model.stages[1:]] == [128, 256, 512]
