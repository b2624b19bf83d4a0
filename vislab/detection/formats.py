"""Detection annotations on disk: COCO JSON, Pascal VOC XML and YOLO txt, read and written.

In memory a data set is a :class:`DetectionSet`: category names and, per image, boxes
``(x1, y1, x2, y2)`` in pixels (float32), labels indexing the category names (int64) and an
``iscrowd`` flag (COCO's crowd regions, VOC's *difficult* objects: evaluation ignores both).

Coordinate conventions of the files: COCO ``[x, y, width, height]`` in continuous pixels; VOC
1-based pixel indices, ``xmin = x1 + 1``, ``xmax = x2`` (as Detectron2 reads them); YOLO
``class cx cy w h`` normalised by the image size.  Reading checks every box (inside the image,
no negative size, a known category) and raises :class:`UserError` naming the file and the box.

COCO files are parsed once, by :func:`parse_coco`, into flat arrays; :func:`coco_to_dataset`
makes a :class:`DetectionSet` of them, :func:`coco_evaluate` and :func:`evaluate_coco_files`
(``vislab eval-detections``) evaluate them with :mod:`vislab.metrics.detection`.  The COCO
reading and evaluation path does not import torch (nor does this module): only
:class:`ImageAnnotations` builds tensors, and imports torch when it does.
"""

from __future__ import annotations

import json
import numbers
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vislab.errors import UserError
from vislab.io import IMAGE_EXTENSIONS, atomic_write_text, image_size
from vislab.metrics.detection import (
    BoxTable,
    CocoEvaluation,
    evaluate_tables,
    voc_evaluate_tables,
)
from vislab.report.plots import plot_pr_curves

if TYPE_CHECKING:
    from torch import Tensor

BOUNDS_TOLERANCE = 1e-3          # pixels a box may stick out of its image (float noise), then clipped


@dataclass
class ImageAnnotations:
    """The ground truth of one image.

    ``masks`` (optional, ``(N, H, W)`` bool) and ``area`` (optional, ``(N,)`` float32; COCO's
    area used for the small/medium/large ranges, by default the mask or box area) travel to COCO
    files.  Boxes, labels, flags and areas may come as arrays, lists or tensors: they are stored
    as tensors.
    """
    file_name: str
    width: int
    height: int
    boxes: Tensor
    labels: Tensor
    iscrowd: Tensor | None = None
    area: Tensor | None = None
    masks: Tensor | None = None
    image_id: int | None = None

    def __post_init__(self) -> None:
        import torch
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        n = len(self.boxes)
        self.iscrowd = (torch.zeros(n, dtype=torch.bool) if self.iscrowd is None
                        else torch.as_tensor(self.iscrowd, dtype=torch.bool).reshape(-1))
        if self.area is not None:
            self.area = torch.as_tensor(self.area, dtype=torch.float32).reshape(-1)
        if not len(self.labels) == len(self.iscrowd) == n:
            raise ValueError(f"{self.file_name}: {n} boxes, {len(self.labels)} labels and "
                             f"{len(self.iscrowd)} iscrowd flags")
        if self.area is not None and len(self.area) != n:
            raise ValueError(f"{self.file_name}: {n} boxes but {len(self.area)} areas")

    def target(self) -> dict[str, Tensor]:
        """The dict that detectors and :func:`vislab.metrics.detection.evaluate_detections` take."""
        out = {"boxes": self.boxes, "labels": self.labels, "iscrowd": self.iscrowd}
        if self.area is not None:
            out["area"] = self.area
        return out


@dataclass
class DetectionSet:
    """Category names (``labels`` index them) and the annotations of each image; for COCO
    files also the category ids (default ``1..K``)."""
    categories: list[str]
    images: list[ImageAnnotations]
    category_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.categories) + 1))
        if len(self.category_ids) != len(self.categories):
            raise ValueError(f"{len(self.categories)} category names but {len(self.category_ids)} ids")

    def check(self, source: str) -> None:
        """Raise :class:`UserError` for a box outside its image, a negative size or an unknown
        label; clip boxes that stick out by float noise only."""
        k = len(self.categories)
        for im in self.images:
            where = f"{source}: image {im.file_name}"
            b = im.boxes
            bad = ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).nonzero().flatten()
            if len(bad):
                raise UserError(f"{where}: box {b[bad[0]].tolist()} has a negative width or height; "
                                "corners must come as (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")
            tol = BOUNDS_TOLERANCE
            out = ((b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > im.width + tol)
                   | (b[:, 3] > im.height + tol)).nonzero().flatten()
            if len(out):
                raise UserError(f"{where}: box {b[out[0]].tolist()} lies outside the "
                                f"{im.width}x{im.height} image; fix the annotation or clip it to the image")
            b[:, 0::2] = b[:, 0::2].clamp(0, im.width)
            b[:, 1::2] = b[:, 1::2].clamp(0, im.height)
            unknown = ((im.labels < 0) | (im.labels >= k)).nonzero().flatten()
            if len(unknown):
                raise UserError(f"{where}: label {int(im.labels[unknown[0]])} is not one of the "
                                f"{k} categories; add the category or fix the label")


