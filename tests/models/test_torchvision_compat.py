"""from_torchvision: torchvision's weights make vislab's models compute what torchvision's do.

The oracle is torchvision itself: its models are built with random weights (nothing is
downloaded), their state is copied into vislab's, and the outputs are compared.  Every name that
torchvision shares is checked structurally on the meta device (keys, shapes, parameter count and
the eps/momentum of every norm layer, which a state dict does not carry) and by its outputs on a
small input.
"""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from tests.models.random_weights import randomize_
from vislab.errors import UserError
from vislab.models import create_model, from_torchvision, list_models
from vislab.models.torchvision_compat import remap_torchvision, torchvision_names


def _torchvision(name: str, **kwargs) -> nn.Module:
    if name in ("googlenet", "inception_v3"):
        kwargs.setdefault("init_weights", True)        # silences torchvision's FutureWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None, **kwargs)


def _random_torchvision(name: str, **kwargs) -> nn.Module:
    """torchvision's model with uniform random weights, biases, norm parameters and running
    statistics (its own init leaves biases and BN statistics at 0/1, which would hide a swapped
    mean and variance, and ViT's head at zero); built on the meta device to skip that init."""
    with torch.device("meta"):
        model = _torchvision(name, **kwargs)
    model.to_empty(device="cpu")
    randomize_(model)
    return model


def test_every_shared_name_is_covered():
    """Every registered name that torchvision also has is loadable (none is dropped for want of a
    key mapping)."""
    theirs = set(torchvision.models.list_models(module=torchvision.models))
    expected = {"alexnet", "googlenet", "inception_v3", "mobilenet_v2", "resnet18", "resnet152",
                "resnext50_32x4d", "wide_resnet101_2", "densenet161", "vgg19_bn", "efficientnet_b7",
                "vit_b_16", "vit_l_32"}
    assert expected <= set(torchvision_names()) == set(list_models()) & theirs


@pytest.mark.parametrize("name", torchvision_names())
def test_structure_matches_torchvision(name):
    with torch.device("meta"):
        tv = _torchvision(name)
        sd = tv.state_dict()
        mapped, kwargs = remap_torchvision(name, sd)
        ours = create_model(name, num_classes=1000, **kwargs)
    ours_sd = ours.state_dict()
    assert sorted(mapped) == sorted(ours_sd)
    assert all(mapped[k].shape == ours_sd[k].shape for k in mapped)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())

    new_key = {id(v): k for k, v in mapped.items()}      # the renaming keeps the tensor objects
    modules = dict(ours.named_modules())
    for tv_name, m in tv.named_modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            mine = modules[new_key[id(sd[f"{tv_name}.weight"])].rsplit(".", 1)[0]]
            assert type(mine) is type(m) and mine.eps == m.eps, tv_name
            assert getattr(mine, "momentum", None) == getattr(m, "momentum", None), tv_name


# About 2.5 s each on one thread (300 M parameters to fill and copy); the others take 0.2-1.3 s.
SLOW_OUTPUT_CASES = {"vit_l_16", "vit_l_32"}


def _output_case(name: str) -> tuple[int, dict]:
    """Input side and torchvision kwargs for the output check: 64x64 (Inception v3's stem needs
    75x75), a ViT built for a 3x3 patch grid (its builder takes ``image_size``; vislab reads it
    from the position embedding), and 10 classes (vislab reads them from the head)."""
    if name.startswith("vit_"):
        side = 3 * int(name.rsplit("_", 1)[1])
        return side, {"image_size": side, "num_classes": 10}
    return (75 if name == "inception_v3" else 64), {"num_classes": 10}


OUTPUT_CASES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_OUTPUT_CASES else n
                for n in torchvision_names()]


@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_outputs_match_torchvision(name):
    size, kwargs = _output_case(name)
    tv = _random_torchvision(name, **kwargs).eval()
    ours = from_torchvision(name, tv.state_dict()).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = tv(x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(ours(x), expected, atol=1e-4 * scale, rtol=0)   # relative to scale
    assert scale > 0.1                       # a non-trivial output


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_auxiliary_outputs_match_torchvision_in_train_mode(name):
    """Train mode, dropout off: the main and auxiliary logits equal torchvision's."""
    if name == "googlenet":
        tv = _random_torchvision(name, dropout=0.0, dropout_aux=0.0)
        size = 64
    else:
        tv = _random_torchvision(name, dropout=0.0)
        size = 299                          # the aux head's 5x5/3 pool and 5x5 conv need 17x17 maps
    no_dropout = {"drop": 0.0, "aux_drop": 0.0} if name == "googlenet" else {"drop": 0.0}
    ours = from_torchvision(name, tv.state_dict(), **no_dropout)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = tv.train()(x)
        out = ours.train()(x)
    torch.testing.assert_close(out["logits"], expected.logits, atol=1e-4, rtol=1e-4)
    if name == "googlenet":                 # torchvision: (logits, aux2, aux1); vislab: (aux1, aux2)
        torch.testing.assert_close(out["aux_logits"], (expected.aux_logits1, expected.aux_logits2),
                                   atol=1e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(out["aux_logits"], (expected.aux_logits,), atol=1e-4, rtol=1e-4)


def test_architecture_read_from_the_weights():
    with torch.device("meta"):
        sd = _torchvision("googlenet", aux_logits=False, num_classes=7).state_dict()
    model = from_torchvision("googlenet", {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sd.items()})
    assert not model.aux_logits and model.num_classes == 7
    assert model.blocks.inception3a.branch3[1][0].kernel_size == (3, 3)   # torchvision's "5x5" branch


def test_mistakes_raise_user_errors():
    sd18 = _random_torchvision("resnet18").state_dict()
    with pytest.raises(UserError, match="no torchvision counterpart"):
        from_torchvision("lenet5", sd18)
    with pytest.raises(UserError, match="no torchvision counterpart"):
        from_torchvision("resnet_18", sd18)
    with pytest.raises(UserError, match="do not fit"):
        from_torchvision("resnet34", sd18)
    with pytest.raises(UserError, match="no classifier"):
        from_torchvision("resnet18", {k: v for k, v in sd18.items() if not k.startswith("fc.")})
