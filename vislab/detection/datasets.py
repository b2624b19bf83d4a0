"""The data sets the detection family adds to the registry.  Importing :mod:`vislab.detection`
registers them; this module imports no torch, so that ``vislab data list`` stays fast (the
reader imports the sliding-window module, and torch with it, when a split is read)."""

from __future__ import annotations

from vislab.data.datasets import ArrayDataset, DatasetInfo, register_dataset

WINDOW = 32          # the window classifier's input side (``PyramidConfig.window``)


def read_scene_patches(folder: str, split: str) -> ArrayDataset:
    """``scene_patches``: windows of a scene folder's ``train`` scenes for the train split, of
    its ``val`` scenes for the test split (its ``test`` scenes are kept for detection)."""
    from vislab.detection.sliding_window import scene_patches
    return scene_patches(folder, split)


register_dataset(DatasetInfo(
    "scene_patches", (), 3, WINDOW, reader=read_scene_patches,
    description=f"{WINDOW}x{WINDOW} windows of generated scenes, the items' classes + background: "
                "data.root=DIR from `vislab data make-scenes DIR`"))

__all__ = ["WINDOW", "read_scene_patches"]
