"""VGG against Simonyan & Zisserman 2015 (Tables 1 and 2)."""

import pytest
import torch
from torch import nn

from vislab.models import create_model


@pytest.mark.parametrize("depth,paper_millions", [(11, 133), (13, 133), (16, 138), (19, 144)])
def test_depth_counts_weight_layers_and_parameters_match_table_2(depth, paper_millions):
    with torch.device("meta"):
        model = create_model(f"vgg{depth}", num_classes=1000)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in layers if isinstance(m, nn.Conv2d))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == paper_millions


def test_small_input_keeps_the_last_stage_at_1x1_and_a_512_wide_mlp_input():
    with torch.device("meta"):
        model = create_model("vgg16_bn", num_classes=10, in_chans=1, small_input=True).eval()
    sizes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    model(torch.randn(1, 1, 28, 28, device="meta"))
    assert sizes == [14, 7, 3, 1, 1]
    assert model.pre_logits.fc1.in_features == 512
