"""DeepLab v3 / v3+ against torchvision's heads and model (copied weights, identical outputs),
plus shapes, the output stride, and a small overfitting run."""

import json
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation import deeplabv3 as tv_deeplab
from torchvision.models.segmentation import fcn as tv_fcn

from tests.models.random_weights import randomize_
from vislab.errors import UserError
from vislab.models.deeplab import ASPP, DeepLabHead, FCNHead, default_rates
from vislab.models.registry import create_model, default_kwargs, list_models
from vislab.models.torchvision_compat import remap_torchvision

TINY = dict(backbone_kwargs={"widths": [8, 16, 32, 64], "stem_width": 8}, aspp_chs=16)


def _tiny(name: str, num_classes: int = 3, **kwargs) -> nn.Module:
    extra = {"decoder_chs": 16} if name == "deeplabv3plus" else {}
    return create_model(name, num_classes=num_classes, **(TINY | extra | kwargs))


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    return randomize_(model, seed).eval()


def _aspp_keys(sd: dict, n_rates: int) -> dict:
    """torchvision's ASPP keys -> vislab's: only the image-pooling branch differs (torchvision
    counts its AdaptiveAvgPool2d as layer 0; vislab pools in ``forward``)."""
    pool = n_rates + 1
    return {re.sub(rf"^convs\.{pool}\.(\d)\.", lambda m: f"convs.{pool}.{int(m[1]) - 1}.", k): v
            for k, v in sd.items()}


def _head_keys(sd: dict, n_rates: int) -> dict:
    """torchvision's DeepLabHead (a Sequential: ASPP, conv, BN, ReLU, conv) -> vislab's."""
    named = {"0": "aspp", "1": "conv.0", "2": "conv.1", "4": "classifier"}
    aspp = _aspp_keys({k[2:]: v for k, v in sd.items() if k.startswith("0.")}, n_rates)
    return {f"aspp.{k}": v for k, v in aspp.items()} | \
        {f"{named[k[0]]}.{k[2:]}": v for k, v in sd.items() if not k.startswith("0.")}


def _copy_into(ours: nn.Module, sd: dict) -> nn.Module:
    ours.load_state_dict(sd, strict=True)
    return ours.eval()


def test_aspp_matches_torchvision():
    rates = (2, 3, 5)
    tv = _randomize(tv_deeplab.ASPP(24, rates, out_channels=16))
    ours = _copy_into(ASPP(24, rates, out_chs=16), _aspp_keys(tv.state_dict(), len(rates)))
    x = torch.randn(2, 24, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))
    assert [b[0].dilation[0] for b in ours.convs[1:-1]] == list(rates)


