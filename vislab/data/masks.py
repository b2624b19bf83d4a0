"""Images with per-pixel class masks: reading them from disk, augmenting image and mask together,
and drawing masks in colour.

**On disk** (:func:`read_mask_folder`), either layout:

* ``ROOT/SPLIT/images/NAME.png|jpg`` with ``ROOT/SPLIT/masks/NAME.png`` (``SPLIT``: train, val,
  test);
* Pascal VOC: ``ROOT/JPEGImages/NAME.jpg``, ``ROOT/SegmentationClass/NAME.png`` and the lists
  ``ROOT/ImageSets/Segmentation/SPLIT.txt``.

A mask is a PNG whose pixel values are class indices: a palette ("P" mode) PNG, as VOC's, where
the value is the palette index, not its colour; or a grey ("L") PNG.  255 marks pixels no loss
or metric counts (VOC's object borders).  An RGB mask is refused: its colours would need a
palette to be read back as classes.  Class names come from ``ROOT/classes.txt`` (one per line,
line ``i`` naming class ``i``), VOC's 21 names for the VOC layout, or ``class_0, class_1...``.

**Augmentation** (:func:`augment_pairs`): a mask moves with its image, and is resampled with
*nearest* neighbours, never bilinearly: interpolating between class 1 and class 3 would invent
class 2 on their border (the notes' warning about bilinear upsampling of ground truth).  Pixels a
rescale or crop brings in from outside the image are ``ignore_index`` in the mask.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from vislab.data.transforms import crop_at
from vislab.errors import UserError
from vislab.io import IMAGE_EXTENSIONS

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


# --------------------------------------------------------------------------- reading

def read_mask(path: str) -> np.ndarray:
    """A mask PNG as class indices ``(H, W)`` uint8 (palette index or grey value)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise UserError(f"mask {path} is a {im.mode} image; masks must hold class indices: save it "
                                "as a palette (P) or greyscale (L) PNG whose values are the classes")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise UserError(f"mask {path} does not exist; every image needs a mask of the same name") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot decode mask {path} ({e}); give a PNG of class indices") from None
    if arr.max(initial=0) > 255:
        raise UserError(f"mask {path} holds values above 255; class indices must fit 0..254 (255 = ignore)")
    return arr.astype(np.uint8)


def _pairs(root: str, split: str) -> list[tuple[str, str]]:
    """(image, mask) paths of ``split`` in either layout."""
    voc_list = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    if os.path.isdir(os.path.join(root, "SegmentationClass")):
        if not os.path.isfile(voc_list):
            return []
        with open(voc_list) as f:
            names = [line.strip() for line in f if line.strip()]
        return [(os.path.join(root, "JPEGImages", n + ".jpg"), os.path.join(root, "SegmentationClass", n + ".png"))
                for n in names]
    images = os.path.join(root, split, "images")
    if not os.path.isdir(images):
        return []
    return [(os.path.join(images, f), os.path.join(root, split, "masks", os.path.splitext(f)[0] + ".png"))
            for f in sorted(os.listdir(images)) if f.lower().endswith(IMAGE_EXTENSIONS)]


def mask_classes(root: str, num_values: int) -> list[str]:
    """Class names: ``classes.txt``, VOC's for the VOC layout, or ``class_i`` for ``num_values``."""
    path = os.path.join(root, "classes.txt")
    if os.path.isfile(path):
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    if os.path.isdir(os.path.join(root, "SegmentationClass")):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(num_values)]


def has_split(root: str, split: str) -> bool:
    return bool(_pairs(root, split))


