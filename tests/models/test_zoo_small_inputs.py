"""Every family's small-input variant, as ``benchmarks/bench_zoo.py`` trains it, on 1x28x28
(Fashion-MNIST) and 1x8x8 (digits): it builds, answers (N, 10), and one plain gradient step lowers
its loss on the batch it saw.  A family that cannot see 8x8 images says so with a UserError that
names a model to use instead."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.bench_zoo import ZOO
from vislab.errors import UserError
from vislab.models import create_model
from vislab.models.base import split_logits

# Families whose design leaves nothing of an 8x8 image (and which refuse it by name).
TOO_SMALL_FOR_8 = {"lenet5", "vgg11_bn"}


def _build(member, side: int):
    kwargs = dict(member.kwargs)
    if member.name.startswith("vit"):
        kwargs["img_size"] = side            # what the classification task passes
        if side < 16:
            kwargs.pop("patch_size", None)   # the small-input default: 2x2 patches below 16 pixels
    torch.manual_seed(0)
    return create_model(member.name, num_classes=10, in_chans=1, small_input=True, **kwargs)


def _loss(model, x, y, seed: int = 1):
    torch.manual_seed(seed)                  # the same dropout / drop-path masks every call
    logits, _ = split_logits(model(x))
    return F.cross_entropy(logits, y), logits


def test_the_zoo_has_one_member_per_family_of_the_notes():
    families = [m.family for m in ZOO]
    assert len(families) == len(set(families)) == 15
    for m in ZOO:                            # each member is a registered name taking its options
        with torch.device("meta"):
            create_model(m.name, num_classes=10, in_chans=1, small_input=True, **m.kwargs)


@pytest.mark.parametrize("side", [28, 8])
@pytest.mark.parametrize("member", ZOO, ids=[m.name for m in ZOO])
def test_small_input_trains_one_step(member, side):
    model = _build(member, side).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, side, side, generator=gen)
    y = torch.arange(6) % 10
    if side == 8 and member.name in TOO_SMALL_FOR_8:
        with pytest.raises(UserError, match="at least .* use "):
            model(x)
        return
    loss0, logits = _loss(model, x, y)
    assert logits.shape == (6, 10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.zero_grad()
    loss0.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # a short step: first order holds
    opt.step()
    with torch.no_grad():
        loss1, _ = _loss(model, x, y)
    assert loss1 < loss0, f"{member.name} at {side}x{side}: loss {loss0.item():.4f} -> {loss1.item():.4f}"


@pytest.mark.parametrize("side", [28, 8])
def test_the_models_the_errors_recommend_take_8x8(side):
    for name in ("resnet20", "small_cnn"):
        model = create_model(name, num_classes=10, in_chans=1).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, side, side)).shape == (2, 10)
