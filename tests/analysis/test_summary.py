"""vislab.analysis.summary against published figures, torch's FlopCounterMode, hand counts and
receptive fields measured by gradients."""

import json

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import SqueezeExcitation

from vislab.analysis import GLOBAL, ReceptiveField, build_model, summarize
from vislab.analysis.summary import meta_twins
from vislab.models import list_models, model_family

# torchvision's model cards: parameters and GFLOPS (which are GMACs) at 224x224.
PUBLISHED = {
    "resnet18": (11_689_512, "1.814"),
    "resnet50": (25_557_032, "4.089"),
    "vgg16": (138_357_544, "15.47"),
    "alexnet": (61_100_840, "0.714"),
    "googlenet": (6_624_904, "1.498"),
    "mobilenet_v2": (3_504_872, "0.301"),
    "efficientnet_b0": (5_288_548, "0.386"),
    "vit_b_16": (86_567_656, "17.56"),
}
# Weight layers on the longest path, counted by hand from the papers' tables: the names of
# resnet/vgg; GoogLeNet's "22 layers"; AlexNet 5 conv + 3 fc; MobileNetV2 1 + 2 + 16*3 + 1 + 1;
# EfficientNet-B0 1 + 4 + 15*5 + 1 + 1 (SE's two convs lie on the longest path);
# ViT-B/16 patch conv + 12 * (qkv, out, fc1, fc2) + head.
DEPTH = dict(resnet18=18, resnet50=50, vgg16=16, alexnet=8, googlenet=22, mobilenet_v2=53,
             efficientnet_b0=82, vit_b_16=50)
# vislab's GoogLeNet defaults to the paper (5x5 branch, aux heads); torchvision's weights use 3x3.
VISLAB_AS_TORCHVISION = {"googlenet": dict(aux_logits=False, branch3_kernel=3)}
CASES = [f"torchvision:{n}" for n in PUBLISHED] + [n for n in PUBLISHED if n in list_models()]


@pytest.mark.parametrize("spec", CASES)
def test_published_figures(spec):
    name = spec.removeprefix("torchvision:")
    kwargs = {} if spec.startswith("torchvision:") else VISLAB_AS_TORCHVISION.get(name, {})
    model = build_model(spec, (3, 224, 224), 1000, **kwargs)
    s = summarize(model, (3, 224, 224))
    params, gmacs = PUBLISHED[name]
    assert s.params == params
    assert round(s.macs / 1e9, len(gmacs.split(".")[1])) == float(gmacs)
    assert s.depth == DEPTH[name]
    assert s.other_ops > 0 and s.total_flops == 2 * s.macs + s.other_ops
    assert s.counted_on == "meta" and not s.uncounted
    flop_counter = FlopCounterMode(display=False)   # counts the same ops, as 2 FLOPs per MAC
    with flop_counter, torch.no_grad():
        model.eval()(torch.empty(1, 3, 224, 224, device="meta"))
    assert flop_counter.get_total_flops() == s.flops


def _one_per_family() -> list[str]:
    families: dict[str, str] = {}
    for name in sorted(list_models(), key=lambda n: (len(n), n)):    # the plainest name
        families.setdefault(model_family(name), name)
    return sorted(families.values())


@pytest.mark.parametrize("name", _one_per_family())
def test_registered_families_match_flop_counter(name):
    """One model of every vislab family: MACs equal FlopCounterMode's, nothing uncounted."""
    size = (3, 96, 96)
    model = build_model(name, size, 10)
    s = summarize(model, size)
    flop_counter = FlopCounterMode(display=False)
    with flop_counter, torch.no_grad():
        torch.func.functional_call(model.eval(), meta_twins(model),
                                   (torch.empty(1, *size, device="meta"),))
    assert s.flops == flop_counter.get_total_flops() > 0
    assert s.params == sum(p.numel() for p in model.parameters()) and not s.uncounted


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Matmul(nn.Module):
    def forward(self, x):
        return x @ x.transpose(-1, -2)


def _mha(need_weights: bool) -> nn.Module:
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=need_weights)[0]
    return Attn()


