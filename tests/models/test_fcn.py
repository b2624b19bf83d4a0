"""FCN-32s/16s/8s (Long et al. 2015): shapes for any size, the zero-initialised skips (a fresh
FCN-16s/8s computes FCN-32s), pixel alignment (a mirror-symmetric network commutes with
torch.flip), fixed/learned upsampling, and a tiny model that learns a few images."""

import json
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.errors import UserError
from vislab.models.fcn import FCN, fcn8s, fcn16s, fcn32s, upsample_crop
from vislab.models.registry import create_model, default_kwargs, list_models
from vislab.models.upsample import BilinearUpsample

TINY = {"widths": [8, 16, 32, 64], "stem_width": 8}
FACTORIES = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}
pytestmark = pytest.mark.usefixtures("one_thread")


def square_and_disc(n: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` grey images ``(n, 3, size, size)`` with a bright square (class 1) and a bright disc
    (class 2, drawn last) on a dark background (class 0), plus noise; and their labels."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        side = int(torch.randint(size // 3, size // 2 + 1, (1,), generator=g))
        top, left = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
        labels[i, top:top + side, left:left + side] = 1
        r = int(torch.randint(size // 6, size // 4 + 1, (1,), generator=g))
        cy, cx = torch.randint(r, size - r, (2,), generator=g).tolist()
        labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    images = (labels > 0).float()[:, None].expand(n, 3, size, size)
    return images + 0.1 * torch.randn(n, 3, size, size, generator=g), labels


def overfit(model: nn.Module, steps: int, lr: float, size: int = 64) -> tuple[float, float]:
    """Adam on 4 images of :func:`square_and_disc`: (pixel accuracy in eval mode, seconds)."""
    images, labels = square_and_disc(4, size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(1)
    assert (labels == 0).float().mean() < 0.8                  # all-background scores below 0.8
    return (pred == labels).float().mean().item(), seconds


@pytest.fixture
def one_thread():
    """One torch thread: these models are tiny, and two threads on a busy 2-core machine can
    stall each other for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _symmetrise(model: nn.Module) -> None:
    """Make every kernel left-right symmetric: the network then commutes with a horizontal flip,
    wherever its sampling grid is itself symmetric."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)


def _randomise_scores(model: FCN) -> None:
    for score in model.scores:
        nn.init.normal_(score.weight)
        nn.init.normal_(score.bias)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_output_has_the_input_size(name, size):
    model = FACTORIES[name](num_classes=5, backbone_kwargs=TINY).eval()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size) and model.num_classes == 5


def test_backbone_maps_are_ceil_h_over_s():
    """The premise of the top-left crop: the stride-s map has ceil(H / s) rows and columns."""
    model = fcn8s(num_classes=3, backbone_kwargs=TINY)
    feats = model.backbone(torch.randn(1, 3, 70, 90))
    for f, s in zip(feats, model.backbone.reductions):
        assert f.shape[-2:] == (-(-70 // s), -(-90 // s))


def test_upsample_crop_puts_coarse_pixel_j_on_fine_pixel_f_j():
    """A coarse map holding each pixel's image coordinate (8 j) comes back holding o at fine
    pixel o: linear interpolation reproduces the ramp, and the top-left crop aligns it."""
    coarse = (8.0 * torch.arange(5))[None, None, :, None].expand(1, 1, 5, 3)
    fine = upsample_crop(BilinearUpsample(1, 8, align_corners=True), coarse, (37, 20))
    expected = torch.arange(37.0).clamp(max=32)           # past the last coarse pixel: its value
    torch.testing.assert_close(fine[0, 0, :, 0], expected)
    with pytest.raises(ValueError, match="cannot cover"):
        upsample_crop(BilinearUpsample(1, 8, align_corners=True), coarse, (41, 20))


@pytest.mark.parametrize("name", ["fcn8s", "fcn32s"])
def test_mirror_symmetric_fcn_commutes_with_flip(name):
    """With W = 32 k + 1 every stride-s grid (pixel j on image pixel s j) is symmetric, so a
    network with symmetric kernels must commute with a flip *if* the crops align pixel centres.
    A half-pixel upsampling with the same top-left crops breaks it (off by several units)."""
    torch.manual_seed(0)
    model = FACTORIES[name](num_classes=3, backbone_kwargs=TINY).eval()
    _randomise_scores(model)
    _symmetrise(model)
    x = torch.randn(1, 3, 40, 65)
    torch.testing.assert_close(model(x.flip(-1)), model(x).flip(-1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_fresh_skips_compute_fcn32s(name):
    """The skip score layers start at zero, so with the same backbone and stride-32 score
    weights FCN-16s/8s equal FCN-32s (x2 then x16 linear interpolation is x32 interpolation);
    and they differ as soon as a skip layer is not zero."""
    torch.manual_seed(0)
    ref = fcn32s(num_classes=3, backbone_kwargs=TINY).eval()
    _randomise_scores(ref)
    model = FACTORIES[name](num_classes=3, backbone_kwargs=TINY).eval()
    shared = {k: v for k, v in ref.state_dict().items() if not k.startswith("up_final")}
    missing = model.load_state_dict(shared, strict=False).missing_keys
    assert all(k.startswith(("scores.1", "scores.2", "ups.", "up_final")) for k in missing)
    for size in [(64, 64), (70, 90)]:
        x = torch.randn(2, 3, *size)
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)
    nn.init.normal_(model.scores[1].weight)
    assert not torch.allclose(model(x), ref(x), atol=1e-3)


def test_upsampling_learned_or_fixed():
    learned = fcn8s(num_classes=3, backbone_kwargs=TINY)
    assert [up.weight.requires_grad for up in learned.ups] == [True, True]
    assert not learned.up_final.weight.requires_grad           # the paper fixes the last one
    fixed = fcn8s(num_classes=3, backbone_kwargs=TINY, learn_upsampling=False)
    ups = [m for m in fixed.modules() if isinstance(m, BilinearUpsample)]
    assert len(ups) == 3 and not any(up.weight.requires_grad for up in ups)
    assert [up.factor for up in ups] == [2, 2, 8]


def test_backbone_without_the_strides_is_refused():
    with pytest.raises(UserError, match="resnet18"):          # small_input: strides 1, 2, 4, 8
        fcn16s(num_classes=3, backbone_kwargs={**TINY, "small_input": True})
    with pytest.raises(UserError, match="output_stride"):
        FCN(3, output_stride=4, backbone_kwargs=TINY)


def test_registered_as_segmentation_with_json_defaults():
    assert {"fcn32s", "fcn16s", "fcn8s"} <= set(list_models("fcn*", kind="segmentation"))
    for name in FACTORIES:
        json.dumps(default_kwargs(name))
    model = create_model("fcn8s", num_classes=4, backbone_kwargs=TINY)
    assert isinstance(model, FCN) and model.output_stride == 8


def test_channels_last_and_bf16_autocast():
    model = fcn8s(num_classes=3, backbone_kwargs=TINY).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 70, 90).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 3, 70, 90) and out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert model.scores[0].weight.grad is not None


def test_fcn8s_overfits_four_images():
    torch.manual_seed(0)
    model = fcn8s(num_classes=3, backbone_kwargs=TINY)
    acc, seconds = overfit(model, steps=150, lr=1e-2)
    assert acc >= 0.9, acc
    assert seconds < 10, seconds
