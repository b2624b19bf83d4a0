"""LeNet-5 against LeCun et al. 1998 (Table I and the per-layer parameter counts of Sec. II.B)."""

import torch
import torch.nn.functional as F

from vislab.models import create_model
from vislab.models.lenet import C3_TABLE, Subsample, TableConv2d

# Table I of the paper, transcribed: rows are S2 maps 0-5, columns C3 maps 0-15.
PAPER_TABLE_I = """
X . . . X X X . . X X X X . X X
X X . . . X X X . . X X X X . X
X X X . . . X X X . . X . X X X
. X X X . . X X X X . . X . X X
. . X X X . . X X X X . X X . X
. . . X X X . . X X X X . X X X
"""


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_c3_table_is_the_papers_table_1():
    rows = [line.split() for line in PAPER_TABLE_I.strip().splitlines()]
    paper = [tuple(i for i in range(6) if rows[i][j] == "X") for j in range(16)]
    assert list(C3_TABLE) == paper


def test_original_options_give_the_papers_parameter_counts():
    model = create_model("lenet5", num_classes=10, in_chans=1, c3_table=True, pool="subsample")
    # Sec. II.B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters
    counts = [_count(getattr(model, n)) for n in ("c1", "s2", "c3", "s4", "c5", "f6")]
    assert counts == [156, 12, 1516, 32, 48120, 10164]
    assert sum(counts) == 60_000                         # "60,000 trainable parameters"
    assert _count(model) == 60_000 + 84 * 10 + 10         # plus a linear output layer (not RBF)
    assert _count(create_model("lenet5", num_classes=10, in_chans=1)) == 61_706   # full C3, avg-pool


def test_table_conv_equals_a_dense_conv_with_the_missing_connections_zeroed():
    torch.manual_seed(0)
    conv = TableConv2d(C3_TABLE, 5)
    x = torch.randn(2, 6, 14, 14)
    weight = torch.zeros(16, 6, 5, 5)
    for j, (inputs, c) in enumerate(zip(C3_TABLE, conv.convs)):
        weight[j, list(inputs)] = c.weight[0]
    bias = torch.cat([c.bias for c in conv.convs])
    torch.testing.assert_close(conv(x), F.conv2d(x, weight, bias))


def test_subsampling_is_a_scaled_2x2_sum_plus_bias():
    s = Subsample(3)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        s.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(2, 3, 4, 4)
    sums = x.reshape(2, 3, 2, 2, 2, 2).sum(dim=(3, 5))
    torch.testing.assert_close(s(x), sums * s.weight.view(1, 3, 1, 1) + s.bias.view(1, 3, 1, 1))


def test_small_input_treats_28x28_like_the_papers_32x32():
    with torch.no_grad():
        big = create_model("lenet5", in_chans=1).forward_features(torch.randn(1, 1, 32, 32))
        small = create_model("lenet5", in_chans=1, small_input=True)
        small = small.forward_features(torch.randn(1, 1, 28, 28))
    assert big.shape == small.shape == (1, 120, 1, 1)
