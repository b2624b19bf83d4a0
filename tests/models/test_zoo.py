"""Every registered model shows the classifier face (``forward_features``, ``forward_head``,
``reset_classifier``, ``feature_info``) and takes a training step on a Fashion-MNIST-sized batch
(1x28x28, small-input stem).  Models above ``REAL_LIMIT`` parameters (ViT-B/L, VGG-16/19,
ResNet-101/152, EfficientNet-B6/B7...) and the slowest CIFAR DenseNets run on the meta device:
shapes only, no memory, no init.
"""

import pytest
import torch
import torch.nn.functional as F

from vislab.models import create_model, list_models, model_family
from vislab.models.registry import model_accepts

REAL_LIMIT = 30_000_000
HEAVY = {"densenet_bc_190_40", "densenet_bc_250_24", "densenet161"}   # > 1.5 s per step: meta too
NATIVE_SIZE = {"window_cnn": 32, "inception_v3": 299, "linear": 28, "mlp": 28, "small_cnn": 28, "lenet5": 32,
               "conv_ae_encoder": 28, "dense_ae_encoder": 28}
# One model per family and configuration for the (meta-device) check at full size.
NATIVE_CASES = ["window_cnn", "linear", "mlp", "small_cnn", "lenet5", "alexnet", "zfnet", "vgg11_bn", "nin", "googlenet",
                "inception_v3", "darknet_tiny", "resnet18", "resnet50", "resnet20", "se_resnet50", "wrn_16_4",
                "densenet121", "densenet_bc_100_12", "densenet_40_12", "mobilenet_v1", "mobilenet_v2",
                "efficientnet_b0", "vit_ti_16", "conv_ae_encoder", "dense_ae_encoder"]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _small(name: str, device: str) -> torch.nn.Module:
    kwargs = {"small_input": True} if model_accepts(name, "small_input") else {}
    with torch.device(device):
        return create_model(name, num_classes=5, in_chans=1, **kwargs)


def _split(out) -> tuple[torch.Tensor, tuple]:
    return (out["logits"], out["aux_logits"]) if isinstance(out, dict) else (out, ())


def _features_checked(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``forward_features(x)``, checking that each ``feature_info`` stage exists and outputs
    ``num_chs`` channels at roughly ``size / reduction`` (valid convs shrink maps a little)."""
    outs = {}
    hooks = [model.get_submodule(f["module"]).register_forward_hook(
        lambda m, i, o, name=f["module"]: outs.__setitem__(name, o)) for f in model.feature_info]
    feats = model.forward_features(x)
    for h in hooks:
        h.remove()
    for f in model.feature_info:
        o = outs[f["module"]]
        if o.ndim == 3:                                   # tokens (B, N, C)
            assert o.shape[-1] == f["num_chs"], f
        else:
            expected = x.shape[-1] / f["reduction"]
            assert o.shape[1] == f["num_chs"], f
            assert 0.6 * expected - 1 <= o.shape[-1] <= expected + 1, (f, o.shape)
    return feats


@pytest.mark.parametrize("name", list_models())
def test_small_input_face_and_training_step(name):
    model = _small(name, "meta")
    device = "cpu" if _n_params(model) <= REAL_LIMIT and name not in HEAVY else "meta"
    if device == "cpu":
        torch.manual_seed(0)
        model = _small(name, "cpu")
    x = torch.randn(2, 1, 28, 28, device=device)
    y = torch.tensor([1, 3], device=device)

    model.train()
    logits, aux = _split(model(x))
    assert logits.shape == (2, 5) and all(a.shape == (2, 5) for a in aux)
    if device == "cpu":
        weight = getattr(model, "aux_logits_weight", 0.0)
        loss = F.cross_entropy(logits, y) + sum(weight * F.cross_entropy(a, y) for a in aux)
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname

    model.eval()
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
        feats = _features_checked(model, x)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        if device == "cpu":
            torch.testing.assert_close(model.forward_head(feats), out)
        with torch.device(device):
            model.reset_classifier(3)
        assert model.forward_head(feats).shape == (2, 3)


@pytest.mark.parametrize("name", NATIVE_CASES)
def test_default_configuration_at_native_size(name):
    """Shapes only (meta device): the default model on its ImageNet-sized (or fixed) input."""
    with torch.device("meta"):
        model = create_model(name).eval()
    size = NATIVE_SIZE.get(name, 224)
    x = torch.randn(1, 3, size, size, device="meta")
    assert model.forward_head(_features_checked(model, x)).shape == (1, model.num_classes)


def test_native_cases_cover_every_family():
    assert {model_family(n) for n in list_models()} <= {model_family(n) for n in NATIVE_CASES}
