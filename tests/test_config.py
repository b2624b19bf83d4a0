"""Recipes that start from another (base:)."""

import pytest

from vislab.config import load_config, read_recipe
from vislab.errors import UserError


def test_base_recipe_is_overridden_section_by_section_and_kwargs_whole(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("task: segmentation\nmodel: {name: fcn8s, kwargs: {backbone: resnet18, learn_upsampling: false}}\n"
                    "train: {epochs: 7, batch_size: 8}\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {base}\nmodel: {{name: unet, kwargs: {{depth: 2}}}}\ntrain: {{epochs: 3}}\n")
    raw = read_recipe(str(child))
    assert raw["model"] == {"name": "unet", "kwargs": {"depth": 2}}          # kwargs replaced whole
    assert raw["train"] == {"epochs": 3, "batch_size": 8}                    # other keys merged
    cfg = load_config(str(child), ["train.batch_size=4"])
    assert (cfg.task, cfg.train.epochs, cfg.train.batch_size) == ("segmentation", 3, 4)


def test_shipped_recipes_inherit_fcn8s():
    fcn8s, unet = load_config("fcn8s"), load_config("unet")
    assert unet.data == fcn8s.data and unet.optim == fcn8s.optim and unet.train == fcn8s.train
    assert unet.model.kwargs == {"depth": 4, "width": 16, "up": "transpose", "padding": "same", "norm": True}


def test_a_cycle_of_bases_is_one_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: [fcn8s, unet]\n")
    with pytest.raises(UserError, match="base must name one recipe"):
        load_config(str(tmp_path / "c.yaml"))
