"""ResNet's ``output_stride``: dilation instead of stride in the last stages (DeepLab).

Oracles: torchvision's ``replace_stride_with_dilation`` for the bottleneck ResNets (copied
weights, identical outputs); for the basic block, which torchvision refuses to dilate, the
"algorithme a trous" identity worked out by hand below; receptive fields from the textbook
recurrence, typed in by hand and compared with :func:`vislab.analysis.summary.summarize`.

The a trous identity: a 3x3/2 conv followed by a 3x3 conv equals, on the even positions, the same
3x3 conv at stride 1 followed by the 3x3 conv dilated by 2 (``y[i] = z[2i]``, so
``sum_k v[k] y[i+k-1] = sum_k v[k] z[2i + 2(k-1)]``, zero padding included: ``y[-1]`` and
``z[-2]`` are both padding).  BN (eval), ReLU and the residual add act per position, and the 1x1
shortcut at stride 1 sampled at ``2i`` is the 1x1 shortcut at stride 2.  So a ResNet dilated to
output stride ``os`` computes the plain ResNet's last map exactly at every ``(32/os)``-th position
-- provided the conv that carried the stride keeps the *previous* dilation and only the convs
after it double theirs, the rule of torchvision and DeepLab.
"""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from tests.models.random_weights import randomize_
from vislab.analysis.summary import ReceptiveField, summarize
from vislab.errors import UserError
from vislab.models import create_model, from_torchvision
from vislab.models.resnet import BasicBlock, ResNet


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    return randomize_(model, seed)


def _random_torchvision(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    return _randomize(model.to_empty(device="cpu")).eval()


@pytest.mark.parametrize("name,output_stride,replace", [
    ("resnet50", 8, [False, True, True]),
    ("resnet50", 16, [False, False, True]),
    ("resnext50_32x4d", 8, [False, True, True]),
])
def test_bottleneck_resnets_match_torchvision_dilation(name, output_stride, replace):
    tv = _random_torchvision(name, replace_stride_with_dilation=replace)
    ours = from_torchvision(name, tv.state_dict(), output_stride=output_stride).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tv_feats = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool,
                                 tv.layer1, tv.layer2, tv.layer3, tv.layer4)(x)
        feats = ours.forward_features(x)
        assert feats.shape[-2:] == (64 // output_stride,) * 2
        torch.testing.assert_close(feats, tv_feats)
        torch.testing.assert_close(ours(x), tv(x))
    expected = [4, 8, 16, 16] if output_stride == 16 else [4, 8, 8, 8]
    assert [f["reduction"] for f in ours.feature_info] == expected


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_resnet18_is_the_strided_one_on_its_lattice(output_stride):
    """torchvision refuses dilation in BasicBlock, so the oracle is the a trous identity (module
    docstring), which also pins which of the two 3x3 convs keeps the previous dilation."""
    torch.manual_seed(0)
    plain = _randomize(create_model("resnet18", num_classes=7)).eval()
    dilated = create_model("resnet18", num_classes=7, output_stride=output_stride).eval()
    dilated.load_state_dict(plain.state_dict())       # same keys and shapes: same parameters
    step = 32 // output_stride
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dilated.forward_features(x)[..., ::step, ::step],
                                   plain.forward_features(x))
        # the rule matters: dilating the first block's conv1 too breaks the identity
        conv = dilated.stages[-1][0].conv1[0]
        conv.dilation, conv.padding = (2 * conv.dilation[0],) * 2, (2 * conv.padding[0],) * 2
        assert not torch.allclose(dilated.forward_features(x)[..., ::step, ::step],
                                  plain.forward_features(x), atol=1e-3)


def test_dilation_keeps_parameters_and_grows_maps_4x_per_axis():
    plain, dilated = create_model("resnet18"), create_model("resnet18", output_stride=8)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in dilated.parameters()]
    assert [f["reduction"] for f in dilated.feature_info] == [4, 8, 8, 8]
    x = torch.randn(1, 3, 96, 64)
    assert plain.forward_features(x).shape[-2:] == (3, 2)
    assert dilated.forward_features(x).shape[-2:] == (12, 8)
    convs = [m for m in dilated.stages.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    # stages 0-1: 1; stage 2 (would be stride 16): 1 then 2, 2, 2; stage 3: 2 then 4, 4, 4
    assert [c.dilation[0] for c in convs] == [1] * 8 + [1, 2, 2, 2] + [2, 4, 4, 4]
    assert all(c.stride == (1, 1) for c in convs[8:])
    assert all(m.stride == (1, 1) for m in dilated.stages[2:].modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))   # the shortcuts too


