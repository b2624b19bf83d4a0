"""Training an attentional cascade, as in Viola and Jones' Table 2.

Each stage boosts stumps over the whole Haar feature pool until, with its threshold lowered so
that a fraction ``d`` of the faces still passes, it lets through at most a fraction ``f`` of
validation negatives.  The threshold is set on the training and validation faces together: with
a few dozen identities the single hardest validation face would otherwise decide every stage;
the ``d`` reported is measured on the validation faces alone.  The negatives of the next stage are the windows of face-free
images that the cascade so far still accepts (bootstrapping), found by scanning the images
exactly as the detector will.  Training stops at the stage limit, when the estimated overall
false-positive rate ``prod(f_i)`` reaches the target, or when no negative is left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vislab.classic.viola_jones.adaboost import AdaBoost, SortedFeatures
from vislab.classic.viola_jones.cascade import THRESHOLD_EPS, Cascade, evaluate_windows
from vislab.classic.viola_jones.data import (
    augment_faces,
    lfw_faces,
    lfw_nonfaces,
    negative_images,
)
from vislab.classic.viola_jones.detect import resize_linear_exact, scan_opencv_windows
from vislab.classic.viola_jones.haar import (
    SHAPES,
    feature_values,
    haar_features,
    pool_value_blocks,
    window_normalisation,
)
from vislab.classic.viola_jones.opencv_xml import save_opencv_cascade
from vislab.errors import UserError
from vislab.io import atomic_write_text

CASCADE_FILE = "checkpoints/cascade.npz"
XML_FILE = "checkpoints/cascade.xml"


@dataclass
class TrainConfig:
    """Recipe of a cascade.

    Args:
        window: side of the square detection window.
        max_stages: stop after this many stages.
        detection_rate: d, the fraction of faces every stage must keep.
        false_positive_rate: f, a stage is done once it passes at most this fraction of
            validation negatives.
        target_false_positive_rate: stop once the product of the stages' f reaches it.
        max_weak: at most this many stumps per stage.
        positives_per_face / validation_per_face: augmented copies of each training /
            validation face.
        negatives / validation_negatives: bootstrapped negatives per stage, for boosting and
            for measuring f.
        features: use a random subset of this many features of the pool (0: all of them).
        shapes: the Haar shapes of the pool.
        generated_negatives: generated face-free images added to scikit-image's samples.
        scan_scale_factor: pyramid step when scanning negative images.
        seed: seed of augmentation, sampling and feature subset.
    """

    window: int = 24
    max_stages: int = 12
    detection_rate: float = 0.995
    false_positive_rate: float = 0.5
    target_false_positive_rate: float = 1e-6
    max_weak: int = 200
    positives_per_face: int = 10
    validation_per_face: int = 10
    negatives: int = 800
    validation_negatives: int = 400
    features: int = 0
    shapes: tuple[str, ...] = SHAPES
    generated_negatives: int = 60
    scan_scale_factor: float = 1.2
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
            (self.scan_scale_factor > 1, "scan_scale_factor must be above 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class StageStats:
    """What a stage became: its size, its rates on validation data, its cost."""

    stage: int
    n_features: int
    detection_rate: float
    false_positive_rate: float
    threshold: float
    negatives_accepted: float = field(default=float("nan"))   # per-window rate of the cascade before it
    seconds: float = 0.0


@dataclass
class TrainResult:
    cascade: Cascade
    stages: list[StageStats]
    stop_reason: str
    final_negatives_accepted: float
    seconds: float

    def as_dict(self) -> dict:
        return {"stages": [asdict(s) for s in self.stages], "stop_reason": self.stop_reason,
                "final_negatives_accepted": self.final_negatives_accepted, "seconds": self.seconds}


class NegativeSampler:
    """Draws windows that a cascade accepts, uniformly from all face-free images it scans.

    ``images`` are scanned as the detector scans them (OpenCV's pyramid); ``patches`` are
    ready-cut windows (the non-faces of the LFW subset).
    """

    def __init__(self, images: list[np.ndarray], patches: np.ndarray, window: int, scale_factor: float) -> None:
        self.images, self.patches = images, patches
        self.window, self.scale_factor = window, scale_factor

    def sample(self, cascade: Cascade, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Up to n accepted windows (uint8), and the fraction of classified windows accepted."""
        kept, counts, classified = [], [], 0
        win = (self.window, self.window)
        for img in self.images:
            hits = scan_opencv_windows(cascade, img, self.scale_factor)
            pick = rng.choice(len(hits.grid), min(n, len(hits.grid)), replace=False)
            kept.append(hits.patches(pick, win))
            counts.append(len(hits.grid))
            classified += hits.textured
        passed, _ = evaluate_windows(cascade, self.patches)
        accepted = self.patches[passed == cascade.n_stages]
        kept.append(accepted[rng.choice(len(accepted), min(n, len(accepted)), replace=False)])
        counts.append(len(accepted))
        classified += int((passed >= 0).sum())
        total = sum(counts)
        if total == 0:
            return np.zeros((0,) + win, np.uint8), 0.0
        # how many from each source: proportional to what it accepted (a uniform draw over all)
        take = rng.multinomial(min(n, total), np.array(counts) / total)
        take = np.minimum(take, [len(k) for k in kept])
        out = np.concatenate([k[:t] for k, t in zip(kept, take)])
        return out[rng.permutation(len(out))], total / max(classified, 1)


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


def train_cascade(cfg: TrainConfig, log: Callable[[dict], None] | None = None,
                  negatives: list[np.ndarray] | None = None) -> TrainResult:
    """Train a cascade on the LFW faces and face-free images (see the module docstring).

    Args:
        cfg: the recipe.
        log: called with a dict after every stage (and every stump, ``"event": "stump"``).
        negatives: face-free uint8 images to bootstrap from; default
            :func:`~vislab.classic.viola_jones.data.negative_images` ``("train")``.
    """
    cfg.validate()
    log = log or (lambda _: None)
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    win = cfg.window
    pool = haar_features((win, win), cfg.shapes)
    subset = np.sort(rng.choice(len(pool), cfg.features, replace=False)) if 0 < cfg.features < len(pool) \
        else np.arange(len(pool))
    features = pool.subset(subset)
    pos_train = augment_faces(lfw_faces("train"), cfg.positives_per_face, rng, win)
    pos_val = augment_faces(lfw_faces("val"), cfg.validation_per_face, rng, win)
    images = negative_images("train", cfg.generated_negatives) if negatives is None else negatives
    nonfaces = np.stack([resize_linear_exact(p, (win, win)) for p in lfw_nonfaces()])
    sampler = NegativeSampler(images, nonfaces, win, cfg.scan_scale_factor)

    stages: list[tuple[list[tuple[int, float, float, float]], float]] = []
    stats: list[StageStats] = []
    cascade = Cascade.from_stumps((win, win), features, [])
    estimated_fpr, reason = 1.0, f"reached max_stages={cfg.max_stages}"
    for s in range(cfg.max_stages):
        t0 = time.perf_counter()
        pos = pos_train[evaluate_windows(cascade, pos_train)[0] == cascade.n_stages]
        val = pos_val[evaluate_windows(cascade, pos_val)[0] == cascade.n_stages]
        neg, accepted_rate = sampler.sample(cascade, cfg.negatives + cfg.validation_negatives, rng)
        if len(neg) < cfg.negatives + cfg.validation_negatives or len(pos) == 0 or len(val) == 0:
            reason = (f"stage {s}: only {len(neg)} negative windows left (need "
                      f"{cfg.negatives + cfg.validation_negatives})" if len(pos) and len(val)
                      else f"stage {s}: no face passes the cascade any more")
            break
        neg_val, neg_train = neg[:cfg.validation_negatives], neg[cfg.validation_negatives:]
        windows = np.concatenate([pos, neg_train])
        labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg_train), bool)]
        vnf, _ = window_normalisation(windows)
        sorted_features = SortedFeatures.from_blocks(
            _subset_blocks(pool_value_blocks(windows, cfg.shapes, vnf), subset), len(subset), len(windows),
            column=lambda f: feature_values(features.subset([f]), windows, vnf)[0])
        booster = AdaBoost(sorted_features, labels, dtype=np.float32)
        val_vnf, neg_vnf = window_normalisation(val)[0], window_normalisation(neg_val)[0]
        pos_scores, val_scores, neg_scores = np.zeros(len(pos)), np.zeros(len(val)), np.zeros(len(neg_val))
        stumps: list[tuple[int, float, float, float]] = []
        threshold, d, f = np.float32(0), 1.0, 1.0
        while len(stumps) < cfg.max_weak:
            stump = booster.step()
            if stump is None:
                break
            left = np.float32(stump.alpha if stump.left_positive else 0.0)
            right = np.float32(stump.alpha if stump.right_positive else 0.0)
            stumps.append((stump.feature, stump.threshold, float(left), float(right)))
            one = features.subset([stump.feature])
            cut = np.float32(stump.threshold)
            pos_scores += np.where(sorted_features.column(stump.feature)[:len(pos)] < cut, left, right)
            val_scores += np.where(feature_values(one, val, val_vnf)[0] < cut, left, right)
            neg_scores += np.where(feature_values(one, neg_val, neg_vnf)[0] < cut, left, right)
            # lowered until a fraction d of all faces (training and validation) passes
            threshold = _stage_threshold(np.r_[pos_scores, val_scores], cfg.detection_rate)
            d = float(_passes(val_scores, threshold).mean())
            f = float(_passes(neg_scores, threshold).mean())
            log({"event": "stump", "stage": s, "n_features": len(stumps), "error": stump.error,
                 "detection_rate": d, "false_positive_rate": f})
            if f <= cfg.false_positive_rate:
                break
        if not stumps:
            reason = f"stage {s}: no stump beats chance on the remaining negatives"
            break
        stages.append((stumps, float(threshold)))
        cascade = Cascade.from_stumps((win, win), features, stages)
        estimated_fpr *= f
        stats.append(StageStats(s, len(stumps), d, f, float(threshold), accepted_rate, time.perf_counter() - t0))
        log({"event": "stage", **asdict(stats[-1]), "estimated_false_positive_rate": estimated_fpr})
        if estimated_fpr <= cfg.target_false_positive_rate:
            reason = f"estimated false-positive rate {estimated_fpr:.2e} reached the target"
            break
    _, final_rate = sampler.sample(cascade, 1, rng)
    return TrainResult(cascade, stats, reason, final_rate, time.perf_counter() - t_start)


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
            print(f"stage {row['stage']:2d}: {row['n_features']:3d} features  d={row['detection_rate']:.3f}  "
                  f"f={row['false_positive_rate']:.3f}  F~{row['estimated_false_positive_rate']:.1e}  "
                  f"({row['seconds']:.0f} s)", flush=True)

    result = train_cascade(cfg, log)
    result.cascade.save(run / CASCADE_FILE)
    save_opencv_cascade(result.cascade, run / XML_FILE)
    atomic_write_text(str(run / "train.json"), json.dumps(result.as_dict(), indent=2))
    return result
