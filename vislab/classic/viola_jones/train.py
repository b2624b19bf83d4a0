"""Training an attentional cascade, as in Viola and Jones' Table 2.

Each stage boosts stumps over a random part of the Haar feature pool (drawn anew for every
stage) until, with its threshold lowered so that a fraction ``d`` of the faces still passes,
it lets through at most a fraction ``f`` of validation negatives.  The threshold is set on the
training and validation faces together: with a few dozen identities the single hardest
validation face would otherwise decide every stage; the ``d`` reported is measured on the
validation faces alone.

The negatives of every stage are windows of face-free images that the cascade so far still
accepts (bootstrapping, :class:`NegativeMiner`): images are scanned once each, exactly as the
detector scans them, and the windows they give are kept and filtered by each new stage, so a
window rejected early is never looked at again; new images are scanned only when the kept
windows run short.  Half of the images are scenes of training faces, whose windows that cut
through a face are negatives too; once the cascade is deep, the few natural images are scanned
again and every window it accepts there is kept.  The fresh scans also measure the
false-positive rate per window of the cascade on images it has never seen.  Training stops at the stage limit, when that rate reaches
the target, or when the images or the faces run out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vislab.classic.viola_jones.adaboost import AdaBoost, SortedFeatures
from vislab.classic.viola_jones.cascade import THRESHOLD_EPS, Cascade, evaluate_windows
from vislab.classic.viola_jones.data import (
    TEST_SEED_START,
    Scene,
    augment_faces,
    face_windows,
    lfw_faces,
    lfw_nonfaces,
    negative_images,
    sample_views,
    training_negatives,
)
from vislab.classic.viola_jones.detect import (
    opencv_scales,
    resize_linear_exact,
    scan_opencv_windows,
)
from vislab.classic.viola_jones.haar import (
    SHAPES,
    WindowStack,
    haar_features,
    pool_value_blocks,
)
from vislab.classic.viola_jones.opencv_xml import save_opencv_cascade
from vislab.errors import UserError
from vislab.io import atomic_write_text

CASCADE_FILE = "checkpoints/cascade.npz"
XML_FILE = "checkpoints/cascade.xml"
# a window of a training scene is a negative only if it overlaps every face box less than this
# (IoU); a test detection needs 0.5 to count, the margin spares windows a face may still pass
NEGATIVE_MAX_IOU = 0.4


@dataclass
class TrainConfig:
    """Recipe of a cascade.

    Args:
        window: side of the square detection window.
        max_stages: stop after this many stages.
        detection_rate: d, the fraction of faces every stage must keep.
        false_positive_rate: f, a stage is done once it passes at most this fraction of
            validation negatives.
        target_false_positive_rate: stop once the measured false-positive rate per window
            reaches it.
        max_weak: at most this many stumps per stage.
        positives_per_face / validation_per_face: augmented copies of each training /
            validation face.
        negatives / validation_negatives: bootstrapped negatives per stage, for boosting and
            for measuring f.
        features: every stage boosts over a random subset of this many features of the pool,
            drawn anew for each stage (0: the whole pool).
        shapes: the Haar shapes of the pool.
        generated_negatives: generated backgrounds bootstrapping may use besides the views of
            scikit-image's samples (made only when needed).
        scan_scale_factor: pyramid step when scanning negative images.
        scan_windows: a refill scans at most about this many windows; a stage deep enough to
            need more trains on the negatives found (down to a 32nd of the number asked).
        harvest_rate: once the false-positive rate per window falls below it, the natural
            images (the views of scikit-image's samples, few and the hardest) are scanned
            again at scale factor 1.1 and every window the cascade accepts is kept.
        measure_images: fresh images every refill scans at least, so that each stage's rate
            per window is measured on images it has never seen; after the last stage, which
            no refill follows, as many as it takes to count 100 accepted windows (at most
            ``scan_windows`` windows).
        scene_positives: faces as the detector sees them in scenes (:func:`face_windows`);
            False: the crops themselves, jittered (:func:`augment_faces`).
        seed: seed of augmentation, sampling, image order and feature subsets.
    """

    window: int = 24
    max_stages: int = 22
    detection_rate: float = 0.995
    false_positive_rate: float = 0.5
    target_false_positive_rate: float = 1e-7
    max_weak: int = 200
    positives_per_face: int = 10
    validation_per_face: int = 20
    negatives: int = 1000
    validation_negatives: int = 500
    features: int = 20_000
    shapes: tuple[str, ...] = SHAPES
    generated_negatives: int = 8000
    scan_scale_factor: float = 1.2
    scan_windows: int = 60_000_000
    harvest_rate: float = 1e-4
    measure_images: int = 16
    scene_positives: bool = True
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad value and what it should be."""
        checks = [
            (self.window >= 8, "window must be at least 8 pixels"),
            (self.max_stages >= 1, "max_stages must be at least 1"),
            (0 < self.detection_rate <= 1, "detection_rate must be in (0, 1]"),
            (0 < self.false_positive_rate < 1, "false_positive_rate must be in (0, 1)"),
            (0 < self.target_false_positive_rate < 1, "target_false_positive_rate must be in (0, 1)"),
            (self.max_weak >= 1, "max_weak must be at least 1"),
            (self.positives_per_face >= 1 and self.validation_per_face >= 1, "faces need at least one copy"),
            (self.negatives >= 10 and self.validation_negatives >= 10, "use at least 10 negatives of each kind"),
            (self.features >= 0, "features must be 0 (all) or a positive count"),
            (set(self.shapes) <= set(SHAPES) and self.shapes, f"shapes must be a subset of {SHAPES}"),
            (0 <= self.generated_negatives <= TEST_SEED_START,
             f"generated_negatives must be in [0, {TEST_SEED_START}] (the seeds above make the test scenes)"),
            (self.scan_scale_factor > 1, "scan_scale_factor must be above 1"),
            (self.scan_windows >= 1, "scan_windows must be positive"),
            (0 <= self.harvest_rate <= 1e-3,
             "harvest_rate must be in [0, 1e-3]: above, the windows to keep no longer fit in memory"),
            (self.measure_images >= 1, "measure_images must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class StageStats:
    """What a stage became: its size, its rates, its cost.

    ``detection_rate`` and ``false_positive_rate`` are d and f on the validation faces and
    negatives; ``window_false_positive_rate`` is the fraction of the windows of fresh face-free
    images that the cascade up to this stage accepts (``windows_measured`` of them).
    """

    stage: int
    n_features: int
    detection_rate: float
    false_positive_rate: float
    threshold: float
    window_false_positive_rate: float = field(default=float("nan"))
    windows_measured: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass
class TrainResult:
    cascade: Cascade
    stages: list[StageStats]
    stop_reason: str
    window_false_positive_rate: float
    seconds: float
    cpu_seconds: float = 0.0
    images_scanned: int = 0
    windows_scanned: int = 0

    def as_dict(self) -> dict:
        return {"stages": [asdict(s) for s in self.stages], "stop_reason": self.stop_reason,
                "window_false_positive_rate": self.window_false_positive_rate, "seconds": self.seconds,
                "cpu_seconds": self.cpu_seconds, "images_scanned": self.images_scanned,
                "windows_scanned": self.windows_scanned}


@dataclass
class ScanCount:
    """Fresh images scanned, the windows classified in them (grey-level std > 10) and how many
    of those the cascade accepted: a measurement of its false-positive rate per window."""

    images: int = 0
    windows: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.windows if self.windows else float("nan")


class NegativeMiner:
    """Hard negatives: windows of face-free images that a cascade accepts (bootstrapping).

    Images come one at a time from an iterator and are scanned once each, as the detector
    scans them (OpenCV's pyramid), by the cascade of the moment.  Up to ``per_image`` of the
    windows it accepts in an image are kept, each standing for ``accepted / kept`` windows, so
    that a draw weighted by these counts is a uniform draw over every accepted window.  After
    each stage :meth:`keep_accepted` drops the kept windows the new stage rejects;
    :meth:`refill` scans new images when fewer than needed are left.  ``patches`` are
    ready-cut windows that join at the start (the non-faces of the LFW subset).
    """

    def __init__(self, images: Iterable[np.ndarray], patches: np.ndarray, window: int, scale_factor: float,
                 per_image: int) -> None:
        self.images: Iterator[np.ndarray] = iter(images)
        self.window, self.scale_factor, self.per_image = window, scale_factor, per_image
        self.windows = np.asarray(patches, np.uint8).reshape(-1, window, window)
        self.weights = np.ones(len(self.windows))
        self.scanned = ScanCount()
        self.exhausted = False

    def __len__(self) -> int:
        return len(self.windows)

    def keep_accepted(self, cascade: Cascade) -> None:
        """Keep only the windows the cascade accepts (flat windows never are)."""
        keep = evaluate_windows(cascade, self.windows)[0] == cascade.n_stages
        self.windows, self.weights = self.windows[keep], self.weights[keep]

    def refill(self, cascade: Cascade, n: int, rng: np.random.Generator, min_images: int = 0,
               max_windows: float = np.inf, min_accepted: int = 0) -> ScanCount:
        """Scan new images until at least ``n`` windows are kept, ``min_images`` images were
        scanned and ``min_accepted`` windows accepted in them, or until ``max_windows`` windows
        were scanned or the images run out; what the new images measured."""
        count = ScanCount()
        windows, weights = [self.windows], [self.weights]
        kept, win = len(self.windows), (self.window, self.window)
        while (kept < n or count.images < min_images or count.accepted < min_accepted) \
                and count.windows < max_windows:
            item = next(self.images, None)
            if item is None:
                self.exhausted = True
                break
            img = item.image if isinstance(item, Scene) else item
            hits = scan_opencv_windows(cascade, img, self.scale_factor)
            index = np.arange(len(hits.grid))
            if isinstance(item, Scene) and len(item.boxes) and len(index):
                boxes = _hit_boxes(hits, img.shape, self.window, self.scale_factor)
                index = index[_max_iou(boxes, item.boxes) < NEGATIVE_MAX_IOU]
            accepted = len(index)
            count.images += 1
            count.windows += hits.textured
            count.accepted += accepted
            if accepted:
                pick = index[np.sort(rng.choice(accepted, min(accepted, self.per_image), replace=False))]
                windows.append(hits.patches(pick, win))
                weights.append(np.full(len(pick), accepted / len(pick)))
                kept += len(pick)
        self.windows, self.weights = np.concatenate(windows), np.concatenate(weights)
        for name in ("images", "windows", "accepted"):
            setattr(self.scanned, name, getattr(self.scanned, name) + getattr(count, name))
        return count

    def harvest(self, cascade: Cascade, images: Iterable[np.ndarray], scale_factor: float) -> int:
        """Keep every window of ``images`` the cascade accepts (weight 1, none twice); how many
        were new.  For images too few to leave to one capped look."""
        win = (self.window, self.window)
        found = [self.windows]
        for img in images:
            hits = scan_opencv_windows(cascade, img, scale_factor)
            found.append(hits.patches(np.arange(len(hits.grid)), win))
        windows = np.concatenate(found)
        _, first = np.unique(windows.reshape(len(windows), -1), axis=0, return_index=True)
        new = np.sort(first[first >= len(self.windows)])
        self.windows = np.concatenate([self.windows, windows[new]])
        self.weights = np.r_[self.weights, np.ones(len(new))]
        return len(new)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``n`` distinct kept windows, drawn with probability proportional to their weight."""
        if len(self.windows) <= n:
            return self.windows[rng.permutation(len(self.windows))]
        pick = rng.choice(len(self.windows), n, replace=False, p=self.weights / self.weights.sum())
        return self.windows[pick]


def _hit_boxes(hits, image_shape: tuple[int, int], window: int, scale_factor: float) -> np.ndarray:
    """(n, 4) ``x1, y1, x2, y2`` of the accepted windows of a scan, in the scanned (H, W) image."""
    scales = opencv_scales(image_shape[::-1], (window, window), scale_factor)
    scale = np.asarray(scales, np.float64)[hits.grid]
    step = np.asarray(hits.steps)[hits.grid]
    x, y = hits.col * step * scale, hits.row * step * scale
    return np.stack([x, y, x + window * scale, y + window * scale], 1)


def _max_iou(boxes: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Highest IoU of each box (n, 4) with any face box (m, 4)."""
    lo, hi = np.maximum(boxes[:, None, :2], faces[None, :, :2]), np.minimum(boxes[:, None, 2:], faces[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_f = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    return (inter / (area_b[:, None] + area_f[None, :] - inter)).max(1)


def _stage_threshold(scores: np.ndarray, detection_rate: float) -> np.float32:
    """Highest float32 threshold that keeps ``detection_rate`` of the validation faces."""
    k = int(np.floor((1 - detection_rate) * len(scores) + 1e-9))
    return np.float32(np.sort(scores)[min(k, len(scores) - 1)])


def _passes(scores: np.ndarray, threshold: np.float32) -> np.ndarray:
    """The detector's test: the stage sum is not below ``threshold - 1e-5`` (float32)."""
    return scores >= np.float32(threshold - THRESHOLD_EPS)


def _subset_blocks(blocks: Iterator[np.ndarray], keep: np.ndarray) -> Iterator[np.ndarray]:
    """Rows ``keep`` (sorted indices) of a stream of row blocks."""
    start = 0
    for block in blocks:
        rows = keep[(keep >= start) & (keep < start + len(block))] - start
        start += len(block)
        if len(rows):
            yield block[rows]


def _boost_stage(cfg: TrainConfig, features, subset: np.ndarray, pos: np.ndarray, val: np.ndarray,
                 neg_train: np.ndarray, neg_val: np.ndarray, log: Callable[[dict], None], stage: int):
    """Stumps of one stage, on ``features`` (the pool's rows ``subset``), until f is reached.

    Returns ``(stumps, threshold, d, f)``; each stump is ``(pool feature, threshold, left leaf,
    right leaf)``.
    """
    train = WindowStack(np.concatenate([pos, neg_train]))
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg_train), bool)]
    sorted_features = SortedFeatures.from_blocks(
        _subset_blocks(pool_value_blocks(train.windows, cfg.shapes, train.vnf), subset), len(subset), len(train),
        column=lambda f: train.values(features.subset([f]))[0])
    booster = AdaBoost(sorted_features, labels, dtype=np.float32)
    val_stack, neg_stack = WindowStack(val), WindowStack(neg_val)
    pos_scores, val_scores, neg_scores = np.zeros(len(pos)), np.zeros(len(val)), np.zeros(len(neg_val))
    stumps: list[tuple[int, float, float, float]] = []
    threshold, d, f = np.float32(0), 1.0, 1.0
    while len(stumps) < cfg.max_weak:
        stump = booster.step()
        if stump is None:
            break
        left = np.float32(stump.alpha if stump.left_positive else 0.0)
        right = np.float32(stump.alpha if stump.right_positive else 0.0)
        stumps.append((int(subset[stump.feature]), stump.threshold, float(left), float(right)))
        one = features.subset([stump.feature])
        cut = np.float32(stump.threshold)
        pos_scores += np.where(sorted_features.column(stump.feature)[:len(pos)] < cut, left, right)
        val_scores += np.where(val_stack.values(one)[0] < cut, left, right)
        neg_scores += np.where(neg_stack.values(one)[0] < cut, left, right)
        # lowered until a fraction d of all faces (training and validation) passes
        threshold = _stage_threshold(np.r_[pos_scores, val_scores], cfg.detection_rate)
        d = float(_passes(val_scores, threshold).mean())
        f = float(_passes(neg_scores, threshold).mean())
        log({"event": "stump", "stage": stage, "n_features": len(stumps), "error": stump.error,
             "detection_rate": d, "false_positive_rate": f})
        if f <= cfg.false_positive_rate:
            break
    return stumps, threshold, d, f


def train_cascade(cfg: TrainConfig, log: Callable[[dict], None] | None = None,
                  negatives: Iterable[np.ndarray] | None = None) -> TrainResult:
    """Train a cascade on the LFW faces and face-free images (see the module docstring).

    Args:
        cfg: the recipe.
        log: called with a dict after every stage (and every stump, ``"event": "stump"``).
        negatives: face-free uint8 images to bootstrap from, scanned in this order and only as
            far as needed (arrays, or :class:`Scene` whose face boxes are avoided); default
            :func:`~vislab.classic.viola_jones.data.training_negatives` and, once the cascade is
            deep, the natural views again (see ``harvest_rate``).
    """
    cfg.validate()
    log = log or (lambda _: None)
    t_start, c_start = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(cfg.seed)
    win = cfg.window
    pool = haar_features((win, win), cfg.shapes)
    if cfg.scene_positives:
        backgrounds = negative_images("train", generated=16)
        pos_train = face_windows(lfw_faces("train"), cfg.positives_per_face, rng, backgrounds, win)
        pos_val = face_windows(lfw_faces("val"), cfg.validation_per_face, rng, backgrounds, win)
    else:
        pos_train = augment_faces(lfw_faces("train"), cfg.positives_per_face, rng, win)
        pos_val = augment_faces(lfw_faces("val"), cfg.validation_per_face, rng, win)
    images = training_negatives(cfg.generated_negatives, lfw_faces("train"), cfg.seed) if negatives is None \
        else negatives
    nonfaces = np.stack([resize_linear_exact(p, (win, win)) for p in lfw_nonfaces()])
    need = cfg.negatives + cfg.validation_negatives
    # at least 32 images feed every refill while windows are plentiful
    miner = NegativeMiner(images, np.concatenate([nonfaces, nonfaces[:, :, ::-1]]), win, cfg.scan_scale_factor,
                          per_image=max(1, need // 32))

    stages: list[tuple[list[tuple[int, float, float, float]], float]] = []
    stats: list[StageStats] = []
    cascade = Cascade.from_stumps((win, win), pool, [])
    miner.keep_accepted(cascade)
    miner.refill(cascade, need, rng)
    rate, harvested, reason = 1.0, negatives is not None, f"reached max_stages={cfg.max_stages}"
    for s in range(cfg.max_stages):
        t0, c0 = time.perf_counter(), time.process_time()
        pos = pos_train[evaluate_windows(cascade, pos_train)[0] == cascade.n_stages]
        val = pos_val[evaluate_windows(cascade, pos_val)[0] == cascade.n_stages]
        if len(miner) < need // 32 or len(pos) == 0 or len(val) == 0:
            reason = (f"stage {s}: only {len(miner)} negative windows left (need {need // 32}); add images "
                      f"(generated_negatives) or scan more (scan_windows)" if len(pos) and len(val)
                      else f"stage {s}: no face passes the cascade any more")
            break
        neg = miner.draw(need, rng)
        n_val = round(len(neg) * cfg.validation_negatives / need)
        subset = np.sort(rng.choice(len(pool), cfg.features, replace=False)) if 0 < cfg.features < len(pool) \
            else np.arange(len(pool))
        stumps, threshold, d, f = _boost_stage(cfg, pool.subset(subset), subset, pos, val, neg[n_val:], neg[:n_val],
                                               log, s)
        if not stumps:
            reason = f"stage {s}: no stump beats chance on the remaining negatives"
            break
        stages.append((stumps, float(threshold)))
        cascade = Cascade.from_stumps((win, win), pool, stages)
        # the windows this stage rejects go; fresh images refill the rest and measure the new cascade
        miner.keep_accepted(cascade)
        last = s == cfg.max_stages - 1
        # no refill follows the last stage: measure it on enough windows to count 100 accepted
        fresh = miner.refill(cascade, 0 if last else need, rng, cfg.measure_images, cfg.scan_windows,
                             min_accepted=100 if last else 0)
        rate = fresh.rate
        if not harvested and 0 < cfg.harvest_rate and rate <= cfg.harvest_rate and not last:
            harvested = True
            miner.harvest(cascade, sample_views(), 1.1)
        stats.append(StageStats(s, len(stumps), d, f, float(threshold), rate, fresh.windows,
                                time.perf_counter() - t0, time.process_time() - c0))
        log({"event": "stage", **asdict(stats[-1]), "images_scanned": miner.scanned.images,
             "negatives": len(neg)})
        if rate <= cfg.target_false_positive_rate:
            reason = (f"the false-positive rate per window, {rate:.1e} (on {fresh.windows:.1e} windows), "
                      f"reached the target")
            break
    return TrainResult(cascade, stats, reason, rate, time.perf_counter() - t_start, time.process_time() - c_start,
                       miner.scanned.images, miner.scanned.windows)


def format_stage(row: dict) -> str:
    """One line per stage: its size, d and f, and the false-positive rate per window so far."""
    return (f"stage {row['stage']:2d}: {row['n_features']:3d} features  d={row['detection_rate']:.3f}  "
            f"f={row['false_positive_rate']:.3f}  FP/window {row['window_false_positive_rate']:.1e} "
            f"(of {row['windows_measured']:.1e})  {row['seconds']:.0f} s ({row['cpu_seconds']:.0f} s CPU)")


def summary_table(result: TrainResult) -> str:
    """The stages of a training run, one line each, and its totals: what ``vj train`` prints last."""
    header = (f"{'stage':>5s} {'features':>8s} {'d (val)':>7s} {'f (val)':>7s} {'FP/window':>9s} "
              f"{'of windows':>10s} {'seconds':>7s} {'CPU s':>6s}")
    lines = [header]
    lines += [f"{s.stage:5d} {s.n_features:8d} {s.detection_rate:7.3f} {s.false_positive_rate:7.3f} "
              f"{s.window_false_positive_rate:9.1e} {s.windows_measured:10.1e} {s.seconds:7.0f} {s.cpu_seconds:6.0f}"
              for s in result.stages]
    lines.append(f"{result.cascade.n_stages} stages, {int(result.cascade.stage_sizes.sum())} features in "
                 f"{result.seconds:.0f} s ({result.cpu_seconds:.0f} s CPU); stopped: {result.stop_reason}")
    lines.append(f"false-positive rate per window of the final cascade: {result.window_false_positive_rate:.1e} "
                 f"(fresh images); {result.images_scanned} images, {result.windows_scanned:.1e} windows scanned")
    return "\n".join(lines)


def train_into_run(run: str | Path, cfg: TrainConfig, verbose: bool = False, overwrite: bool = True) -> TrainResult:
    """Train a cascade into a run directory: ``config.yaml``, ``metrics.jsonl`` (one row per
    stage), ``checkpoints/cascade.npz``, its OpenCV XML export and ``train.json``.

    With ``overwrite=False`` a run directory that already holds a cascade is refused (UserError)
    before anything is written.
    """
    run = Path(run)
    cfg.validate()
    if not overwrite and (run / CASCADE_FILE).exists():
        raise UserError(f"{run} already holds a cascade; pass --fresh to overwrite it or choose another --run-dir")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").unlink(missing_ok=True)
    atomic_write_text(str(run / "config.yaml"), yaml.safe_dump({"task": "viola_jones", **asdict(cfg)}, sort_keys=False))

    def log(row: dict) -> None:
        if row["event"] != "stage":
            return
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if verbose:
            print(format_stage(row), flush=True)

    result = train_cascade(cfg, log)
    result.cascade.save(run / CASCADE_FILE)
    save_opencv_cascade(result.cascade, run / XML_FILE)
    atomic_write_text(str(run / "train.json"), json.dumps(result.as_dict(), indent=2))
    return result
