"""Recipes as dataclasses: YAML in, ``--set a.b=c`` overrides, validation with clear errors.

A config is a tree of dataclasses; a YAML file or an override names fields by dotted path.  An
unknown key, a value of the wrong type or a value out of range raises :class:`UserError` naming
the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from vislab.errors import UserError
from vislab.io import atomic_write_text


@dataclass
class AugmentConfig:
    """Which batch augmentations run during training (all off means none)."""
    crop_pad: int = 0
    flip: bool = False
    erase: float = 0.0          # probability of random erasing
    brightness: float = 0.0
    contrast: float = 0.0
    mixup: float = 0.0          # Beta(alpha, alpha); 0 disables


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None              # explicit folder with the data set's files
    download: bool = False               # fetch missing files (checksummed)
    limit_train: int | None = None       # use only the first N training images (quick trials)
    val_size: float = 1000               # images (or fraction if < 1) carved from the training set
    kwargs: dict[str, Any] = field(default_factory=dict)   # options of generated data sets
    classes: list[int] | None = None     # keep only these classes (relabelled 0..k-1 in this order)
    per_class: int | None = None         # keep only the first N training images of each class (few labels)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(flip=True))


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)   # extra constructor arguments
    init_from: str | None = None         # a run directory: start from its weights, head excepted (transfer)


@dataclass
class OptimConfig:
    name: str = "sgd"                    # sgd | rmsprop | adam | adamw
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False    # False: no weight decay on BN/LN parameters and biases
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99                  # RMSProp smoothing
    backbone_lr_scale: float = 1.0       # learning rate of the backbone (all but the head) / optim.lr


@dataclass
class ScheduleConfig:
    name: str = "onecycle"               # none | step | cosine | onecycle
    warmup_epochs: float = 0.0           # cosine: linear warm-up
    step_epochs: int = 10                # step: decay every N epochs
    gamma: float = 0.1                   # step: decay factor
    pct_start: float = 0.25              # onecycle: fraction of steps spent rising
    min_lr_ratio: float = 0.0            # cosine: final lr / peak lr


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 256
    eval_batch_size: int = 1024
    loss: str = "cross_entropy"          # cross_entropy | bce | mse
    label_smoothing: float = 0.1
    grad_clip: float | None = None       # max global L2 norm
    early_stop_patience: int | None = None  # epochs without val improvement before stopping
    monitor: str | None = None           # validation metric that picks best.pt (None: the task's own, e.g. val_top1)
    ema_decay: float | None = None       # e.g. 0.999: evaluate an exponential moving average
    amp: bool = False                    # autocast (bf16 on CUDA); off by default on CPU
    channels_last: bool = True       # faster convolutions on CPU (oneDNN) and CUDA
    aux_weight: float | None = None      # auxiliary-classifier loss weight (None: the model's own)
    freeze: str = "none"                 # none | backbone (train only the head: linear probe)
    sync_bn: bool = False                # several processes on CUDA: SyncBatchNorm (statistics over the global batch)


@dataclass
class MetricConfig:
    """Metric learning (``task: metric``): the embedding, its loss, the triplets or pairs mined
    in each batch, and the open-set protocol (train on some classes, retrieve among the others)."""
    loss: str = "triplet"                # triplet | contrastive | cross_entropy (baseline: penultimate layer)
    margin: float = 0.2
    squared: bool = False                # squared Euclidean distances in the loss (the 002 notes' form)
    normalize: bool = True               # L2-normalise the embeddings (distances then lie in [0, 2])
    miner: str = "semi_hard"             # random | batch_all | batch_hard | semi_hard | hard
    embed_dim: int = 0                   # 0: the backbone's pooled features are the embedding; N: a linear N-d layer on them
    classes_per_batch: int = 5           # P of a P x K class-balanced batch
    images_per_class: int = 32           # K
    train_classes: list[int] | None = field(default_factory=lambda: [0, 1, 2, 3, 4])   # None: closed set


@dataclass
class SegmentConfig:
    """Semantic segmentation (``task: segmentation``): how training samples are cut from the
    images, how images and masks are augmented together, and the loss's class weights."""
    train_mode: str = "image"            # image (whole images) | crops (random crops) | patches (a patch per pixel, its centre's class)
    crop: int = 64                       # crops: side of the random training crops
    patches_per_image: int = 32          # patches: pixels drawn per training image and epoch
    flip: bool = True                    # horizontal flips of image and mask together
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])   # random rescale range (masks: nearest)
    class_weight: str = "none"           # none | inverse | median (frequency) weights in the cross-entropy
    ignore_index: int = 255              # mask value that no loss or metric counts


