"""Load torchvision's weights into vislab's models.

Each family has one key-mapping function from torchvision's ``state_dict`` keys to vislab's
(mostly a few renames: vislab names the parts ``stem``, ``stages``, ``head``...), plus, where the
weights decide the architecture, the constructor arguments they imply (GoogLeNet's third-branch
kernel, whether auxiliary classifiers are present, ViT's image size).  Nothing is downloaded:
pass a state dict you have, e.g. ``torchvision.models.resnet50(weights=...).state_dict()``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.mobilenet import MOBILENET_V2
from vislab.models.registry import create_model, list_models, model_family
from vislab.models.vgg import VGG_LAYERS

StateDict = Mapping[str, Tensor]
Rules = list[tuple[str, str | Callable[[re.Match], str]]]


def _rename(sd: StateDict, rules: Rules) -> dict[str, Tensor]:
    """Apply the regex ``rules`` in order to every key."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _minus_one(prefix: str) -> Callable[[re.Match], str]:
    """A replacement turning torchvision's 1-based ``layerN`` numbering into ``prefix.{N-1}``."""
    return lambda m: f"{prefix}.{int(m[1]) - 1}."


_BASIC_CONV = [(r"\.conv\.weight$", ".0.weight"), (r"\.bn\.(\w+)$", r".1.\1")]   # BasicConv2d


def _alexnet(sd: StateDict) -> dict[str, Tensor]:
    convs = {0: "conv1", 3: "conv2", 6: "conv3", 8: "conv4", 10: "conv5"}
    return _rename(sd, [(r"^features\.(\d+)\.", lambda m: f"features.{convs[int(m[1])]}."),
                        (r"^classifier\.1\.", "pre_logits.fc1."), (r"^classifier\.4\.", "pre_logits.fc2."),
                        (r"^classifier\.6\.", "head.")])


def _vgg(sd: StateDict) -> dict[str, Tensor]:
    convs = sorted(int(m[1]) for k in sd if (m := re.match(r"^features\.(\d+)\.weight$", k))
                   and sd[k].ndim == 4)
    layers = VGG_LAYERS[len(convs) + 3]
    where = {}                                 # torchvision index -> vislab prefix
    for n, idx in enumerate(convs):
        stage = next(i for i in range(len(layers)) if n < sum(layers[:i + 1]))
        j = n - sum(layers[:stage])
        where[idx] = f"stages.{stage}.{j}.0."
        where[idx + 1] = f"stages.{stage}.{j}.1."   # its BatchNorm, if any
    return _rename(sd, [(r"^features\.(\d+)\.", lambda m: where[int(m[1])]),
                        (r"^classifier\.0\.", "pre_logits.fc1."), (r"^classifier\.3\.", "pre_logits.fc2."),
                        (r"^classifier\.6\.", "head.")])


def _googlenet(sd: StateDict) -> dict[str, Tensor]:
    return _rename(sd, [(r"^(conv\d)\.", r"stem.\1."), (r"^(inception\w+)\.", r"blocks.\1."),
                        (r"^fc\.", "head."), *_BASIC_CONV])


def _googlenet_kwargs(sd: StateDict) -> dict:
    return dict(aux_logits="aux1.fc2.weight" in sd,
                branch3_kernel=sd["inception3a.branch3.1.conv.weight"].shape[-1])


def _inception_v3(sd: StateDict) -> dict[str, Tensor]:
    return _rename(sd, [(r"^(Conv2d_\w+)\.", r"stem.\1."), (r"^(Mixed_\w+)\.", r"blocks.\1."),
                        (r"^AuxLogits\.", "aux."), (r"^fc\.", "head."), *_BASIC_CONV])


