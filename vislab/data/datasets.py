"""The registry of named data sets and where their files are looked for.

Order of search for a data set's files: an explicit ``root``, ``$VISLAB_DATA/<name>``, the system
locations (e.g. Debian's ``dataset-fashion-mnist``), the download cache
(``$VISLAB_DATA`` or ``~/.cache/vislab``) and finally, when allowed, a download whose SHA-256 is
pinned here.  Every data set is returned in memory as uint8 images ``(N, C, H, W)`` and int64
labels: small enough to live as tensors, which is what makes batched augmentation fast.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vislab.data.download import download, sha256_file
from vislab.data.formats import read_cifar, read_image_folder
from vislab.data.idx import read_idx, type_code
from vislab.errors import UserError


@dataclass(frozen=True)
class RemoteFile:
    """A file of a data set: its name, where to download it, the SHA-256 of the file as served,
    and optionally the SHA-256 of its decompressed content (which survives re-compression, as in
    Debian's package, whose ``.gz`` files differ byte-wise from the upstream ones) and the file
    SHA-256s of known re-packagings (checked first: hashing a file is ~10x cheaper than
    decompressing it)."""
    name: str
    url: str
    sha256: str
    content_sha256: str | None = None
    repackaged_sha256: tuple[str, ...] = ()


@dataclass
class ArrayDataset:
    """A whole split in memory."""
    images: np.ndarray            # (N, C, H, W) uint8
    labels: np.ndarray            # (N,) int64
    classes: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise UserError(f"{self.source}: {len(self.images)} images but {len(self.labels)} labels; "
                            "the image and label files do not belong together")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise UserError(f"{self.source}: labels must lie in 0..{len(self.classes) - 1}, found "
                            f"{int(self.labels.min())}..{int(self.labels.max())}; the label file is "
                            "damaged or belongs to another data set")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    in_chans: int
    image_size: int
    files: tuple[RemoteFile, ...] = ()
    system_dirs: tuple[str, ...] = ()
    reader: Callable[[str, str], ArrayDataset] | None = None   # (folder, split) -> data
    description: str = ""
    needs_files: bool = True
    aliases: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# Data sets of this module, and those that family packages register when imported
# (``vislab.detection`` adds ``scene_patches``).
_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in _DATASETS:
        raise RuntimeError(f"data set {info.name!r} registered twice")
    _DATASETS[info.name] = info
    return info


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    if name not in _DATASETS:
        raise UserError(f"unknown data set {name!r}: choose one of {', '.join(list_datasets())} "
                        "(`vislab data list`)")
    return _DATASETS[name]


# --------------------------------------------------------------------------- readers

def _idx_reader(info_name: str, classes: tuple[str, ...]) -> Callable[[str, str], ArrayDataset]:
    def read(folder: str, split: str) -> ArrayDataset:
        prefix = "train" if split == "train" else "t10k"
        path = _find_file(folder, f"{prefix}-images-idx3-ubyte")
        x = read_idx(path)
        if x.dtype != np.uint8:      # e.g. int8 (0x09) would turn bright pixels negative
            raise UserError(f"{path} holds {x.dtype} pixels (IDX type 0x{type_code(x.dtype):02X}); an image "
                            "data set needs unsigned 8-bit images (IDX type 0x08): convert the file to uint8")
        y = read_idx(_find_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if x.ndim != 3 or y.ndim != 1:
            raise UserError(f"{folder}: expected images (N, H, W) and labels (N,), got {x.shape} "
                            f"and {y.shape}; the image and label files are swapped or damaged")
        if info_name.startswith("emnist"):   # EMNIST stores images transposed
            x = x.transpose(0, 2, 1)
        return ArrayDataset(np.ascontiguousarray(x[:, None]), y, list(classes), f"{info_name}/{split}")
    return read


def _find_file(folder: str, stem: str) -> str:
    for ext in (".gz", ""):
        p = os.path.join(folder, stem + ext)
        if os.path.exists(p):
            return p
    raise UserError(f"{stem}(.gz) is missing in {folder}; copy all four IDX files there")


def _cifar_reader(name: str, archive: str, extracted: str, label_key: str, classes: tuple[str, ...]):
    """Reads the ``archive`` (.tar.gz) in the folder, or the folder ``extracted`` from it."""
    def read(folder: str, split: str) -> ArrayDataset:
        path = os.path.join(folder, archive)
        if not os.path.exists(path):
            path = os.path.join(folder, extracted)
        x, y = read_cifar(path, split, label_key)
        return ArrayDataset(x, y, list(classes), f"{name}/{split}")
    return read


def _digits_reader(folder: str, split: str) -> ArrayDataset:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16), rescaled to 0..255; a fixed
    stratified 80/20 split gives train and test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    idx_train, idx_test = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0,
                                           stratify=d.target)
    idx = idx_train if split == "train" else idx_test
    return ArrayDataset(x[idx], d.target[idx].astype(np.int64), [str(i) for i in range(10)],
                        f"digits/{split}")


def _folder_reader(folder: str, split: str) -> ArrayDataset:
    sub = os.path.join(folder, split)
    root = sub if os.path.isdir(sub) else folder
    if split != "train" and not os.path.isdir(sub):
        raise UserError(f"{folder} has no '{split}' sub-folder; an image-folder data set needs "
                        f"{folder}/train/CLASS/*.png and {folder}/test/CLASS/*.png")
    classes = None
    if split != "train" and os.path.isdir(os.path.join(folder, "train")):
        classes = sorted(d for d in os.listdir(os.path.join(folder, "train"))
                         if os.path.isdir(os.path.join(folder, "train", d)))
    x, y, names = read_image_folder(root, channels=3, classes=classes)
    return ArrayDataset(x, y, names, f"folder:{root}")


# --------------------------------------------------------------------------- registry

_FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# repackaged_sha256: the files of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
register_dataset(DatasetInfo(
    "fashion_mnist", _FMNIST_CLASSES, 1, 28,
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", _FMNIST_URL + "train-images-idx3-ubyte.gz",
                   "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                   repackaged_sha256=("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",)),
        RemoteFile("train-labels-idx1-ubyte.gz", _FMNIST_URL + "train-labels-idx1-ubyte.gz",
                   "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                   repackaged_sha256=("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",)),
        RemoteFile("t10k-images-idx3-ubyte.gz", _FMNIST_URL + "t10k-images-idx3-ubyte.gz",
                   "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                   repackaged_sha256=("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",)),
        RemoteFile("t10k-labels-idx1-ubyte.gz", _FMNIST_URL + "t10k-labels-idx1-ubyte.gz",
                   "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                   repackaged_sha256=("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",)),
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    reader=_idx_reader("fashion_mnist", _FMNIST_CLASSES),
    description="Zalando's Fashion-MNIST: 60k/10k 28x28 grayscale clothing images, 10 classes"))

register_dataset(DatasetInfo(
    "mnist", tuple(str(i) for i in range(10)), 1, 28,
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", _MNIST_URL + "train-images-idx3-ubyte.gz",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        RemoteFile("train-labels-idx1-ubyte.gz", _MNIST_URL + "train-labels-idx1-ubyte.gz",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        RemoteFile("t10k-images-idx3-ubyte.gz", _MNIST_URL + "t10k-images-idx3-ubyte.gz",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
    system_dirs=("/usr/share/datasets/mnist",),
    reader=_idx_reader("mnist", tuple(str(i) for i in range(10))),
    description="LeCun's handwritten digits: 60k/10k 28x28 grayscale, 10 classes"))

_EMNIST_LETTERS = tuple("N/A" if i == 0 else chr(ord("a") + i - 1) for i in range(27))
register_dataset(DatasetInfo(
    "emnist_letters", _EMNIST_LETTERS, 1, 28,
    reader=_idx_reader("emnist_letters", _EMNIST_LETTERS),
    description="EMNIST letters in IDX layout (images stored transposed; labels 1..26). Files "
                "emnist-letters-{train,test}-*-idx?-ubyte renamed to the MNIST names; no pinned "
                "download (the upstream zip is 535 MB): place them in $VISLAB_DATA/emnist_letters"))

_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
register_dataset(DatasetInfo(
    "cifar10", _CIFAR10, 3, 32,
    files=(RemoteFile("cifar-10-python.tar.gz",
                      "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                      "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
    reader=_cifar_reader("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py", "labels", _CIFAR10),
    description="CIFAR-10: 50k/10k 32x32 colour images, 10 classes (python pickles, read safely)"))

register_dataset(DatasetInfo(
    "cifar100", tuple(f"class_{i}" for i in range(100)), 3, 32,
    files=(RemoteFile("cifar-100-python.tar.gz",
                      "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),),
    reader=_cifar_reader("cifar100", "cifar-100-python.tar.gz", "cifar-100-python", "fine_labels",
                         tuple(f"class_{i}" for i in range(100))),
    description="CIFAR-100: 50k/10k 32x32 colour images, 100 fine classes"))

register_dataset(DatasetInfo(
    "digits", tuple(str(i) for i in range(10)), 1, 8, reader=_digits_reader, needs_files=False,
    description="scikit-learn's 8x8 handwritten digits (1,797 images; ships with the package)"))

register_dataset(DatasetInfo(
    "folder", (), 3, 0, reader=_folder_reader,
    description="an image-folder tree: data.root=DIR with DIR/train/CLASS/*.png and DIR/test/CLASS/*.png"))


# --------------------------------------------------------------------------- lookup

def _cache_root() -> str:
    return os.environ.get("VISLAB_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "vislab")


def candidate_dirs(info: DatasetInfo, root: str | None = None) -> list[str]:
    """Where the files of ``info`` are looked for, in order."""
    dirs = [root] if root else []
    if os.environ.get("VISLAB_DATA"):
        dirs.append(os.path.join(os.environ["VISLAB_DATA"], info.name))
    dirs += list(info.system_dirs)
    dirs.append(os.path.join(_cache_root(), info.name))
    return dirs


def _has_files(folder: str, info: DatasetInfo) -> bool:
    if not os.path.isdir(folder):
        return False
    if not info.files:
        return any(os.scandir(folder))
    return all(os.path.exists(os.path.join(folder, f.name))
               or os.path.exists(os.path.join(folder, f.name.removesuffix(".gz"))) for f in info.files)


def locate(name: str, root: str | None = None, download_missing: bool = False) -> str | None:
    """The folder that holds the data set's files (downloading them when allowed), or ``None``
    for data sets that need no files."""
    info = get_dataset_info(name)
    if not info.needs_files:
        return None
    if root is not None and not os.path.isdir(root):
        raise UserError(f"data folder {root} does not exist; fix data.root or leave it unset")
    if root is not None:             # an explicit folder is the only place looked at
        if not _has_files(root, info):
            missing = [f.name for f in info.files if not os.path.exists(os.path.join(root, f.name))
                       and not os.path.exists(os.path.join(root, f.name.removesuffix(".gz")))]
            raise UserError(f"{', '.join(missing) or 'the data files'} missing in {root}; copy the "
                            f"data set's files there or leave data.root unset")
        return root
    dirs = candidate_dirs(info)
    for d in dirs:
        if _has_files(d, info):
            return d
    if download_missing and info.files:
        target = os.path.join(_cache_root(), info.name)
        for f in info.files:
            download(f.url, os.path.join(target, f.name), f.sha256)
        return target
    hint = {"fashion_mnist": "install it with `apt-get install dataset-fashion-mnist`, or "}.get(name, "")
    raise UserError(f"data set {name!r} not found (looked in {', '.join(dirs)}); {hint}put its files "
                    f"in $VISLAB_DATA/{name}" + (" or fetch them with --set data.download=true"
                                                 if info.files else ""))


def load_split(name: str, split: str, root: str | None = None,
               download_missing: bool = False) -> ArrayDataset:
    """Load ``split`` ('train' or 'test') of a registered data set into memory."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    info = get_dataset_info(name)
    folder = locate(name, root, download_missing)
    if info.name == "folder" and folder is None:
        raise UserError("data set 'folder' needs data.root=DIR")
    return info.reader(folder or "", split)


def check_dataset(name: str, root: str | None = None) -> dict:
    """Where a data set was found, its counts, and the checksum of every file (file and content)."""
    info = get_dataset_info(name)
    folder = locate(name, root)
    report: dict = {"name": name, "folder": folder, "files": []}
    for f in info.files if folder else ():
        path = _pinned_path(folder, f)
        entry = {"file": path, "sha256": _digest(path)}
        entry["sha256_ok"] = entry["sha256"] in (f.sha256, *f.repackaged_sha256)
        entry["repackaged"] = entry["sha256"] in f.repackaged_sha256
        if f.content_sha256:
            entry["content_sha256"] = _digest(path, content=True)
            entry["content_ok"] = entry["content_sha256"] == f.content_sha256
        entry["ok"] = entry["sha256_ok"] or entry.get("content_ok", False)
        report["files"].append(entry)
    for split in ("train", "test"):
        d = info.reader(folder or "", split)
        report[split] = {"count": int(len(d.labels)), "shape": list(d.images.shape[1:]),
                         "per_class": np.bincount(d.labels, minlength=len(d.classes)).tolist()}
    report["ok"] = all(e["ok"] for e in report["files"])
    return report


def checksum_warning(name: str, root: str | None = None) -> str | None:
    """One line naming the files of data set ``name`` that match neither their pinned SHA-256 nor
    their pinned content SHA-256, or ``None`` when all match, none is pinned or the files are not
    found (loading them reports that).  Cheap enough for every training start: the digests are
    cached in memory per (path, size, mtime)."""
    info = get_dataset_info(name)
    if not info.files:
        return None
    try:
        folder = locate(name, root)
    except UserError:
        return None
    bad = []
    for f in info.files:
        path = _pinned_path(folder, f)
        if not os.path.exists(path):       # loading names the missing file
            continue
        if _digest(path) not in (f.sha256, *f.repackaged_sha256) and (
                f.content_sha256 is None or _digest(path, content=True) != f.content_sha256):
            bad.append(os.path.basename(path))
    if not bad:
        return None
    check = f"vislab data check {name}" + (f" --root {shlex.quote(root)}" if root else "")
    return (f"{name}: {', '.join(bad)} in {folder} {'does' if len(bad) == 1 else 'do'} not match the "
            f"pinned SHA-256 (damaged or another version of the data); `{check}` shows details")


def _pinned_path(folder: str, f: RemoteFile) -> str:
    """The file of ``f`` in ``folder``: as served, or decompressed (without ``.gz``)."""
    path = os.path.join(folder, f.name)
    return path if os.path.exists(path) else path.removesuffix(".gz")


_DIGESTS: dict[tuple, str] = {}


def _digest(path: str, content: bool = False) -> str:
    """SHA-256 of the file, or of its decompressed content, cached per (path, inode, size, mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, content)
    if key not in _DIGESTS:
        _DIGESTS[key] = _content_sha256(path) if content else sha256_file(path)
    return _DIGESTS[key]


def _content_sha256(path: str) -> str:
    """SHA-256 of the decompressed content; a corrupt gzip has none ("": matches no pin)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error):
            return ""
    return hashlib.sha256(raw).hexdigest()