@dataclass
class GenerativeConfig:
    """Autoencoders, the VAE and GANs (``task: generative``): their losses, the one-class
    protocol of anomaly detection, and the features that the Fréchet distance compares."""
    recon_loss: str = "l2"               # l2 (the notes' ||s - D(E(s))||_2 per image) | mse | bce
    latent_reg: str = "none"             # none | l1 (sparse code, weight reg_weight) | denoise (noise_std on the input)
    reg_weight: float = 1e-3             # lambda of the notes' lambda R term
    noise_std: float = 0.3               # denoising AE: std of the Gaussian noise added to its input
    beta: float = 1.0                    # VAE: weight of the KL term in the ELBO
    latent_prior: str = "full"           # AE sampling: full (Gaussian fitted to the training codes) | diagonal | standard (N(0, I))
    generator_loss: str = "non_saturating"   # GANs: non_saturating (max log D(G(z))) | saturating (min log(1 - D(G(z))))
    d_steps: int = 1                     # GANs: discriminator updates per generator update
    normal_class: int | None = None      # one-class protocol: train on this class only; test: the others are anomalies
    feature_run: str | None = None       # classification run whose penultimate features the FD uses (None: vislab's own, trained once)
    eval_samples: int = 10000            # generated images compared with the test set by the FD


@dataclass
class CaptionConfig:
    """Image captioning (``task: captioning``): the vocabulary cut and the decodings evaluated."""
    min_freq: int = 1                    # words seen fewer times in the training captions become <unk>
    beams: list[int] = field(default_factory=lambda: [3, 5])   # beam widths evaluated beside greedy decoding
    length_penalty: float = 0.7          # beam search ranks log p / length**alpha (0: no normalisation: short captions win)
    word2vec: str = "none"               # none | skipgram | cbow: the word table starts from word2vec on the training captions
    word2vec_epochs: int = 5             # epochs of that word2vec (vislab.sequence.word2vec.train_word2vec)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    task: str = "classification"         # see `vislab.engine.tasks.list_tasks()`
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


_CHOICES = {
    "optim.name": ("sgd", "rmsprop", "adam", "adamw"),
    "sched.name": ("none", "step", "cosine", "onecycle"),
    "train.loss": ("cross_entropy", "bce", "mse"),
    "train.freeze": ("none", "backbone"),
    "metric.loss": ("triplet", "contrastive", "cross_entropy"),
    "metric.miner": ("random", "batch_all", "batch_hard", "semi_hard", "hard"),
    "segment.train_mode": ("image", "crops", "patches"),
    "segment.class_weight": ("none", "inverse", "median"),
    "generative.recon_loss": ("l2", "mse", "bce"),
    "generative.latent_reg": ("none", "l1", "denoise"),
    "generative.generator_loss": ("non_saturating", "saturating"),
    "generative.latent_prior": ("full", "diagonal", "standard"),
    "caption.word2vec": ("none", "skipgram", "cbow"),
}
_POSITIVE = ("train.epochs", "train.batch_size", "train.eval_batch_size", "optim.lr", "optim.backbone_lr_scale",
             "metric.classes_per_batch", "metric.images_per_class", "segment.crop", "segment.patches_per_image",
             "generative.d_steps", "generative.eval_samples", "caption.min_freq",
             "caption.word2vec_epochs")


