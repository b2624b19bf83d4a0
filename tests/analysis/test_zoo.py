"""zoo_table / zoo_plot against torchvision's published figures and the papers' depths."""

import pytest
from PIL import Image

from vislab.analysis import build_model, zoo_plot, zoo_table
from vislab.errors import UserError
from vislab.models import list_models


def test_zoo_table_and_plot(tmp_path):
    names = ["torchvision:alexnet", "torchvision:resnet18", "torchvision:inception_v3"]
    names += [n for n in ("vgg16", "lenet5") if n in list_models()]
    rows = {r.name: r for r in zoo_table((3, 64, 64), names)}
    alex = rows["torchvision:alexnet"]
    assert (alex.family, alex.params, alex.depth) == ("torchvision", 61_100_840, 8)
    assert rows["torchvision:resnet18"].depth == 18 and rows["torchvision:resnet18"].macs > 0
    bad = rows["torchvision:inception_v3"]          # needs at least 75x75 pixels
    assert bad.macs is None and bad.depth is None and bad.error and bad.params > 0
    if "vgg16" in rows:
        assert (rows["vgg16"].family, rows["vgg16"].params, rows["vgg16"].depth) == \
            ("vgg", 138_357_544, 16)
    png = tmp_path / "plots" / "zoo.png"
    zoo_plot(list(rows.values()), str(png))
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500
    assert [p.name for p in png.parent.iterdir()] == ["zoo.png"]     # no temporary file left


def test_build_model_user_errors():
    with pytest.raises(UserError, match="torchvision"):
        build_model("torchvision:not_a_model")
    with pytest.raises(UserError, match="3 input channels"):
        build_model("torchvision:resnet18", (1, 28, 28))
    with pytest.raises(UserError, match="vislab models"):
        build_model("not_a_model")
