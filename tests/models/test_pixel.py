"""The per-pixel baseline: the dense (à trous) pass equals classifying every pixel's patch one by
one, its stride-4 subset equals the convolutionalised classifier, and patch-wise training works."""

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.analysis.conv import convolutionalise
from vislab.models import create_model
from vislab.models.pixel import PixelClassifier, extract_patches, pad_for_patches, slow_forward


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread runs them fastest, and on a busy machine intra-op
    threads waiting on each other made the training test 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(patch: int = 32, **kwargs) -> PixelClassifier:
    """A small model in eval mode with non-trivial batch-norm statistics and affine parameters."""
    torch.manual_seed(0)
    model = PixelClassifier(num_classes=5, in_chans=3, patch=patch, widths=[4, 8, 8], hidden=16, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def _loop_patches(images, centres, patch, fill):
    """Reference: pad by hand and slice each patch (rows y - P//2 .. y - P//2 + P - 1)."""
    top, bottom = patch // 2, patch - 1 - patch // 2
    padded = F.pad(images, (top, bottom, top, bottom), value=fill)
    return torch.stack([padded[n, :, y:y + patch, x:x + patch] for n, y, x in centres.tolist()])


@pytest.mark.parametrize("patch", [32, 29, 26])
def test_dense_equals_every_patch_classified(patch):
    model = _model(patch)
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        dense = model(x)
        slow = slow_forward(model, x, batch_size=300)
        assert dense.shape == (2, 5, 20, 24)
        torch.testing.assert_close(dense, slow, atol=1e-4, rtol=1e-4)
        # a few pixels through the hand-cut patches, independently of extract_patches
        centres = torch.tensor([[0, 0, 0], [1, 19, 23], [1, 7, 0], [0, 10, 13]])
        ref = model.classify_patches(_loop_patches(x, centres, patch, 0.0))
        torch.testing.assert_close(dense[centres[:, 0], :, centres[:, 1], centres[:, 2]], ref,
                                   atol=1e-4, rtol=1e-4)


def test_dense_honours_fill_value():
    model = _model(fill=-1.5)
    x = torch.randn(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(model(x), slow_forward(model, x), atol=1e-4, rtol=1e-4)
        corner = model.classify_patches(_loop_patches(x, torch.tensor([[0, 0, 0]]), 32, -1.5))
        torch.testing.assert_close(model(x)[:, :, 0, 0], corner, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("patch", [32, 29])
def test_stride_grid_is_the_convolutionalised_classifier(patch):
    # convolutionalise scores the window at (4i, 4j) of the padded image, i.e. the patch of
    # pixel (4i, 4j): the dense map at offset 0 of the stride-4 grid.
    model = _model(patch)
    seq = nn.Sequential(*model.classifier.stages, *model.classifier.pre_logits, model.classifier.head)
    fcn = convolutionalise(seq, (3, patch, patch)).eval()
    x = torch.randn(2, 3, 20, 24)
    top, bottom = patch // 2, patch - 1 - patch // 2
    with torch.no_grad():
        coarse = fcn(F.pad(x, (top, bottom, top, bottom)))
        grid = model(x)[:, :, ::4, ::4]                       # (2, 5, 5, 6)
    assert coarse.shape[-2] >= grid.shape[-2] and coarse.shape[-1] >= grid.shape[-1]
    torch.testing.assert_close(grid, coarse[..., :grid.shape[-2], :grid.shape[-1]], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("patch", [32, 7])
def test_extract_patches_matches_loop(patch):
    torch.manual_seed(1)
    images = torch.randn(3, 2, 10, 13)
    centres = torch.stack([torch.randint(0, 3, (40,)), torch.randint(0, 10, (40,)),
                           torch.randint(0, 13, (40,))], 1)
    centres[:4] = torch.tensor([[0, 0, 0], [2, 9, 12], [1, 0, 12], [1, 9, 0]])   # corners
    out = extract_patches(images, centres, patch, fill=2.5)
    assert out.shape == (40, 2, patch, patch)
    torch.testing.assert_close(out, _loop_patches(images, centres, patch, 2.5))
    # the centre pixel sits at (P//2, P//2) of its patch
    n, y, x = centres.unbind(1)
    torch.testing.assert_close(out[:, :, patch // 2, patch // 2], images[n, :, y, x])


def test_extract_patches_rejects_bad_centres():
    with pytest.raises(ValueError, match="inside"):
        extract_patches(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 4, 0]]), 3)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        extract_patches(torch.zeros(1, 1, 4, 4), torch.tensor([0, 1, 1]), 3)


def test_patch_mode_and_gradients_reach_every_parameter():
    model = _model().train()
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(list(model.classifier.parameters()))   # no copies for the dense form
    patches = torch.randn(6, 3, 32, 32)
    model.patch_mode = True
    out = model(patches)
    assert out.shape == (6, 5)
    torch.manual_seed(0)
    a = model(patches)
    torch.manual_seed(0)
    torch.testing.assert_close(a, model.classify_patches(patches))
    for mode, x in [(True, patches), (False, torch.randn(2, 3, 12, 10))]:
        model.patch_mode = mode
        model.zero_grad()
        model(x).square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (mode, name)
    model.eval()                                   # eval is always dense, patch_mode or not
    assert model(torch.randn(1, 3, 12, 10)).shape == (1, 5, 12, 10)


def test_dense_gradients_equal_patchwise_gradients():
    # the two forms share parameters: the same loss gives the same gradients (eval: no dropout)
    model = _model()
    x = torch.randn(1, 3, 7, 6)
    target = torch.randn(1, 5, 7, 6)
    grads = []
    for forward in (model, lambda im: slow_forward(model, im)):
        model.zero_grad()
        (forward(x) * target).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for gd, gs in zip(*grads):
        torch.testing.assert_close(gd, gs, atol=1e-4, rtol=1e-3)


def test_channels_last_and_autocast():
    model = _model()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(model.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last)), ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == ref.shape and low.dtype == torch.bfloat16
    assert (low.float().argmax(1) == ref.argmax(1)).float().mean() > 0.8


def test_dense_is_much_faster_than_patch_by_patch():
    model = create_model("seg_pixel", num_classes=21).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)                                                   # warm-up
        t0 = time.perf_counter()
        dense = model(x)
        t1 = time.perf_counter()
        slow = slow_forward(model, x, batch_size=1024)
        t2 = time.perf_counter()
    torch.testing.assert_close(dense, slow, atol=1e-4, rtol=1e-4)
    ratio = (t2 - t1) / (t1 - t0)
    print(f"dense {1e3 * (t1 - t0):.1f} ms, patch by patch {1e3 * (t2 - t1):.1f} ms: {ratio:.0f}x")
    assert ratio > 5


def _shapes(n: int = 4, side: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a square (class 1) and a disc (class 2) on background (class 0), in colour
    and with noise; the shapes' places and sizes change from image to image."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    masks = torch.zeros(n, side, side, dtype=torch.long)
    for i in range(n):
        y0, x0 = torch.randint(2, 12, (2,), generator=g).tolist()
        s = 14 + 2 * i
        masks[i, y0:y0 + s, x0:x0 + s] = 1
        cy, cx, r = 34 - i, 32 + i, 9 + i
        masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    colours = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -0.5, 0.0], [0.0, 1.0, -0.5]])
    images = colours[masks].permute(0, 3, 1, 2) + 0.3 * torch.randn(n, 3, side, side, generator=g)
    return images, masks