def _plain(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return d


RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


def list_recipes() -> list[str]:
    """The named recipes shipped in the package (``vislab train NAME``)."""
    return sorted(f[:-5] for f in os.listdir(RECIPES_DIR) if f.endswith(".yaml"))


def recipe_path(spec: str) -> str:
    """A recipe given by name (``quick``) or by path (``my/recipe.yaml``) -> its file.  A path
    that exists wins over a name; an unknown name lists the known ones."""
    if os.path.isfile(spec):
        return spec
    if spec in list_recipes():
        return os.path.join(RECIPES_DIR, f"{spec}.yaml")
    if os.sep in spec or spec.endswith((".yaml", ".yml")):
        raise UserError(f"config file {spec} does not exist; check the path, or name a recipe: "
                        f"{', '.join(list_recipes())}")
    close = difflib.get_close_matches(spec, list_recipes(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown recipe {spec!r}{hint}: name one of {', '.join(list_recipes())}, or give a YAML file")


def load_config(path: str | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the recipe (a name of :func:`list_recipes` or a YAML file), then
    ``key=value`` overrides, validated."""
    raw = read_recipe(path) if path is not None else {}
    cfg = from_dict(raw)
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def read_recipe(spec: str, _seen: tuple[str, ...] = ()) -> dict:
    """A recipe's YAML as a dict.  ``base: NAME`` (a recipe name or file) is read first and the
    recipe's keys override it section by section; a ``kwargs`` mapping replaces the base's whole
    (a U-Net takes none of an FCN's arguments)."""
    path = recipe_path(spec)
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist; check the path") from None
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read config {path}: {str(e).splitlines()[0]}; fix the YAML") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a mapping of sections (data:, model:, ...)")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise UserError(f"config {path}: base must name one recipe, got {base!r}")
    if os.path.abspath(path) in _seen:
        raise UserError(f"config {path}: its base recipes form a cycle; remove one base:")
    return _merge(read_recipe(base, (*_seen, os.path.abspath(path))), raw)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "kwargs" else v
    return out


def from_dict(raw: dict, cls: type = Config, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and value type."""
    obj = cls()
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        set_field(obj, hints, key, value, prefix)
    return obj


def set_field(obj: Any, hints: dict, key: str, value: Any, prefix: str) -> None:
    path = f"{prefix}{key}"
    if key not in hints:
        close = difflib.get_close_matches(str(key), hints, n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known: {', '.join(hints)}"
        raise UserError(f"unknown config key {path!r}{hint}")
    typ = hints[key]
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise UserError(f"config key {path!r} is a section; give a mapping, e.g. {path}.<key>=...")
        sub = getattr(obj, key)
        sub_hints = typing.get_type_hints(typ)
        for k, v in value.items():
            set_field(sub, sub_hints, k, v, f"{path}.")
        return
    setattr(obj, key, coerce(value, typ, path))


def coerce(value: Any, typ: Any, path: str) -> Any:
    """Check/convert ``value`` to the annotated type ``typ`` (int -> float allowed)."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, path)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if typ is Any:
        return value
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):     # YAML 1.1 reads 1e-9 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if typ in (int, str, bool):
        if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
            return value
    elif origin is tuple and isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(coerce(v, a, path) for v, a in zip(value, args))
    elif origin is list and isinstance(value, (list, tuple)):
        return [coerce(v, args[0], path) for v in value] if args else list(value)
    elif origin is dict and isinstance(value, dict):
        return dict(value)
    name = getattr(typ, "__name__", str(typ))
    raise UserError(f"config key {path!r} must be {name}, got {value!r} ({type(value).__name__})")


def apply_override(cfg: Config, item: str) -> None:
    """``a.b=c`` with ``c`` parsed as YAML (so 0.1 is a float, true a bool, [1, 2] a list)."""
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key=value, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    tree: dict = value
    for p in reversed(parts):
        tree = {p: tree}
    if len(parts) > 2 and parts[0] in ("model", "data") and parts[1] == "kwargs":
        getattr(cfg, parts[0]).kwargs[".".join(parts[2:])] = value
        return
    for k, v in tree.items():
        set_field(cfg, typing.get_type_hints(Config), k, v, "")


def validate(cfg: Config) -> None:
    """Types and ranges; the task name is checked against the registry when training starts."""
    d = cfg.to_dict()
    for path, allowed in _CHOICES.items():
        sec, key = path.split(".")
        if d[sec][key] not in allowed:
            raise UserError(f"config key {path!r} is {d[sec][key]!r}; choose one of {', '.join(allowed)}")
    for path in _POSITIVE:
        sec, key = path.split(".")
        if not d[sec][key] > 0:
            raise UserError(f"config key {path!r} must be positive, got {d[sec][key]!r}")
    if cfg.data.limit_train is not None and cfg.data.limit_train <= 0:
        raise UserError("data.limit_train must be a positive number of images (or null for all)")
    if not 0 <= cfg.train.label_smoothing < 1:
        raise UserError("train.label_smoothing must lie in [0, 1)")
    if cfg.data.per_class is not None and cfg.data.per_class <= 0:
        raise UserError("data.per_class must be a positive number of images per class (or null for all)")
    if cfg.metric.loss == "contrastive" and cfg.metric.miner not in ("random", "batch_all"):
        raise UserError(f"metric.miner={cfg.metric.miner} mines triplets; the contrastive loss takes pairs: "
                        "set metric.miner=random (random balanced pairs) or batch_all (every pair of the batch)")
    if cfg.metric.embed_dim < 0:
        raise UserError(f"metric.embed_dim must be >= 0 (0: the backbone's pooled features), got {cfg.metric.embed_dim}")
    lo, hi = (list(cfg.segment.scale) + [None, None])[:2]
    if len(cfg.segment.scale) != 2 or not 0 < lo <= hi:
        raise UserError(f"segment.scale must be [min, max] with 0 < min <= max, got {cfg.segment.scale}")
    if not 0 <= cfg.segment.ignore_index <= 255:
        raise UserError(f"segment.ignore_index must be a mask value in 0..255, got {cfg.segment.ignore_index}")
    for key in ("reg_weight", "noise_std", "beta"):
        if getattr(cfg.generative, key) < 0:
            raise UserError(f"generative.{key} must be >= 0, got {getattr(cfg.generative, key)}")
    if cfg.caption.length_penalty < 0:
        raise UserError(f"caption.length_penalty must be >= 0, got {cfg.caption.length_penalty}")
    if not cfg.caption.beams or any(b < 2 for b in cfg.caption.beams):
        raise UserError(f"caption.beams lists beam widths >= 2 evaluated beside greedy decoding, got {cfg.caption.beams}")
    if cfg.metric.margin < 0:
        raise UserError(f"metric.margin must be >= 0, got {cfg.metric.margin}")
    if cfg.train.ema_decay is not None and not 0 < cfg.train.ema_decay < 1:
        raise UserError("train.ema_decay must lie in (0, 1), e.g. 0.999")


def save_config(cfg: Config, path: str) -> None:
    """Write the fully resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_from_run(run_dir: str) -> Config:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(path):
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); give the folder "
                        "that `vislab train` wrote")
    return load_config(path)