# (module, input size without batch, batch, MACs, other ops), each computed by hand.
HAND = {
    # out 6x4x4 = 96 units, each 4/2 in-channels * 3*3 taps; bias: 1 add per output
    "conv_groups_dilation": (nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
                             (4, 9, 9), 1, 96 * 2 * 9, 96),
    "conv_transposed": (nn.ConvTranspose2d(2, 3, 3, stride=2, bias=False), (2, 4, 4), 1,
                        2 * 16 * 3 * 9, 0),
    "linear": (nn.Linear(5, 3), (5,), 2, 2 * 5 * 3, 2 * 3),
    "batchnorm_eval": (nn.BatchNorm2d(3), (3, 4, 4), 1, 0, 2 * 48),
    "relu": (nn.ReLU(), (3, 4, 4), 1, 0, 48),
    "relu6": (nn.ReLU6(), (3, 4, 4), 1, 0, 2 * 48),
    "hardswish": (nn.Hardswish(), (3, 4, 4), 1, 0, 5 * 48),
    "silu": (nn.SiLU(), (3, 4, 4), 1, 0, 4 * 48),
    "gelu": (nn.GELU(), (3, 4, 4), 1, 0, 5 * 48),
    "maxpool_3x3": (nn.MaxPool2d(3, 2, 1), (3, 8, 8), 1, 0, 3 * 16 * 8),
    "avgpool_2x2": (nn.AvgPool2d(2), (3, 8, 8), 1, 0, 3 * 16 * 4),
    # 7 -> 3 bins: [0,3), [2,5), [4,7): 9 pixels averaged per output
    "adaptive_avg_7_to_3": (nn.AdaptiveAvgPool2d(3), (2, 7, 7), 1, 0, 2 * 9 * 9),
    "global_avg": (nn.AdaptiveAvgPool2d(1), (2, 7, 7), 1, 0, 2 * 49),
    "softmax": (nn.Softmax(dim=-1), (3, 4), 1, 0, 5 * 12),
    "layernorm": (nn.LayerNorm(8), (5, 8), 2, 0, 7 * 80),
    "residual_add": (Residual(nn.Identity()), (3, 4, 4), 1, 0, 48),
    "matmul": (Matmul(), (3, 4, 5), 2, 2 * 3 * 4 * 5 * 4, 0),
    # in_proj 10 tokens x 8 x 24 + out_proj 10 x 8 x 8 + QK^T and AV: 2 * (2*2 heads*5*5*4)
    "attention_sdpa": (_mha(False), (5, 8), 2, 1920 + 640 + 800,
                       # biases 240 + 80, q and k scaled 80 + 80, softmax 5 x 100 scores
                       240 + 80 + 160 + 500),
    "attention_weights": (_mha(True), (5, 8), 2, 1920 + 640 + 800, None),
}


@pytest.mark.parametrize("case", HAND)
@pytest.mark.parametrize("meta", [True, False])
def test_hand_counts(case, meta):
    module, size, batch, macs, other = HAND[case]
    s = summarize(module, size, batch_size=batch, meta=meta)
    assert s.counted_on == ("meta" if meta else "cpu")
    assert s.macs == macs and s.flops == 2 * macs
    if other is not None:
        assert s.other_ops == other
    assert not s.uncounted


def test_meta_and_real_runs_agree():
    model = torchvision.models.mobilenet_v3_small(num_classes=10)   # hardswish, SE, dropout
    a, b = summarize(model, (3, 32, 32)), summarize(model, (3, 32, 32), meta=False)
    assert (a.counted_on, b.counted_on) == ("meta", "cpu")
    assert a.rows == b.rows and a.depth == b.depth
    assert model.training      # the mode is restored


def test_rows_of_resnet18():
    s = summarize(build_model("torchvision:resnet18"), (3, 224, 224))
    rows = {r.name: r for r in reversed(s.rows)}      # first call of each name
    assert rows["conv1"].macs == 64 * 3 * 7 * 7 * 112 * 112
    assert rows["conv1"].params == 64 * 3 * 7 * 7 and rows["conv1"].out_shape == (1, 64, 112, 112)
    assert rows["layer1.0"].own and rows["layer1.0"].other_ops == 64 * 56 * 56   # residual add
    assert rows["fc"].macs == 512 * 1000 and rows["fc"].params == 513_000
    assert sum(r.params for r in s.rows) == s.params
    assert s.act_bytes == sum(r.act_bytes for r in s.rows)
    text = s.table()
    assert "FLOPs = 2 x MACs" in text and "11,689,512" in text
    assert json.loads(s.to_json())["totals"]["macs"] == s.macs


def test_activation_bytes_count_new_tensors_only():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                        nn.Conv2d(4, 2, 1), nn.ReLU())
    s = summarize(net, (3, 8, 8))
    assert [r.act_bytes for r in s.rows] == [4 * 64 * 4, 0, 2 * 64 * 4, 2 * 64 * 4]


def test_shared_and_unused_parameters():
    shared = nn.Linear(4, 4)
    s = summarize(nn.Sequential(shared, nn.ReLU(), shared), (4,))
    assert s.params == s.params_used == 20 and s.macs == 32
    # aux classifiers only run in training: the published 6,624,904 are the parameters used
    g = summarize(torchvision.models.googlenet(aux_logits=True, init_weights=False).to("meta"))
    assert g.params_used == PUBLISHED["googlenet"][0] < g.params


# ------------------------------------------------------------------ receptive fields

class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(2, 2, 1)
        self.b3 = nn.Conv2d(2, 2, 3, padding=1)
        self.b5 = nn.Conv2d(2, 2, 5, padding=2)
        self.pool = nn.AvgPool2d(3, 1, 1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)