def _num(v: float) -> float | int:
    """A float32 coordinate for a text file: the shortest decimal that reads back the same."""
    f = float(str(np.float32(v)))
    return int(f) if f.is_integer() else f


def _exact(v: float) -> float | int:
    """A float64 sum or difference of float32 coordinates, written in full: reading it back and
    undoing the operation gives the float32 coordinate again."""
    return int(v) if float(v).is_integer() else v


# --------------------------------------------------------------------------- COCO

@dataclass
class CocoGroundTruth:
    """A COCO ground-truth dict as :func:`parse_coco` reads it, for every use: the image records
    and the categories, and all annotations in one :class:`BoxTable` (``[x, y, w, h]`` float64
    as in the file, annotated area, crowd flag; ``table.image`` indexes ``images``,
    ``table.category`` indexes ``category_ids`` and ``categories``)."""
    images: list[Mapping]
    category_ids: list
    categories: list[str]
    table: BoxTable

    def by_id(self) -> CocoGroundTruth:
        """The same with images and categories sorted by id, as pycocotools orders them: the
        order in which evaluation lists categories and breaks score ties between images."""
        try:
            im = sorted(range(len(self.images)), key=lambda i: self.images[i]["id"])
            cat = sorted(range(len(self.category_ids)), key=lambda k: self.category_ids[k])
        except TypeError:
            raise UserError("COCO ids must be all numbers (or all strings) to be sorted as "
                            "pycocotools sorts them; fix the image and category ids") from None
        new_image, new_cat = np.argsort(np.array(im, np.int64)), np.argsort(np.array(cat, np.int64))
        t = self.table
        table = BoxTable(new_image[t.image], new_cat[t.category], t.boxes, t.area, iscrowd=t.iscrowd)
        return CocoGroundTruth([self.images[i] for i in im], [self.category_ids[k] for k in cat],
                               [self.categories[k] for k in cat], table)


