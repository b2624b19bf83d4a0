"""The model zoo side by side: parameters, MACs and depth of every registered model, as a table
and as a MACs-vs-parameters plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from vislab.analysis.summary import summarize
from vislab.errors import UserError
from vislab.models import create_model, list_models, model_family
from vislab.models.registry import model_accepts
from vislab.report.plots import pyplot, save_figure

TORCHVISION = "torchvision:"

# torchvision builds these with auxiliary heads unless weights are given; the published figures
# are for the model the weights builder returns (no aux heads, transform_input on).
_TV_WEIGHTS_CONFIG = {
    "googlenet": dict(aux_logits=False, transform_input=True, init_weights=False),
    "inception_v3": dict(aux_logits=False, transform_input=True, init_weights=False),
}


def build_model(spec: str, input_size: Sequence[int] = (3, 224, 224),
                num_classes: int = 1000, **kwargs) -> nn.Module:
    """A registered vislab model, or ``"torchvision:NAME"`` (torchvision's own classifier,
    ``weights=None``), built on the ``meta`` device when it can be (no memory, no init time) and
    on the CPU otherwise.  ``input_size`` sets the input channels and, for models that take
    ``img_size``/``image_size`` (ViT), the image size; ``kwargs`` go to the factory."""
    c, h = int(input_size[0]), int(input_size[1])
    if spec.startswith(TORCHVISION):
        import torchvision
        name = spec[len(TORCHVISION):]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise UserError(f"torchvision has no classification model {name!r}: see "
                            "torchvision.models.list_models(), e.g. torchvision:resnet50")
        if c != 3:
            raise UserError(f"torchvision's {name} takes 3 input channels, not {c}: use --input "
                            f"3x{h}x{input_size[2]}")
        kw = dict(_TV_WEIGHTS_CONFIG.get(name, {}), **kwargs)
        if name.startswith("vit_"):
            kw.setdefault("image_size", h)
        factory = partial(torchvision.models.get_model, name, weights=None,
                          num_classes=num_classes, **kw)
    else:
        if spec in list_models() and model_accepts(spec, "img_size"):
            kwargs.setdefault("img_size", h)
        factory = partial(create_model, spec, num_classes=num_classes, in_chans=c, **kwargs)
    try:
        with torch.device("meta"):
            return factory()
    except (RuntimeError, NotImplementedError):   # a constructor that reads values (.tolist())
        return factory()


@dataclass
class ZooRow:
    """One model of the zoo: ``macs`` and ``depth`` are ``None`` (and ``error`` says why) when
    the model does not run at the table's input size."""

    name: str
    family: str
    params: int
    macs: int | None
    depth: int | None     # conv/linear layers on the longest input -> output path
    error: str | None = None


def zoo_table(input_size: Sequence[int] = (3, 224, 224), names: Sequence[str] | None = None,
              num_classes: int = 1000) -> list[ZooRow]:
    """Parameters, MACs (conv, linear, matmul, attention; FLOPs = 2 x MACs) and depth of each
    model in ``names`` (default: every registered vislab model; ``"torchvision:NAME"`` works
    too) at ``input_size``, counted on meta tensors (about a second for the whole zoo).

    Depth is the number of convolution and linear layers on the longest path from the input to
    the output, the way the papers count it: resnet50 -> 50, vgg16 -> 16, googlenet -> 22.
    """
    rows = []
    for name in names if names is not None else list_models():
        model = build_model(name, input_size, num_classes)
        family = "torchvision" if name.startswith(TORCHVISION) else model_family(name)
        params = sum(p.numel() for p in model.parameters())
        try:
            s = summarize(model, input_size, name=name)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
            rows.append(ZooRow(name, family, params, None, None, _first_line(e)))
        else:
            rows.append(ZooRow(name, family, params, s.macs, s.depth))
    return rows


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def zoo_plot(rows: Sequence[ZooRow], png_path: str) -> None:
    """MACs against parameters, log-log, one labelled point per model (rows without MACs are
    left out), saved to ``png_path`` (written to a temporary file, then renamed)."""
    plt = pyplot()

    rows = [r for r in rows if r.macs]
    if not rows:
        raise UserError("no model with MACs to plot: check the names and the input size")
    fig, ax = plt.subplots(figsize=(9, 6.5))
    families = sorted({r.family for r in rows})
    colours = plt.get_cmap("tab20")(range(len(families)))
    for fam, colour in zip(families, colours):
        pts = [r for r in rows if r.family == fam]
        ax.scatter([r.params for r in pts], [r.macs for r in pts], color=colour, label=fam, s=22)
        for r in pts:
            ax.annotate(r.name, (r.params, r.macs), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="parameters",
           ylabel="MACs per image (FLOPs = 2 x MACs)", title="vislab model zoo: compute vs size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, png_path)

__all__ = ["ZooRow", "build_model", "zoo_plot", "zoo_table"]