def test_deeplab_head_matches_torchvision():
    tv = _randomize(tv_deeplab.DeepLabHead(32, 5, (1, 2, 4)))
    ours = _copy_into(DeepLabHead(32, 5, (1, 2, 4)), _head_keys(tv.state_dict(), 3))
    x = torch.randn(2, 32, 7, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_fcn_head_matches_torchvision():
    tv = _randomize(tv_fcn.FCNHead(32, 5))
    named = {"0": "0.0", "1": "0.1", "4": "2"}
    sd = {f"{named[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in tv.state_dict().items()}
    ours = _copy_into(FCNHead(32, 5), sd)
    x = torch.randn(2, 32, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_deeplabv3_resnet50_matches_torchvision():
    """The whole model: torchvision's deeplabv3_resnet50 is a ResNet-50 at output stride 8 with
    rates (12, 24, 36), vislab's defaults at that stride."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=5, aux_loss=False)
        ours = create_model("deeplabv3", num_classes=5, backbone="resnet50", output_stride=8)
    tv = _randomize(tv.to_empty(device="cpu"))
    sd = tv.state_dict()
    body, _ = remap_torchvision("resnet50", {k.removeprefix("backbone."): v for k, v in sd.items()
                                             if k.startswith("backbone.")})
    head = _head_keys({k.removeprefix("classifier."): v for k, v in sd.items()
                       if k.startswith("classifier.")}, 3)
    ours.load_state_dict({f"backbone.body.{k}": v for k, v in body.items()}
                         | {f"head.{k}": v for k, v in head.items()}, strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x)["out"])


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
@pytest.mark.parametrize("size", [(64, 64), (70, 90), (32, 32)])
def test_output_is_per_pixel_logits_at_the_input_size(name, size):
    model = _tiny(name, num_classes=4).train()
    assert model.num_classes == 4
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_sets_the_last_map_and_the_rates(name, output_stride):
    model = _tiny(name, output_stride=output_stride).eval()
    assert model.backbone.reductions[-1] == output_stride
    seen = {}
    model.head.aspp.register_forward_hook(lambda m, args, out: seen.update(aspp=args[0].shape))
    if name == "deeplabv3plus":
        model.head.low_level.register_forward_hook(lambda m, args, out: seen.update(low=args[0].shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert seen["aspp"][-2:] == (64 // output_stride, 96 // output_stride)
    if name == "deeplabv3plus":
        assert seen["low"][-2:] == (16, 24)                    # the stride-4 stage
    rates = [b[0].dilation[0] for b in model.head.aspp.convs[1:-1]]
    assert rates == {8: [12, 24, 36], 16: [6, 12, 18], 32: [3, 6, 9]}[output_stride]
    assert list(default_rates(output_stride)) == rates


def test_factories_are_registered_segmentation_models_with_json_defaults():
    assert {"deeplabv3", "deeplabv3plus"} <= set(list_models(kind="segmentation"))
    assert "deeplabv3" not in list_models()                     # not walked as a classifier
    for name in ("deeplabv3", "deeplabv3plus"):
        defaults = default_kwargs(name)
        assert json.loads(json.dumps(defaults)) == defaults
        assert defaults["output_stride"] == 16 and defaults["rates"] is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(output_stride=4), "output_stride"),
    (dict(backbone="vgg11_bn", backbone_kwargs={}), "cannot dilate"),
    (dict(backbone_kwargs={"output_stride": 8}), "not in backbone_kwargs"),
    (dict(backbone_kwargs={"small_input": True}, output_stride=32), "ends at stride 8"),
    (dict(rates=[6, 0]), "rates"),
])
def test_bad_options_are_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        create_model("deeplabv3", num_classes=3, **(dict(aspp_chs=8) | kwargs))


def test_batch_of_one_in_training_is_a_clear_error():
    model = _tiny("deeplabv3").train()
    with pytest.raises(UserError, match="batch of 1"):
        model(torch.randn(1, 3, 64, 64))
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
def test_channels_last_and_autocast(name):
    torch.manual_seed(0)
    model = _tiny(name).eval()
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(model.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float().argmax(1) == ref.argmax(1)).float().mean() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
def test_cuda_channels_last_autocast(name):
    torch.manual_seed(0)
    model = _tiny(name).eval()
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        ref = model(x)
        model = model.cuda().to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x.cuda().to(memory_format=torch.channels_last))
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float().cpu().argmax(1) == ref.argmax(1)).float().mean() > 0.9


def _shapes(n: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images: a 20 px square of class 1 (red) and a disc of radius 10 of class 2 (green) on
    a noisy background of class 0."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        x0, y0 = torch.randint(4, 24, (2,), generator=g).tolist()
        labels[i, y0:y0 + 20, x0:x0 + 20] = 1
        cx, cy = torch.randint(40, 52, (2,), generator=g).tolist()
        labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 10 ** 2] = 2
    images = 0.1 * torch.randn(n, 3, size, size, generator=g)
    images[:, 0] += (labels == 1).float()
    images[:, 1] += (labels == 2).float()
    return images, labels


@pytest.mark.parametrize("name,output_stride", [("deeplabv3", 8), ("deeplabv3plus", 16)])
def test_overfits_four_images(name, output_stride):
    """The rates are scaled to the 8x8 / 4x4 maps (the paper's would only see padding, see
    :func:`vislab.models.deeplab.deeplabv3`)."""
    images, labels = _shapes()
    assert (labels == 0).float().mean() < 0.85                   # background alone is not enough
    torch.manual_seed(0)
    model = _tiny(name, output_stride=output_stride, rates=[1, 2, 3])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(120):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9, accuracy