def parse_coco(data: Any, source: str = "<dict>") -> CocoGroundTruth:
    """Check a COCO ground-truth dict and read its boxes, areas (default: box area) and crowd
    flags, in the file's order (masks are left to the segmentation module).  Images need only
    an ``id`` here, categories an ``id`` (the name defaults to it); ``source`` names the file in
    errors."""
    if isinstance(data, (list, tuple)):
        raise UserError(f"{source} is a list, as COCO results are, not COCO ground truth; did you "
                        "swap the ground truth and the predictions?")
    if not isinstance(data, Mapping) or not all(k in data for k in ("images", "annotations", "categories")):
        raise UserError(f"{source} is not COCO ground truth: it needs the keys 'images', "
                        "'annotations' and 'categories'")
    try:
        images = list(data["images"])
        image_index = {im["id"]: n for n, im in enumerate(images)}
        cats = [(c["id"], str(c.get("name", c["id"]))) for c in data["categories"]]
    except (KeyError, TypeError) as e:
        raise UserError(f"{source}: every image and every category needs an 'id' (missing {e}); "
                        "fix the file") from None
    cat_index = {c: k for k, (c, _) in enumerate(cats)}
    for what, n, index in (("images", len(images), image_index), ("categories", len(cats), cat_index)):
        if len(index) != n:
            raise UserError(f"{source}: two {what} share an id; give each its own id")
    img, cat, boxes, area, crowd = [], [], [], [], []
    for n, a in enumerate(data["annotations"]):
        if not isinstance(a, Mapping):
            raise UserError(f"{source}: annotation {n} is {a!r}, not an object with 'image_id', "
                            "'category_id' and 'bbox'; fix the file")
        if a.get("image_id") not in image_index:
            raise UserError(f"{source}: annotation {n} refers to image {a.get('image_id')!r}, which is "
                            "not among the file's images; add the image or drop the annotation")
        if a.get("category_id") not in cat_index:
            raise UserError(f"{source}: annotation {n} has category {a.get('category_id')!r}, which is "
                            "not among the file's categories; add it or fix the annotation")
        b = a.get("bbox")
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(isinstance(v, numbers.Real) for v in b):
            raise UserError(f"{source}: annotation {n}: 'bbox' must be [x, y, width, height] "
                            f"(numbers), got {b!r}")
        if b[2] < 0 or b[3] < 0:
            raise UserError(f"{source}: annotation {n} has a negative size {b}; COCO boxes are "
                            "[x, y, width, height], not corners")
        img.append(image_index[a["image_id"]])
        cat.append(cat_index[a["category_id"]])
        boxes.append(b)
        area.append(a.get("area", b[2] * b[3]))
        crowd.append(bool(a.get("iscrowd", 0)))
    try:
        area_array = np.asarray(area, np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{source}: an annotation's 'area' is not a number; fix or drop it") from None
    table = BoxTable(np.asarray(img, np.int64), np.asarray(cat, np.int64),
                     np.asarray(boxes, np.float64).reshape(-1, 4), area_array, iscrowd=np.asarray(crowd, bool))
    return CocoGroundTruth(images, [c for c, _ in cats], [name for _, name in cats], table)


def coco_results(results: Any, gt: CocoGroundTruth, source: str = "<results>") -> BoxTable:
    """Detections in COCO's results format, a list of ``{image_id, category_id, bbox, score}``,
    as a :class:`BoxTable` whose image and category indices are ``gt``'s."""
    if not isinstance(results, (list, tuple)):
        raise UserError(f"{source}: COCO results must be a list of {{image_id, category_id, bbox, score}}; "
                        "did you pass a ground-truth file as the predictions?")
    image_index = {im["id"]: n for n, im in enumerate(gt.images)}
    cat_index = {c: k for k, c in enumerate(gt.category_ids)}
    n = len(results)
    try:
        img = np.fromiter((image_index[r["image_id"]] for r in results), np.int64, n)
        cat = np.fromiter((cat_index[r["category_id"]] for r in results), np.int64, n)
        boxes = np.asarray([r["bbox"] for r in results], np.float64).reshape(n, 4)
        score = np.fromiter((r["score"] for r in results), np.float64, n)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{source}: {_bad_result(results, image_index, cat_index)}") from None
    return BoxTable(img, cat, boxes, boxes[:, 2] * boxes[:, 3], score=score)


def _bad_result(results: Sequence, image_index: Mapping, cat_index: Mapping) -> str:
    for n, r in enumerate(results):
        if not isinstance(r, Mapping) or not all(k in r for k in ("image_id", "category_id", "bbox", "score")):
            return f"result {n} must have 'image_id', 'category_id', 'bbox' and 'score', got {r!r}"
        if r["image_id"] not in image_index:
            return (f"result {n} is for image {r['image_id']!r}, which the ground truth does not "
                    "have; the results belong to another data set or split")
        if r["category_id"] not in cat_index:
            return (f"result {n} has category {r['category_id']!r}, which the ground truth does "
                    "not have; map the model's labels to the file's category ids")
        if not isinstance(r["bbox"], (list, tuple)) or len(r["bbox"]) != 4:
            return f"result {n}: 'bbox' must be [x, y, width, height], got {r['bbox']!r}"
    return "the results are not a list of {image_id, category_id, bbox, score} with numbers"


def _read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise UserError(f"cannot read the {what} {os.fspath(path)}: {e.strerror}; check the path") from None
    except json.JSONDecodeError as e:
        raise UserError(f"the {what} {os.fspath(path)} is not valid JSON ({e}); fix or regenerate it") from None


def coco_to_dataset(data: Any, source: str = "<dict>") -> DetectionSet:
    """A :class:`DetectionSet` from a COCO dict: boxes, crowd flags, areas, and labels indexing the
    categories in the file's order (masks are not read).  Images need ``file_name``, ``width``
    and ``height`` here."""
    gt = parse_coco(data, source)
    t = gt.table
    xyxy = np.concatenate((t.boxes[:, :2], t.boxes[:, :2] + t.boxes[:, 2:]), axis=1)
    order = np.argsort(t.image, kind="stable")                   # file order within an image
    bounds = np.searchsorted(t.image[order], np.arange(len(gt.images) + 1))
    out = []
    for i, im in enumerate(gt.images):
        try:
            file_name, width, height = im["file_name"], int(im["width"]), int(im["height"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: image {im['id']!r} needs 'file_name', and 'width' and 'height' "
                            "as numbers; fix the file") from None
        sel = order[bounds[i]:bounds[i + 1]]
        out.append(ImageAnnotations(file_name, width, height, xyxy[sel], t.category[sel], t.iscrowd[sel],
                                    t.area[sel], image_id=im["id"]))
    ds = DetectionSet(gt.categories, out, gt.category_ids)
    ds.check(source)
    return ds


def read_coco(path: str | os.PathLike) -> DetectionSet:
    """Read a COCO annotation file."""
    return coco_to_dataset(_read_json(path, "COCO file"), os.fspath(path))


def read_coco_for_evaluation(gt: Any, results: Any) -> tuple[CocoGroundTruth, BoxTable]:
    """Ground truth (a COCO dict or its JSON file) and detections (a results list or its JSON
    file) read for :mod:`vislab.metrics.detection`: images and categories sorted by id, as
    pycocotools evaluates them."""
    if isinstance(gt, (str, os.PathLike)):
        gt, gt_source = _read_json(gt, "ground-truth file"), os.fspath(gt)
    else:
        gt_source = "<ground truth>"
    if isinstance(results, (str, os.PathLike)):
        results, results_source = _read_json(results, "results file"), os.fspath(results)
    else:
        results_source = "<results>"
    truth = parse_coco(gt, gt_source).by_id()
    return truth, coco_results(results, truth, results_source)


def coco_evaluate(gt: Any, results: Any) -> CocoEvaluation:
    """COCO box evaluation of ``results`` (a results list or its JSON file) against ``gt`` (a
    COCO dict or its JSON file): pycocotools' numbers."""
    return _coco_evaluation(*read_coco_for_evaluation(gt, results))


def _coco_evaluation(truth: CocoGroundTruth, dets: BoxTable) -> CocoEvaluation:
    precision, recall = evaluate_tables(truth.table, dets, len(truth.images), len(truth.category_ids))
    return CocoEvaluation(precision, recall, truth.categories)


def evaluate_coco_files(gt: str | os.PathLike, results: str | os.PathLike, per_category: bool = False,
                        voc: bool = False, plot: str | None = None, json_path: str | None = None,
                        iou_type: str = "bbox") -> tuple[CocoEvaluation, dict]:
    """``vislab eval-detections``: COCO evaluation of a results file against a ground-truth file.

    Returns the evaluation and the report: the twelve numbers, with ``per_category`` AP and
    AP50 per category, with ``voc`` Pascal VOC AP at IoU 0.5 (all points and 11-point, NaN
    written as null per category).  ``plot`` writes the precision-recall curves at IoU 0.5 as a
    PNG, ``json_path`` the report as JSON.
    """
    if iou_type != "bbox":
        raise UserError(f"iou_type {iou_type!r}: only 'bbox' for now; mask IoU comes with the segmentation module")
    truth, dets = read_coco_for_evaluation(gt, results)
    ev, n, names = _coco_evaluation(truth, dets), len(truth.images), truth.categories
    report: dict = {"gt": os.fspath(gt), "pred": os.fspath(results), "iou_type": iou_type, "coco": ev.as_dict()}
    if per_category:
        report["per_category"] = ev.per_category()
    if voc:
        all_points = voc_evaluate_tables(truth.table, dets, n, names)
        eleven = voc_evaluate_tables(truth.table, dets, n, names, use_07_metric=True)
        report["voc"] = {"mAP": all_points.mean_ap, "mAP_07": eleven.mean_ap,
                         "per_category": {c: {"AP": _finite(a), "AP_07": _finite(b)}
                                          for c, a, b in zip(names, all_points.ap, eleven.ap)}}
    if plot:
        plot_pr_curves(ev.pr_curves(0.5), plot, "precision-recall, IoU 0.5")
    if json_path:
        atomic_write_text(json_path, json.dumps(report, indent=2))
    return ev, report


def _finite(x: float) -> float | None:
    return None if x != x else float(x)


def rle_encode(mask: np.ndarray) -> dict:
    """COCO's uncompressed run-length encoding of a ``(H, W)`` mask: run lengths of 0s and 1s
    in column-major order, starting with 0s."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.r_[0, change, flat.size])
    if flat.size and flat[0]:
        runs = np.r_[0, runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs.tolist()}


def dataset_to_coco(ds: DetectionSet) -> dict:
    """A COCO dict; image ids default to ``1..N`` and annotation ids run from 1."""
    ds.check("dataset")
    images, anns = [], []
    for n, im in enumerate(ds.images):
        image_id = im.image_id if im.image_id is not None else n + 1
        images.append({"id": image_id, "file_name": im.file_name, "width": im.width, "height": im.height})
        if im.area is not None:
            areas = im.area.tolist()
        elif im.masks is not None:
            areas = im.masks.flatten(1).sum(1).tolist()
        else:
            areas = ((im.boxes[:, 2] - im.boxes[:, 0]) * (im.boxes[:, 3] - im.boxes[:, 1])).tolist()
        for j in range(len(im.boxes)):
            x1, y1, x2, y2 = im.boxes[j].tolist()
            ann = {"id": len(anns) + 1, "image_id": image_id,
                   "category_id": ds.category_ids[int(im.labels[j])],
                   "bbox": [_num(x1), _num(y1), _exact(x2 - x1), _exact(y2 - y1)],
                   "area": _num(areas[j]), "iscrowd": int(im.iscrowd[j])}
            if im.masks is not None:
                ann["segmentation"] = rle_encode(im.masks[j].cpu().numpy())
            anns.append(ann)
    cats = [{"id": i, "name": c} for i, c in zip(ds.category_ids, ds.categories)]
    return {"images": images, "annotations": anns, "categories": cats}


def write_coco(ds: DetectionSet, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write a COCO annotation file (atomically); ``extra`` keys are added at the top level."""
    atomic_write_text(os.fspath(path), json.dumps(dataset_to_coco(ds) | (extra or {})))


# --------------------------------------------------------------------------- Pascal VOC

def read_voc(folder: str | os.PathLike, categories: Sequence[str] | None = None) -> DetectionSet:
    """Read every ``*.xml`` of a VOC ``Annotations`` folder (sorted by name).  ``categories``
    fixes the names and their order; by default the sorted names found in the files."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError(f"{folder} is not a folder; give the VOC 'Annotations' folder")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".xml"))
    parsed = [_parse_voc(os.path.join(folder, f)) for f in files]
    names = list(categories) if categories is not None else sorted({o[0] for p in parsed for o in p[3]})
    index = {c: i for i, c in enumerate(names)}
    images = []
    for path, (file_name, width, height, objects) in zip(files, parsed):
        for name, *_ in objects:
            if name not in index:
                raise UserError(f"{os.path.join(folder, path)}: unknown category {name!r}; add it to "
                                f"the category list ({', '.join(names)}) or fix the file")
        images.append(ImageAnnotations(file_name, width, height, [o[2] for o in objects],
                                       [index[o[0]] for o in objects], [o[1] for o in objects]))
    ds = DetectionSet(names, images)
    ds.check(folder)
    return ds


def _parse_voc(path: str) -> tuple[str, int, int, list]:
    try:
        root = ET.parse(path).getroot()
        file_name = root.findtext("filename", "")
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
        objects = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            objects.append((obj.findtext("name", "").strip(), obj.findtext("difficult", "0").strip() == "1",
                            [xmin - 1, ymin - 1, xmax, ymax]))
    except ET.ParseError as e:
        raise UserError(f"{path} is not valid XML ({e}); fix or regenerate it") from None
    except (TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: a VOC file needs size/width, size/height and, per object, name and "
                        "bndbox/xmin, ymin, xmax, ymax as numbers") from None
    return file_name, width, height, objects


def write_voc(ds: DetectionSet, folder: str | os.PathLike) -> None:
    """One VOC XML per image, named after the image file."""
    ds.check("dataset")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for im in ds.images:
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = im.file_name
        size = ET.SubElement(root, "size")
        for k, v in (("width", im.width), ("height", im.height), ("depth", 3)):
            ET.SubElement(size, k).text = str(v)
        for box, label, crowd in zip(im.boxes.tolist(), im.labels.tolist(), im.iscrowd.tolist()):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = ds.categories[label]
            ET.SubElement(obj, "difficult").text = str(int(crowd))
            bb = ET.SubElement(obj, "bndbox")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (box[0] + 1, box[1] + 1, box[2], box[3])):
                ET.SubElement(bb, k).text = str(_num(v) if k in ("xmax", "ymax") else _exact(v))
        ET.indent(root)
        atomic_write_text(os.path.join(folder, _stem(im.file_name) + ".xml"), ET.tostring(root, encoding="unicode"))


# --------------------------------------------------------------------------- YOLO

def read_yolo(label_dir: str | os.PathLike, image_dir: str | os.PathLike,
              categories: Sequence[str] | None = None) -> DetectionSet:
    """Read YOLO labels: for every image in ``image_dir`` (sorted), ``label_dir/STEM.txt`` with
    lines ``class cx cy w h`` normalised to ``[0, 1]`` (no file: no objects).  Category names
    come from ``categories`` or ``label_dir/classes.txt``; image sizes from the image files."""
    label_dir, image_dir = os.fspath(label_dir), os.fspath(image_dir)
    if categories is None:
        names_file = os.path.join(label_dir, "classes.txt")
        if not os.path.exists(names_file):
            raise UserError(f"YOLO labels in {label_dir} need category names: pass them or put "
                            "one name per line in classes.txt there")
        with open(names_file) as f:
            categories = [line.strip() for line in f if line.strip()]
    if not os.path.isdir(image_dir):
        raise UserError(f"{image_dir} is not a folder; give the folder of the images")
    images = []
    for file_name in sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS)):
        width, height = image_size(os.path.join(image_dir, file_name))
        path = os.path.join(label_dir, _stem(file_name) + ".txt")
        rows = _read_yolo_rows(path, len(categories)) if os.path.exists(path) else np.zeros((0, 5))
        cx, cy, w, h = (rows[:, i] for i in range(1, 5))
        boxes = np.stack(((cx - w / 2) * width, (cy - h / 2) * height,
                          (cx + w / 2) * width, (cy + h / 2) * height), axis=1)
        images.append(ImageAnnotations(file_name, width, height, boxes, rows[:, 0].astype(np.int64)))
    ds = DetectionSet(list(categories), images)
    ds.check(label_dir)
    return ds


def _read_yolo_rows(path: str, num_categories: int) -> np.ndarray:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 5:
                    raise ValueError
                cls, vals = int(parts[0]), [float(p) for p in parts[1:]]
            except ValueError:
                raise UserError(f"{path}:{n}: a YOLO line is 'class cx cy w h' (class an integer), "
                                f"got {line.strip()!r}") from None
            if not 0 <= cls < num_categories:
                raise UserError(f"{path}:{n}: class {cls} is not one of the {num_categories} "
                                "categories; fix the label or the category list")
            if vals[2] < 0 or vals[3] < 0:
                raise UserError(f"{path}:{n}: negative width or height {vals[2:]}; fix the label")
            rows.append([cls, *vals])
    return np.asarray(rows, np.float64).reshape(-1, 5)


def write_yolo(ds: DetectionSet, label_dir: str | os.PathLike) -> None:
    """One ``STEM.txt`` per image plus ``classes.txt``.  YOLO cannot mark crowd/difficult
    objects, so a data set with any refuses to be written."""
    ds.check("dataset")
    label_dir = os.fspath(label_dir)
    os.makedirs(label_dir, exist_ok=True)
    for im in ds.images:
        if bool(im.iscrowd.any()):
            raise UserError(f"{im.file_name} has crowd/difficult objects, which YOLO files cannot "
                            "mark; drop them first (keep boxes where iscrowd is False)")
        b = im.boxes.double()
        cx, cy = (b[:, 0] + b[:, 2]) / 2 / im.width, (b[:, 1] + b[:, 3]) / 2 / im.height
        w, h = (b[:, 2] - b[:, 0]) / im.width, (b[:, 3] - b[:, 1]) / im.height
        lines = [f"{c} {x!r} {y!r} {ww!r} {hh!r}" for c, x, y, ww, hh in
                 zip(im.labels.tolist(), cx.tolist(), cy.tolist(), w.tolist(), h.tolist())]
        atomic_write_text(os.path.join(label_dir, _stem(im.file_name) + ".txt"), "".join(s + "\n" for s in lines))
    atomic_write_text(os.path.join(label_dir, "classes.txt"), "".join(c + "\n" for c in ds.categories))


def _stem(file_name: str) -> str:
    return os.path.splitext(os.path.basename(file_name))[0]