def _resnet(sd: StateDict) -> dict[str, Tensor]:
    return _rename(sd, [(r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."),
                        (r"^layer(\d)\.", _minus_one("stages")),
                        (r"\.conv(\d)\.", r".conv\1.0."), (r"\.bn(\d)\.", r".conv\1.1."),
                        (r"\.downsample\.", ".shortcut."), (r"^fc\.", "head.")])


def _densenet(sd: StateDict) -> dict[str, Tensor]:
    return _rename(sd, [
        (r"^features\.(conv0|norm0)\.", r"stem.\1."),
        (r"^features\.denseblock(\d+)\.", _minus_one("stages")),
        (r"\.(\d+)\.denselayer(\d+)\.", lambda m: f".{m[1]}.block.layers.{int(m[2]) - 1}."),
        (r"^features\.transition(\d+)\.", lambda m: f"stages.{m[1]}.transition."),
        (r"^features\.norm5\.", "norm."), (r"^classifier\.", "head.")])


# (stage, index in stage) of block k in torchvision's flat MobileNet v2 list
_MBV2_STAGE_OF = [(s, j) for s, (_, _, n, _) in enumerate(MOBILENET_V2) for j in range(n)]


def _mobilenet_v2(sd: StateDict) -> dict[str, Tensor]:
    def block(m: re.Match) -> str:
        s, j = _MBV2_STAGE_OF[int(m[1]) - 1]
        return f"stages.{s}.{j}.block."

    def project(m: re.Match) -> str:
        # torchvision ends a block with a bare Conv2d and BatchNorm2d, vislab with one ConvNormAct
        base, i, leaf = m[1], int(m[2]), m[3]
        if f"{base}{i}.running_var" in sd:
            return f"{base}{i - 1}.1.{leaf}"
        return f"{base}{i}.0.{leaf}"

    renamed = {re.sub(r"^(features\.\d+\.conv\.)(\d+)\.(\w+)$", project, k): v for k, v in sd.items()}
    return _rename(renamed, [(r"^features\.0\.", "stem."), (r"^features\.18\.", "conv_head."),
                        (r"^features\.(\d+)\.conv\.", block), (r"^classifier\.1\.", "head.")])


def _efficientnet(sd: StateDict) -> dict[str, Tensor]:
    last = max(int(m[1]) for k in sd if (m := re.match(r"^features\.(\d+)\.", k)))
    return _rename(sd, [(r"^features\.0\.", "stem."), (rf"^features\.{last}\.", "conv_head."),
                        (r"^features\.(\d+)\.", _minus_one("stages")), (r"^classifier\.1\.", "head.")])


def _vit(sd: StateDict) -> dict[str, Tensor]:
    return _rename(sd, [
        (r"^conv_proj\.", "patch_embed."), (r"^class_token$", "cls_token"),
        (r"^encoder\.pos_embedding$", "pos_embed"), (r"^encoder\.ln\.", "norm."),
        (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"blocks.\1."),
        (r"\.ln_(\d)\.", r".norm\1."), (r"\.self_attention\.in_proj_", ".attn.qkv."),
        (r"\.self_attention\.out_proj\.", ".attn.proj."),
        (r"\.mlp\.0\.", ".mlp.fc1."), (r"\.mlp\.3\.", ".mlp.fc2."), (r"^heads\.head\.", "head.")])


def _vit_kwargs(sd: StateDict) -> dict:
    grid = math.isqrt(sd["encoder.pos_embedding"].shape[1] - 1)
    return dict(img_size=grid * sd["conv_proj.weight"].shape[-1])


# family -> (key mapping, constructor arguments read from the weights)
_FAMILIES: dict[str, tuple[Callable[[StateDict], dict[str, Tensor]], Callable[[StateDict], dict]]] = {
    "alexnet": (_alexnet, lambda sd: {}),
    "vgg": (_vgg, lambda sd: {}),
    "googlenet": (_googlenet, _googlenet_kwargs),
    "inception_v3": (_inception_v3, lambda sd: dict(aux_logits="AuxLogits.fc.weight" in sd)),
    "resnet": (_resnet, lambda sd: {}),
    "densenet": (_densenet, lambda sd: {}),
    "mobilenet": (_mobilenet_v2, lambda sd: {}),
    "efficientnet": (_efficientnet, lambda sd: {}),
    "vit": (_vit, _vit_kwargs),
}


def torchvision_names() -> list[str]:
    """vislab models that torchvision also has (same name), i.e. those :func:`from_torchvision` loads."""
    import torchvision
    theirs = set(torchvision.models.list_models(module=torchvision.models))
    return [n for n in list_models() if n in theirs and model_family(n) in _FAMILIES]


def remap_torchvision(name: str, state_dict: StateDict) -> tuple[dict[str, Tensor], dict]:
    """torchvision's ``state_dict`` for model ``name`` with vislab's keys, and the constructor
    arguments the weights imply."""
    supported = torchvision_names()
    if name not in supported:
        raise UserError(f"no torchvision counterpart for model {name!r}: from_torchvision loads "
                        f"{', '.join(supported)}")
    remap, kwargs = _FAMILIES[model_family(name)]
    try:
        return remap(state_dict), kwargs(state_dict)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"the state dict does not look like torchvision's {name} ({e!r} while "
                        f"mapping its keys): pass torchvision.models.{name}(...).state_dict()") from None


def from_torchvision(name: str, state_dict: StateDict, **kwargs) -> Classifier:
    """vislab's model ``name`` holding torchvision's weights ``state_dict``.

    ``num_classes`` is read from the weights; ``kwargs`` go to the model (e.g. ``drop``).  The
    result computes what torchvision's model computes (eval mode; in train mode the auxiliary
    outputs come as a dict, see :mod:`vislab.models.googlenet`).
    """
    mapped, arch = remap_torchvision(name, state_dict)
    if "head.weight" not in mapped:
        raise UserError(f"the state dict has no classifier for {name!r}: pass the whole "
                        f"torchvision.models.{name}(...).state_dict()")
    with torch.device("meta"):             # no random init: every tensor comes from the weights
        model = create_model(name, num_classes=mapped["head.weight"].shape[0],
                             in_chans=_in_chans(mapped), **(arch | kwargs))
    missing, unexpected = _diff(model.state_dict(), mapped)
    if missing or unexpected:
        raise UserError(f"torchvision weights do not fit vislab's {name}: missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}; pass torchvision.models.{name}(...).state_dict() "
                        "and no architecture-changing kwargs")
    model.load_state_dict({k: v.detach().clone() for k, v in mapped.items()}, assign=True)
    assert not any(t.is_meta for t in model.state_dict().values()), "a tensor was left unloaded"
    return model


def _in_chans(mapped: dict[str, Tensor]) -> int:
    """Input channels: those of the first 4-D weight (the first conv)."""
    return next(v.shape[1] for v in mapped.values() if v.ndim == 4)


def _diff(ours: StateDict, theirs: StateDict) -> tuple[list[str], list[str]]:
    """Keys only in ``ours`` / only in ``theirs``, and keys whose shapes differ (as missing)."""
    missing = [k for k in ours if k not in theirs or ours[k].shape != theirs[k].shape]
    unexpected = [k for k in theirs if k not in ours]
    return missing, unexpected


__all__ = ["from_torchvision", "remap_torchvision", "torchvision_names"]
