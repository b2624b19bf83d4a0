"""Activation maximisation increases its target and respects the pixel range; the unit value is
read where the notes say (the centre neuron of the map)."""

import torch

from vislab.explain.activation_max import maximize_activation, unit_value
from vislab.explain.hooks import capture
from vislab.models import create_model


def net():
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=4, in_chans=1, widths=(4, 8, 8)).eval()


def test_class_score_increases_within_bounds():
    model = net()
    img, hist = maximize_activation(model, (1, 16, 16), 2, steps=40, bounds=(-1.0, 2.0))
    assert img.shape == (1, 1, 16, 16)
    assert -1.0 <= img.min() and img.max() <= 2.0
    with torch.no_grad():
        final = model(img)[0, 2].item()
    assert abs(final - hist[-1]) < 1e-4 * (1 + abs(final))     # history ends on the returned image
    assert final > hist[0] + 0.4


def test_unit_of_a_deep_layer_increases():
    model = net()
    for spatial in ("center", "mean"):
        img, hist = maximize_activation(model, (1, 16, 16), 3, "stages.1", spatial, steps=40, jitter=0)
        with torch.no_grad(), capture(model, ["stages.1"], keep_graph=False) as acts:
            model(img)
            maps = acts["stages.1"]
        value = maps[0, 3, 2, 2] if spatial == "center" else maps[0, 3].mean()   # 4x4 map: centre (2, 2)
        assert torch.isclose(value, torch.tensor(hist[-1]), rtol=1e-4, atol=1e-5)
        assert hist[-1] > hist[0] + 0.4


def test_unit_value_reads_vectors_and_maps():
    maps = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    assert torch.equal(unit_value(maps, 1, (5, 5)), maps[:, 1, 2, 2])
    assert torch.equal(unit_value(maps, 1, (5, 5), "mean"), maps[:, 1].mean((1, 2)))
    vec = torch.randn(2, 7)
    assert torch.equal(unit_value(vec, 6, (5, 5)), vec[:, 6])