def test_output_stride_counts_the_real_total_with_small_input():
    """Without the stem's 4x reduction a five-stage ResNet reduces by 16: stride 8 dilates only the
    last stage."""
    net = ResNet(BasicBlock, (1, 1, 1, 1, 1), 5, widths=(4, 4, 8, 8, 8), stem_width=4,
                 small_input=True, output_stride=8)
    assert [f["reduction"] for f in net.feature_info] == [1, 2, 4, 8, 8]
    assert net.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
    small = create_model("resnet18", small_input=True, output_stride=8)      # already stride 8
    assert [f["reduction"] for f in small.feature_info] == [1, 2, 4, 8]
    assert [f["reduction"] for f in create_model("resnet18", small_input=True).feature_info] == \
        [1, 2, 4, 8]                                                           # 32: as built


@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet18", dict(output_stride=4), "8, 16 or 32"),
    ("resnet50", dict(output_stride=12), "8, 16 or 32"),
    ("resnet18", dict(small_input=True, output_stride=16), "not reachable.*reduces by 8"),
    ("resnet20", dict(output_stride=8), "not reachable.*reduces by 4"),
])
def test_bad_output_stride_is_a_user_error(name, kwargs, match):
    with pytest.raises(UserError, match=match):
        create_model(name, **kwargs)


def _rf_by_hand(layers: list[tuple[int, int, int]]) -> tuple[int, int]:
    """Receptive field size and jump of a chain of (kernel, stride, dilation) windows: each adds
    ``(k - 1) * d * jump`` pixels, then the jump grows by the stride."""
    size, jump = 1, 1
    for k, s, d in layers:
        size += (k - 1) * d * jump
        jump *= s
    return size, jump


def _last_field(model: nn.Module, input_size: tuple[int, ...], prefix: str) -> ReceptiveField:
    rows = [r for r in summarize(model, input_size).rows if r.name.startswith(prefix)]
    assert isinstance(rows[-1].rf, ReceptiveField)
    return rows[-1].rf


def test_dilated_stack_receptive_field_matches_summary():
    stack = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=d, dilation=d) for d in (1, 2, 4)))
    size, jump = _rf_by_hand([(3, 1, 1), (3, 1, 2), (3, 1, 4)])
    assert (size, jump) == (15, 1)
    assert _last_field(stack, (1, 32, 32), "2") == ReceptiveField((15, 15), (1, 1), (0.0, 0.0))


def test_dilated_resnet18_keeps_the_receptive_field_with_a_finer_jump():
    """By the a trous identity each unit of the output-stride-8 ResNet-18 sees what a unit of the
    plain one sees: both fields are 435 px; only the jump between units drops from 32 to 8."""
    stem = [(7, 2, 1), (3, 2, 1)]
    plain = stem + [(3, 1, 1)] * 4 + [(3, 2, 1)] + [(3, 1, 1)] * 3 \
        + [(3, 2, 1)] + [(3, 1, 1)] * 3 + [(3, 2, 1)] + [(3, 1, 1)] * 3
    dilated = stem + [(3, 1, 1)] * 4 + [(3, 2, 1)] + [(3, 1, 1)] * 3 \
        + [(3, 1, 1)] + [(3, 1, 2)] * 3 + [(3, 1, 2)] + [(3, 1, 4)] * 3
    assert _rf_by_hand(plain) == (435, 32) and _rf_by_hand(dilated) == (435, 8)
    for output_stride, (size, jump) in ((32, _rf_by_hand(plain)), (8, _rf_by_hand(dilated))):
        rf = _last_field(create_model("resnet18", output_stride=output_stride), (3, 64, 64), "stages.3")
        assert rf.size == (size, size) and rf.jump == (jump, jump)