def read_mask_folder(root: str, split: str, size: tuple[int, int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images ``(N, 3, H, W)`` uint8 and masks ``(N, H, W)`` uint8 of ``split``, each resized to
    ``size = (H, W)`` when given (images bilinear, masks nearest); images of different sizes need
    ``size``.  Returns the class names too."""
    if not os.path.isdir(root):
        raise UserError(f"mask folder {root} does not exist; give ROOT with SPLIT/images + SPLIT/masks "
                        "or a Pascal VOC folder (JPEGImages, SegmentationClass, ImageSets/Segmentation)")
    pairs = _pairs(root, split)
    if not pairs:
        raise UserError(f"{root} has no {split} images: expected {split}/images/*.png with {split}/masks/*.png, "
                        f"or ImageSets/Segmentation/{split}.txt in a VOC folder")
    xs, ys = [], []
    for img_path, mask_path in pairs:
        try:
            with Image.open(img_path) as im:
                im = im.convert("RGB")
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                x = np.asarray(im, np.uint8)
        except FileNotFoundError:
            raise UserError(f"image {img_path} does not exist; the folder's list names it") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise UserError(f"cannot decode image {img_path} ({e}); give a valid PNG or JPEG") from None
        y = read_mask(mask_path)
        if size is None and y.shape != x.shape[:2]:
            raise UserError(f"mask {mask_path} is {y.shape[1]}x{y.shape[0]} but its image is "
                            f"{x.shape[1]}x{x.shape[0]}; a mask must match its image")
        if size is not None and y.shape != tuple(size):
            y = np.asarray(Image.fromarray(y).resize((size[1], size[0]), Image.NEAREST))
        xs.append(x.transpose(2, 0, 1))
        ys.append(y)
    if len({x.shape for x in xs}) > 1:
        raise UserError(f"the {split} images under {root} differ in size; set data.kwargs.image_size "
                        "to resize them (masks are resized with nearest neighbours)")
    masks = np.stack(ys)
    values = masks[masks != 255]
    classes = mask_classes(root, int(values.max(initial=0)) + 1)
    return np.stack(xs), masks, classes


# --------------------------------------------------------------------------- augmentation

def augment_pairs(x: Tensor, y: Tensor, gen: torch.Generator, flip: bool = True,
                  scale: tuple[float, float] = (1.0, 1.0), crop: int | None = None,
                  fill: float = 0.0, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Augment images ``(B, C, H, W)`` and masks ``(B, H, W)`` (int64) together.

    ``flip``: each pair mirrored left-right with probability 1/2.  ``scale``: the batch rescaled
    by one factor drawn from ``[min, max]`` (images bilinear, masks nearest).  Then a random
    window of ``crop x crop`` (default: the input's ``H x W``) per pair; where the window leaves
    the rescaled image, images take ``fill`` and masks ``ignore_index``.
    """
    B, _, H, W = x.shape
    dev = x.device
    if flip:
        m = torch.rand(B, generator=gen, device=gen.device).to(dev) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
        y = torch.where(m[:, None, None], y.flip(2), y)
    lo, hi = scale
    if (lo, hi) != (1.0, 1.0):
        s = lo + (hi - lo) * float(torch.rand((), generator=gen, device=gen.device))
        size = (max(1, round(H * s)), max(1, round(W * s)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = F.interpolate(y[:, None].float(), size=size, mode="nearest")[:, 0].long()
    ch, cw = (crop, crop) if crop else (H, W)
    h, w = x.shape[-2:]
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:                                   # smaller than the window: pad, mask ignored
        x = F.pad(x, (0, pw, 0, ph), value=fill)
        y = F.pad(y, (0, pw, 0, ph), value=ignore_index)
        h, w = h + ph, w + pw
    if (h, w) != (ch, cw):
        r = torch.rand((2, B), generator=gen, device=gen.device).to(dev)
        top = (r[0] * (h - ch + 1)).long().clamp_(max=h - ch)
        left = (r[1] * (w - cw + 1)).long().clamp_(max=w - cw)
        x = crop_at(x, top, left, ch, cw)
        y = crop_at(y[:, None], top, left, ch, cw)[:, 0]
    return x.contiguous(), y.contiguous()


# --------------------------------------------------------------------------- drawing

def palette(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 colours, class 0 black: the bit-interleaved colour map of Pascal VOC
    (class ``c``'s bits spread over the high bits of R, G and B), so VOC masks show their usual
    colours.  Index 255 (ignore) is drawn white."""
    out = np.zeros((n, 3), np.uint8)
    for c in range(n):
        v, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (v & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
        out[c] = (r, g, b)
    if n > 255:
        out[255] = 255
    return out


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class indices ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 with :func:`palette`."""
    return palette()[np.asarray(mask, np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colour mask blended over an RGB image ``(H, W, 3)`` uint8; background (class 0) and
    ignored pixels leave the image as it is."""
    colour = colorize(mask).astype(np.float32)
    keep = ((mask == 0) | (mask == 255))[..., None]
    out = np.where(keep, image, (1 - alpha) * image + alpha * colour)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


__all__ = ["VOC_CLASSES", "augment_pairs", "colorize", "has_split", "mask_classes", "overlay", "palette",
           "read_mask", "read_mask_folder"]