def _nets() -> dict[str, nn.Module]:
    block = torchvision.models.resnet.BasicBlock(
        4, 4, stride=2, downsample=nn.Sequential(nn.Conv2d(4, 4, 1, 2), nn.BatchNorm2d(4)))
    return {
        "plain": nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1),
                               nn.AvgPool2d(2), nn.Conv2d(4, 1, 5, padding=3, dilation=2)),
        # a max-pool's field is its window's; gradients see only the argmax, so measure this one
        # through the avg-pool of the same geometry (below)
        "maxpool": nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.MaxPool2d(3, 2, 1),
                                 nn.Conv2d(4, 1, 3)),
        "even_kernels": nn.Sequential(nn.Conv2d(1, 2, 4, 2, 1), nn.Conv2d(2, 2, (3, 5), 1, (0, 2),
                                                                        dilation=(1, 2))),
        "residual": nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), block,
                                  nn.Conv2d(4, 1, 3)),
        "inception": nn.Sequential(nn.Conv2d(1, 2, 3, 2), Inception(), nn.Conv2d(8, 1, 3, 2)),
    }


def _gradient_boxes(net: nn.Module, size: tuple[int, int, int],
                    units: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """First/last input row and column with a non-zero gradient of each output unit (i, j): one
    image of a batch per unit, one backward pass (eval mode: the images are independent)."""
    x = torch.ones(len(units), *size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    sum(y[n, :, i, j].sum() for n, (i, j) in enumerate(units)).backward()
    boxes = []
    for g in x.grad:
        rows, cols = (g.abs().sum(0) > 0).nonzero(as_tuple=True)
        boxes.append((rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()))
    return boxes


@pytest.mark.parametrize("name", _nets())
def test_receptive_field_matches_gradients(name):
    """Size, jump and start predict the exact box of input pixels each unit sees."""
    net = _nets()[name].double().eval()
    size = (1, 64, 60)
    rf = summarize(net, size, dtype=torch.float64).rows[-1].rf
    assert isinstance(rf, ReceptiveField)
    measured = net
    if name == "maxpool":
        measured = nn.Sequential(*[nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
                                   if isinstance(m, nn.MaxPool2d) else m for m in net])
    with torch.no_grad():     # positive weights, zero biases: no gradient cancels out
        for m in measured.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.1, 1.0)
                m.bias.zero_() if m.bias is not None else None
    out_h, out_w = measured(torch.zeros(1, *size, dtype=torch.float64)).shape[-2:]
    units, expected = [], []
    for i in range(out_h):
        for j in range(out_w):
            lo = [rf.start[a] + (i, j)[a] * rf.jump[a] - (rf.size[a] - 1) / 2 for a in (0, 1)]
            hi = [lo[a] + rf.size[a] - 1 for a in (0, 1)]
            if min(lo) >= 0 and hi[0] < size[1] and hi[1] < size[2]:   # field inside the image
                units.append((i, j))
                expected.append((lo[0], hi[0], lo[1], hi[1]))
    rows, cols = sorted({i for i, _ in units}), sorted({j for _, j in units})
    assert len(rows) >= 2 and len(cols) >= 2
    # first, second (one jump on) and last fully inside unit along each axis
    pick = [n for n, (i, j) in enumerate(units)
            if i in (rows[0], rows[1], rows[-1]) and j in (cols[0], cols[1], cols[-1])]
    assert _gradient_boxes(measured, size, [units[n] for n in pick]) == [expected[n] for n in pick]


def test_global_fields():
    torch.manual_seed(0)          # a draw where no ReLU in the SE block is dead for this input
    se = nn.Sequential(nn.Conv2d(1, 4, 3), SqueezeExcitation(4, 2), nn.Conv2d(4, 1, 1))
    gn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))
    for net in (se.double(), gn.double()):
        s = summarize(net, (1, 12, 12), dtype=torch.float64)
        assert s.rows[0].rf == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
        assert s.rows[-1].rf == GLOBAL
        x = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
        net(x)[0, 0, 0, 0].backward()     # the corner unit depends on every pixel
        assert (x.grad != 0).all()


def test_bad_input_size():
    with pytest.raises(ValueError):
        summarize(nn.Linear(2, 2), (0, 2))


def test_a_callers_inference_mode_does_not_hide_the_ops():
    """Counting inside ``torch.inference_mode()`` (as an inference benchmark does) gives the
    same MACs as outside it, on meta tensors and on real ones."""
    from vislab.models import create_model
    model = create_model("small_cnn", num_classes=10, in_chans=1)
    outside = summarize(model, (1, 28, 28)).macs
    with torch.inference_mode():
        assert summarize(model, (1, 28, 28)).macs == outside
        assert summarize(model, (1, 28, 28), meta=False).macs == outside
    assert outside > 0


def test_meta_pass_leaves_cached_tensors_alone():
    """torchvision's AnchorGenerator caches its cell anchors as a plain list attribute and moves
    them to the input's device in forward: the meta pass must not leave them on ``meta``."""
    import torchvision
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from vislab.analysis import summarize

    class Anchors(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
            self.anchors = AnchorGenerator(((8,),), ((1.0,),))

        def forward(self, x):
            feats = [self.conv(x)]
            images = torchvision.models.detection.image_list.ImageList(x, [tuple(x.shape[-2:])] * len(x))
            return self.anchors(images, feats)[0]

    model = Anchors()
    want = model(torch.zeros(1, 3, 32, 32))
    summarize(model, (3, 32, 32))
    assert not any(t.is_meta for t in model.anchors.cell_anchors)
    torch.testing.assert_close(model(torch.zeros(1, 3, 32, 32)), want)
