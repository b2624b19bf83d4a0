"""Inputs and outputs named on the command line: cascades, images, and where ``vj detect`` draws.

A cascade is a vislab ``.npz``, a run directory, an OpenCV XML file or the name of one OpenCV
ships; an image is a file or a scikit-image sample name (``astronaut``).  :func:`detect_images`
checks every input and output before it writes anything, so a mistake leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislab.classic.viola_jones.cascade import Cascade
from vislab.classic.viola_jones.data import SAMPLE_NAMES, sample_image
from vislab.classic.viola_jones.detect import Detections, detect, rgb_to_gray
from vislab.classic.viola_jones.evaluate import draw_boxes
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    resolve_cascade_path,
)
from vislab.classic.viola_jones.train import CASCADE_FILE
from vislab.errors import UserError
from vislab.io import IMAGE_EXTENSIONS, image_size, read_image

MODES = ("opencv", "paper")


# --------------------------------------------------------------------------- cascades
def load_any_cascade(spec: str | os.PathLike) -> Cascade:
    """A cascade from a .npz file, a run directory, an OpenCV XML file or a shipped OpenCV name."""
    path = Path(spec)
    if path.is_dir():
        path = path / CASCADE_FILE
        if not path.is_file():
            raise UserError(f"run directory {spec} has no {CASCADE_FILE}; train it with "
                            f"`vislab vj train --run-dir {spec}`")
    if path.suffix == ".npz":
        return Cascade.load(path)
    return load_opencv_cascade(spec)


def _is_cascade(spec: str) -> bool:
    path = Path(spec)
    if path.is_dir():
        return (path / CASCADE_FILE).is_file()
    if path.is_file():
        return path.suffix.lower() in (".npz", ".xml")
    try:
        resolve_cascade_path(spec)
    except UserError:
        return False
    return True


# --------------------------------------------------------------------------- images
def check_image(spec: str) -> None:
    """Raise UserError unless ``spec`` is an image file (its header is read) or a scikit-image
    sample name; when ``spec`` names a cascade, the message says to pass it as the cascade."""
    if _is_cascade(spec):
        raise UserError(f"{spec!r} is a cascade, not an image; pass it as --cascade {spec} "
                        "and give image files or sample names (e.g. astronaut) as the images")
    path = Path(spec)
    if path.is_file():
        image_size(path)
    elif path.is_dir():
        raise UserError(f"{spec} is a folder, not an image; give the image files in it")
    elif spec not in SAMPLE_NAMES:
        raise UserError(f"image {spec!r} is neither a file nor a scikit-image sample (e.g. astronaut); "
                        "check the path")


def read_gray(spec: str) -> np.ndarray:
    """An image file or a scikit-image sample name as a uint8 grey image (OpenCV's RGB->grey);
    a file wins over a sample of the same name."""
    check_image(spec)
    path = Path(spec)
    if path.is_file():
        return rgb_to_gray(read_image(path, "RGB"))
    return sample_image(spec)


# --------------------------------------------------------------------------- pictures
def _check_folder_can_exist(folder: Path) -> None:
    """UserError when a file stands where ``folder`` or one of its parents should be."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{p} is a file, so the folder {folder} cannot be made; choose another --out")
            return


def picture_paths(images: Sequence[str], out: str | os.PathLike | None) -> list[Path | None]:
    """Where ``vj detect`` draws each image's boxes, checked but not created.

    ``out`` is a ``.png`` file for one image, or a folder that gets ``<stem>_vj.png`` per
    image: an existing folder, or for several images one to be made.  Several images with an
    existing file or an image file name, two images with one picture, or a picture over an
    input image are refused (UserError).
    """
    if out is None:
        return [None] * len(images)
    target = Path(out)
    if target.is_dir():
        paths = [target / f"{Path(spec).stem}_vj.png" for spec in images]
    elif len(images) > 1:
        if target.exists():
            raise UserError(f"--out {out} is a file, but {len(images)} images need a folder; "
                            "give a folder (existing, or one to make) for --out")
        if target.suffix.lower() in IMAGE_EXTENSIONS:
            raise UserError(f"--out {out} names an image file, but {len(images)} images need a folder; "
                            "give a folder name for --out, or detect one image at a time")
        paths = [target / f"{Path(spec).stem}_vj.png" for spec in images]
    else:
        if target.suffix.lower() != ".png":
            raise UserError(f"--out {out}: the picture is a PNG; give a .png file name or an existing folder")
        paths = [target]
    _check_folder_can_exist(paths[0].parent)
    inputs = {Path(s).resolve(): s for s in images if Path(s).is_file()}
    drawn: dict[Path, str] = {}
    for spec, path in zip(images, paths):
        key = path.resolve()
        if key in inputs:
            raise UserError(f"--out {path} would overwrite the input image {inputs[key]}; choose another --out")
        if key in drawn:
            raise UserError(f"images {drawn[key]} and {spec} would both be drawn into {path}; "
                            "detect them in separate commands")
        drawn[key] = spec
    return paths


# --------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class ImageDetections:
    """The detections in one image and the picture they were drawn into (None: not drawn)."""

    image: str
    detections: Detections
    picture: Path | None

    def row(self) -> dict:
        return {"image": self.image, "boxes": self.detections.boxes.tolist(),
                "neighbors": self.detections.neighbors.tolist()}


def detect_images(images: Sequence[str], cascade: str = "frontalface_default", out: str | os.PathLike | None = None,
                  mode: str = "opencv", scale_factor: float | None = None, min_neighbors: int = 3,
                  min_size: tuple[int, int] = (0, 0)) -> Iterator[ImageDetections]:
    """``vislab vj detect``: detect with one cascade in every image, drawing the boxes under ``out``.

    The cascade, every image and every picture path are checked first (UserError), before
    anything is written; the images are then read, detected and drawn one at a time, as the
    returned iterator advances.  See :func:`picture_paths` for ``out`` and
    :func:`~vislab.classic.viola_jones.detect.detect` for the rest.
    """
    if not images:
        raise UserError("no image given; name image files or scikit-image samples (e.g. astronaut)")
    if mode not in MODES:
        raise UserError(f"mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    if scale_factor is not None and scale_factor <= 1:
        raise UserError(f"the scale factor must be above 1 (e.g. 1.1), got {scale_factor}")
    loaded = load_any_cascade(cascade)
    for spec in images:
        check_image(spec)
    pictures = picture_paths(images, out)
    return _detect_each(loaded, images, pictures, mode, scale_factor, min_neighbors, tuple(min_size))


def _detect_each(cascade: Cascade, images: Sequence[str], pictures: Sequence[Path | None], mode: str,
                 scale_factor: float | None, min_neighbors: int,
                 min_size: tuple[int, int]) -> Iterator[ImageDetections]:
    for spec, picture in zip(images, pictures):
        gray = read_gray(spec)
        found = detect(cascade, gray, mode, scale_factor, min_neighbors, min_size)
        if picture is not None:
            draw_boxes(gray, found.boxes, str(picture))
        yield ImageDetections(spec, found, picture)
