"""Maximally activating patches: the top-k against a direct computation, the receptive-field
window against the support of the unit's gradient (autograd), crops against slicing."""

import torch
from torch import nn

from vislab.explain.patches import crop, receptive_field, rf_box, top_patches
from vislab.models import create_model


def test_receptive_field_window_is_the_support_of_the_units_gradient():
    """A linear network with positive weights: every pixel in a unit's window reaches it, so
    the support of d unit / d input is exactly the window (inside the image)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, padding=1))
    with torch.no_grad():
        for m in (net[0], net[2]):
            m.weight.uniform_(0.5, 1.0)
    rf = receptive_field(net, "2", (1, 24, 24))
    assert (rf.size, rf.jump) == ((8, 8), (2, 2))
    x = torch.randn(1, 1, 24, 24, requires_grad=True)
    for i, j in [(3, 4), (5, 5), (6, 2)]:
        (g,) = torch.autograd.grad(net(x)[0, 1, i, j], x)
        ys, xs = g[0, 0].nonzero(as_tuple=True)
        support = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        assert rf_box(rf, i, j) == support


def test_crop_pads_outside_the_image():
    img = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 5, 6)
    assert torch.equal(crop(img, (1, 2, 4, 5)), img[:, 2:5, 1:4])
    out = crop(img, (-2, -1, 3, 2), fill=-9.0)                   # 5 wide, 3 high, top-left outside
    assert out.shape == (2, 3, 5)
    assert torch.equal(out[:, 1:, 2:], img[:, :2, :3])
    assert (out[:, 0] == -9).all() and (out[:, :, :2] == -9).all()


def test_top_patches_are_the_strongest_activations():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_chans=1, widths=(4, 8, 8)).eval()
    x = torch.randn(40, 1, 16, 16)
    top = top_patches(model, x, "stages.1", 5, k=6, batch_size=16, fill=-3.0)
    with torch.no_grad():                                        # oracle: the network run by hand
        maps = model.stages[1](model.stages[0](model.stem(x)))[:, 5]
    best, where = maps.flatten(1).max(1)
    values, indices = best.topk(6)
    assert torch.equal(top.indices, indices)
    assert torch.allclose(top.values, values)
    assert torch.equal(top.positions, torch.stack([where[indices] // 4, where[indices] % 4], 1))
    rf = receptive_field(model, "stages.1", (1, 16, 16))
    for n, (i, j), box, patch in zip(indices, top.positions, top.boxes, top.patches):
        assert tuple(box.tolist()) == rf_box(rf, int(i), int(j))
        assert torch.equal(patch, crop(x[n], tuple(box.tolist()), -3.0))
    assert top.patches.shape == (6, 1, *rf.size)
