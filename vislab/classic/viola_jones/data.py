"""Training and test data that exist on every machine, without downloads.

* Faces: scikit-image's ``data.lfw_subset()`` (100 faces and 100 non-faces, 25x25, shipped
  with the package), split once into train / validation / test faces; positives are the faces
  as the detector sees them in scenes (:func:`face_windows`), or the crops jittered with small
  shifts, flips and scale changes (:func:`augment_faces`).
* Face-free images: scikit-image's sample images without people or animals, plus images the
  project generates (gradients, shapes, lines and noise textures); separate images feed
  training negatives and test scenes: different samples, and generator seeds below
  ``TEST_SEED_START`` for training, from it on for testing.  Training also sees its samples
  mirrored and turned by quarter turns (:func:`sample_views`), and scenes made of training
  faces on training backgrounds (:func:`training_negatives`).
* Scenes: faces pasted with soft edges at random positions and sizes on face-free
  backgrounds, with their boxes: a detection test set with known answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vislab.classic.viola_jones.detect import rgb_to_gray

# scikit-image samples with no human or animal face (camera, astronaut, chelsea are left out)
TRAIN_SAMPLES = ("brick", "grass", "gravel", "coins", "moon", "page", "text", "cell", "clock", "horse",
                 "immunohistochemistry", "logo", "microaneurysms", "retina", "checkerboard",
                 "shepp_logan_phantom", "colorwheel")
TEST_SAMPLES = ("coffee", "rocket", "hubble_deep_field", "motorcycle")
# every 2-D sample that ships with scikit-image (no download): the names `vj detect` accepts as images
SAMPLE_NAMES = ("astronaut", "camera", "chelsea", "cat") + TRAIN_SAMPLES + TEST_SAMPLES
# generated test backgrounds use seeds from here on; training ones stay below
TEST_SEED_START = 10_000
_SPLIT_SEED = 2004   # the year of the journal version of Viola & Jones; fixes the face split
_SPLITS = {"train": (0, 70), "val": (70, 85), "test": (85, 100)}


def _to_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.clip(np.rint(img * 255 if img.max() <= 1 else img), 0, 255).astype(np.uint8)
    return rgb_to_gray(img[..., :3]) if img.ndim == 3 else img


def sample_image(name: str) -> np.ndarray:
    """A scikit-image sample image as uint8 grey (``motorcycle``: left view of the stereo pair)."""
    from skimage import data
    if name not in SAMPLE_NAMES:
        raise ValueError(f"{name!r} is not a scikit-image sample image; use one of {', '.join(SAMPLE_NAMES)}")
    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    return _to_uint8(img)


def lfw_faces(split: str = "all") -> np.ndarray:
    """LFW face crops (n, 25, 25) uint8 of one split: ``train`` (70), ``val`` (15), ``test`` (15) or ``all``."""
    from skimage import data
    faces = np.rint(data.lfw_subset()[:100] * 255).astype(np.uint8)
    if split == "all":
        return faces
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS) + ['all']}, got {split!r}")
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(faces))
    lo, hi = _SPLITS[split]
    return faces[np.sort(order[lo:hi])]


def lfw_nonfaces() -> np.ndarray:
    """The 100 non-face 25x25 patches of ``data.lfw_subset()``, uint8."""
    from skimage import data
    return np.rint(data.lfw_subset()[100:] * 255).astype(np.uint8)


def augment_faces(faces: np.ndarray, copies: int, rng: np.random.Generator, window: int = 24,
                  max_shift: float = 1.0, scale_jitter: float = 0.08, flip: bool = True) -> np.ndarray:
    """``copies`` jittered (window x window) uint8 versions of every face crop.

    The whole crop is mapped onto the window, then scaled by ``1 +- scale_jitter``, shifted by
    up to ``max_shift`` crop pixels and mirrored half of the time; bilinear sampling.
    """
    faces = np.asarray(faces)
    n, h, w = faces.shape
    idx = np.repeat(np.arange(n), copies)
    m = len(idx)
    scale = 1 + rng.uniform(-scale_jitter, scale_jitter, m)
    shift = rng.uniform(-max_shift, max_shift, (m, 2))
    mirror = rng.random(m) < 0.5 if flip else np.zeros(m, bool)
    u = np.arange(window) + 0.5 - window / 2                      # output pixel centres, window-centred
    xs = w / 2 + u[None] * (w / window) * scale[:, None] + shift[:, :1] - 0.5
    xs = np.where(mirror[:, None], xs[:, ::-1], xs)
    ys = h / 2 + u[None] * (h / window) * scale[:, None] + shift[:, 1:] - 0.5
    return _bilinear(faces.astype(np.float64), idx, ys, xs)


def _bilinear(imgs: np.ndarray, idx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample imgs[idx] on the separable grid ys (m, H) x xs (m, W), clamped at the borders."""
    h, w = imgs.shape[1:]
    y0 = np.clip(np.floor(ys), 0, h - 1).astype(np.int64)
    x0 = np.clip(np.floor(xs), 0, w - 1).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy = np.clip(ys - y0, 0, 1)[:, :, None]
    fx = np.clip(xs - x0, 0, 1)[:, None, :]
    i = idx[:, None, None]

    def at(yy, xx):
        return imgs[i, yy[:, :, None], xx[:, None, :]]

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def generated_image(seed: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A face-free uint8 image of gradients, shapes, lines and textures, reproducible from its seed."""
    import cv2

    rng = np.random.default_rng([seed, 0x5EED])
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = 128 + 80 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)
    coarse = rng.normal(0, 40, (rng.integers(3, 9), rng.integers(3, 9)))
    img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(5, 25)):
        kind = rng.integers(4)
        colour = float(rng.uniform(0, 255))
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            cv2.rectangle(img, c, (c[0] + int(rng.integers(5, w // 2)), c[1] + int(rng.integers(5, h // 2))),
                          colour, -1 if rng.random() < 0.6 else int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.ellipse(img, c, (int(rng.integers(3, w // 4)), int(rng.integers(3, h // 4))),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1 if rng.random() < 0.6 else 2)
        elif kind == 2:
            cv2.line(img, c, (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, int(rng.integers(1, 6)))
        else:   # a patch of striped or noisy texture
            x1, y1 = min(w, c[0] + int(rng.integers(20, w // 2))), min(h, c[1] + int(rng.integers(20, h // 2)))
            period = rng.uniform(2, 12)
            stripes = 40 * np.sin((xx[c[1]:y1, c[0]:x1] * np.cos(rng.uniform(0, np.pi))
                                   + yy[c[1]:y1, c[0]:x1] * np.sin(rng.uniform(0, np.pi))) * max(w, h) / period)
            img[c[1]:y1, c[0]:x1] += stripes + rng.normal(0, rng.uniform(0, 25), stripes.shape)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))
    img += rng.normal(0, rng.uniform(1, 8), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def negative_images(split: str = "train", generated: int = 60, size: tuple[int, int] = (480, 360)) -> list[np.ndarray]:
    """Face-free uint8 images: scikit-image samples plus ``generated`` generated ones of ``size``.

    ``train`` and ``test`` use different samples and different generator seeds.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = TRAIN_SAMPLES if split == "train" else TEST_SAMPLES
    if split == "train" and generated > TEST_SEED_START:
        raise ValueError(f"at most {TEST_SEED_START} generated training images (the seeds above are the "
                         f"test backgrounds'), got {generated}")
    seeds = range(generated) if split == "train" else range(TEST_SEED_START, TEST_SEED_START + generated)
    return [sample_image(n) for n in names] + [generated_image(s, size) for s in seeds]


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """The image turned by ``k % 4`` quarter turns, mirrored when ``k >= 4``: its eight views."""
    img = np.rot90(img, k % 4)
    return np.ascontiguousarray(img[:, ::-1] if k >= 4 else img)


def sample_views() -> list[np.ndarray]:
    """The eight views (:func:`dihedral`) of every training sample: 136 face-free natural images."""
    return [dihedral(img, k) for img in map(sample_image, TRAIN_SAMPLES) for k in range(8)]


@dataclass(frozen=True)
class Scene:
    """A generated test image (uint8 grey) with its face boxes (n, 4) ``x1, y1, x2, y2``."""

    image: np.ndarray
    boxes: np.ndarray


def _paste_face(img: np.ndarray, face: np.ndarray, x: int, y: int, s: int) -> None:
    """Paste a face crop, scaled to s x s (bilinear), at (x, y) of a float image, its edges
    blended into the background over 12 % of its size."""
    import cv2

    patch = cv2.resize(face.astype(np.float64), (s, s), interpolation=cv2.INTER_LINEAR)
    ramp = np.clip((np.minimum(np.arange(s), np.arange(s)[::-1]) + 0.5) / (0.12 * s), 0, 1)
    alpha = np.minimum(ramp[:, None], ramp[None, :])
    img[y:y + s, x:x + s] = alpha * patch + (1 - alpha) * img[y:y + s, x:x + s]


def make_scene(rng: np.random.Generator, background: np.ndarray, faces: np.ndarray,
               size: tuple[int, int] = (320, 240), n_faces: tuple[int, int] = (1, 3),
               face_size: tuple[int, int] = (36, 96)) -> Scene:
    """Paste 1-3 faces, blended with soft edges, at random places and sizes on a background crop."""
    import cv2

    w, h = size
    bh, bw = background.shape
    crop = min(bw / w, bh / h) * rng.uniform(0.5, 1.0)
    cw, ch = max(int(w * crop), 8), max(int(h * crop), 8)
    x0, y0 = int(rng.integers(0, bw - cw + 1)), int(rng.integers(0, bh - ch + 1))
    img = cv2.resize(background[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(n_faces[0], n_faces[1] + 1))):
        for _attempt in range(50):
            s = int(rng.integers(face_size[0], face_size[1] + 1))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            if all(x + s <= bx1 or bx2 <= x or y + s <= by1 or by2 <= y for bx1, by1, bx2, by2 in boxes):
                break
        else:
            continue
        face = faces[rng.integers(len(faces))]
        _paste_face(img, face[:, ::-1] if rng.random() < 0.5 else face, x, y, s)
        boxes.append((x, y, x + s, y + s))
    return Scene(np.clip(np.rint(img), 0, 255).astype(np.uint8), np.array(boxes, np.int64).reshape(-1, 4))


def make_scenes(n: int, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[Scene]:
    """``n`` test scenes: test-split faces on test-split backgrounds, reproducible from ``seed``."""
    rng = np.random.default_rng([seed, 0x5CE7E])
    backgrounds = negative_images("test", generated=max(n // 2, 1))
    faces = lfw_faces("test")
    return [make_scene(rng, backgrounds[rng.integers(len(backgrounds))], faces, size) for _ in range(n)]


def face_windows(faces: np.ndarray, copies: int, rng: np.random.Generator, backgrounds: list[np.ndarray],
                 window: int = 24, face_size: tuple[int, int] = (36, 96), max_shift: float = 0.05,
                 scale_jitter: float = 0.08) -> np.ndarray:
    """``copies`` (window x window) uint8 views of every face as the detector sees it in a scene.

    As :func:`make_scene` does, the face is scaled to a random size, mirrored half of the time
    and pasted with soft edges on a crop of a random background; the window around it, shifted
    by up to ``max_shift`` of its size and scaled by ``1 +- scale_jitter``, is then resampled
    to the window size as the detector's pyramid resamples it (``resize_linear_exact``).
    """
    import cv2

    from vislab.classic.viola_jones.detect import resize_linear_exact

    out = np.empty((len(faces) * copies, window, window), np.uint8)
    for n, k in enumerate(np.repeat(np.arange(len(faces)), copies)):
        s = int(rng.integers(face_size[0], face_size[1] + 1))
        side = 2 * s                                                   # the face sits in the middle
        bg = backgrounds[rng.integers(len(backgrounds))]
        crop = min(int(side * rng.uniform(0.75, 2.0)), *bg.shape)
        y0, x0 = int(rng.integers(0, bg.shape[0] - crop + 1)), int(rng.integers(0, bg.shape[1] - crop + 1))
        canvas = cv2.resize(bg[y0:y0 + crop, x0:x0 + crop], (side, side), interpolation=cv2.INTER_AREA)
        canvas = canvas.astype(np.float64)
        face = faces[k][:, ::-1] if rng.random() < 0.5 else faces[k]
        _paste_face(canvas, face, s // 2, s // 2, s)
        canvas = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        ws = s * (1 + rng.uniform(-scale_jitter, scale_jitter))       # the window's side in the canvas
        cx, cy = s // 2 + s / 2 + rng.uniform(-max_shift, max_shift, 2) * s
        f = window / ws
        small = resize_linear_exact(canvas, (round(side * f), round(side * f)))
        limit = small.shape[0] - window
        wx, wy = (min(max(round((c - ws / 2) * f), 0), limit) for c in (cx, cy))
        out[n] = small[wy:wy + window, wx:wx + window]
    return out


def training_negatives(generated: int, faces: np.ndarray, seed: int = 0,
                       size: tuple[int, int] = (480, 360)) -> Iterator[np.ndarray | Scene]:
    """Face-free training images and training scenes, made one at a time in a random order fixed
    by ``seed``: a bootstrapping source that makes only what is scanned.

    Every view of every training sample (:func:`sample_views`) comes once as it is and once as
    the background of a scene; ``generated`` generated images (seeds below ``TEST_SEED_START``)
    come as backgrounds of scenes.  Scenes are made as the test scenes are (:func:`make_scene`),
    with ``faces`` (training faces): bootstrapping then also finds the windows that cut through
    a face or hold one among background, which test scenes are full of (the windows that cover
    a face box well are not negatives, the miner skips them).
    """
    if not 0 <= generated <= TEST_SEED_START:
        raise ValueError(f"generated must be in [0, {TEST_SEED_START}] (the seeds above are the test "
                         f"backgrounds'), got {generated}")
    views = [(name, k, scene) for name in TRAIN_SAMPLES for k in range(8) for scene in (False, True)]
    items = views + [(None, s, True) for s in range(generated)]
    rng = np.random.default_rng([seed, 0x5CE7E, 1])
    samples: dict[str, np.ndarray] = {}
    for i in np.random.default_rng([seed, 0xBAC6]).permutation(len(items)):
        name, k, scene = items[i]
        if name is None:
            img = generated_image(k, size)
        else:
            if name not in samples:
                samples[name] = sample_image(name)
            img = dihedral(samples[name], k)
        yield make_scene(rng, img, faces) if scene else img