def test_patchwise_training_segments_densely():
    torch.manual_seed(0)
    images, masks = _shapes()
    assert (masks == 0).float().mean() < 0.8                        # "all background" fails
    model = create_model("seg_pixel", num_classes=3, widths=[8, 16, 16], hidden=32, drop=0.0)
    model.train()
    model.patch_mode = True
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pixels = torch.nonzero(torch.ones_like(masks))                 # every (n, y, x)
    for _ in range(40):
        centres = pixels[torch.randint(len(pixels), (64,))]
        loss = F.cross_entropy(model(extract_patches(images, centres, model.patch)),
                               masks[centres[:, 0], centres[:, 1], centres[:, 2]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model.eval()(images).argmax(1) == masks).float().mean().item()
    print(f"dense pixel accuracy after patch-wise training: {acc:.3f}")
    assert acc >= 0.9


def test_patches_from_a_padded_set_equal_patches_from_the_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 10, 13, generator=g)
    c = torch.stack([torch.randint(0, n, (50,), generator=g) for n in (3, 10, 13)], 1)
    for patch in (32, 29):
        expected = extract_patches(x, c, patch, fill=1.5)
        got = extract_patches(pad_for_patches(x, patch, fill=1.5), c, patch, padded=True)
        assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="inside the images"):
        extract_patches(pad_for_patches(x, 32), torch.tensor([[0, 10, 0]]), 32, padded=True)
