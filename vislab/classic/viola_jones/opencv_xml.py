"""Read (and write) OpenCV's Haar cascade XML files.

Both layouts OpenCV 4 loads are read: the current ``opencv-cascade-classifier`` one (stumps
or trees in ``internalNodes``/``leafValues``) and the old ``opencv-haar-classifier`` one
(``trees`` of nodes with ``left_val``/``left_node``), which OpenCV converts on load.  As
OpenCV does, the old layout's ``parent``/``next`` links are ignored: the stages run in file
order.  LBP and HOG cascades are refused: vislab evaluates Haar features only.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from vislab.classic.viola_jones.cascade import Cascade
from vislab.classic.viola_jones.haar import HaarFeatures
from vislab.errors import UserError
from vislab.io import atomic_write_text


def opencv_cascade_dir() -> Path:
    """Folder of the cascades that ship with the opencv-python wheel (``cv2/data``)."""
    import cv2
    return Path(cv2.data.haarcascades)


def opencv_cascade_names() -> list[str]:
    return sorted(p.name for p in opencv_cascade_dir().glob("haarcascade_*.xml"))


def resolve_cascade_path(name: str | os.PathLike) -> Path:
    """A path, or the name of a cascade shipped with OpenCV (``frontalface_default`` works too)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".xml")
    for candidate in (stem, f"haarcascade_{stem}"):
        shipped = opencv_cascade_dir() / f"{candidate}.xml"
        if shipped.is_file():
            return shipped
    raise UserError(f"cascade {str(name)!r} is neither a file nor one of OpenCV's cascades; "
                    f"use a path or one of: {', '.join(n.removesuffix('.xml') for n in opencv_cascade_names())}")


def _numbers(node: ET.Element | None, what: str) -> list[float]:
    if node is None or node.text is None:
        raise ValueError(f"missing {what}")
    return [float(v) for v in node.text.split()]


def _feature(rects_node: ET.Element, tilted_node: ET.Element | None) -> tuple[np.ndarray, np.ndarray, bool]:
    rects = np.zeros((3, 4), np.int32)
    weights = np.zeros(3, np.float32)
    items = list(rects_node)
    if not 1 <= len(items) <= 3:
        raise ValueError(f"a Haar feature has {len(items)} rectangles (1 to 3 allowed)")
    for k, r in enumerate(items):
        v = _numbers(r, "rectangle")
        if len(v) != 5:
            raise ValueError("a rectangle needs x y w h weight")
        rects[k] = v[:4]
        weights[k] = v[4]
    if len(items) == 3 and abs(weights[2]) < np.finfo(np.float32).eps:   # OpenCV drops a zero third rect
        weights[2] = 0
        rects[2] = 0
    tilted = tilted_node is not None and tilted_node.text is not None and int(tilted_node.text) != 0
    return rects, weights, tilted


def load_opencv_cascade(name: str | os.PathLike) -> Cascade:
    """Read an OpenCV Haar cascade (a path or a shipped name such as ``"frontalface_default"``)."""
    path = resolve_cascade_path(name)
    try:
        root = ET.parse(path).getroot()
        top = next(iter(root), None)
        if top is None:
            raise ValueError("empty file")
        if top.get("type_id") == "opencv-haar-classifier" or top.find("size") is not None:
            return _read_old(top)
        return _read_new(top)
    except UserError:
        raise
    except (ET.ParseError, ValueError, IndexError, StopIteration) as e:
        raise UserError(f"{path} is not an OpenCV Haar cascade ({e}); pass a haarcascade_*.xml file") from e


def _read_new(top: ET.Element) -> Cascade:
    if (top.findtext("stageType") or "").strip() != "BOOST":
        raise ValueError("stageType must be BOOST")
    ftype = (top.findtext("featureType") or "").strip()
    if ftype != "HAAR":
        raise UserError(f"{ftype or 'this'} cascades are not supported, only HAAR ones (vislab has no LBP/HOG "
                        "features); pick a haarcascade_*.xml file")
    window = (int(top.findtext("width")), int(top.findtext("height")))
    if int(top.findtext("featureParams/maxCatCount") or 0) != 0:
        raise ValueError("categorical features (maxCatCount > 0) are not Haar features")
    trees, stage_sizes, stage_thresholds = [], [], []
    for stage in top.find("stages"):
        stage_thresholds.append(float(stage.findtext("stageThreshold")))
        weak = list(stage.find("weakClassifiers"))
        stage_sizes.append(len(weak))
        for tree in weak:
            nodes = _numbers(tree.find("internalNodes"), "internalNodes")
            leaves = _numbers(tree.find("leafValues"), "leafValues")
            if len(nodes) % 4 or len(leaves) != len(nodes) // 4 + 1:
                raise ValueError("a tree needs 4 numbers per node and one leaf more than nodes")
            nodes = np.array(nodes).reshape(-1, 4)          # left, right, feature, threshold
            trees.append((nodes[:, 2].astype(np.int64), nodes[:, 3], nodes[:, 0].astype(np.int64),
                          nodes[:, 1].astype(np.int64), np.array(leaves)))
    feats = [_feature(f.find("rects"), f.find("tilted")) for f in top.find("features")]
    return _assemble(window, feats, trees, stage_sizes, stage_thresholds)


def _read_old(top: ET.Element) -> Cascade:
    size = [int(v) for v in top.findtext("size").split()]
    window = (size[0], size[1])
    feats, trees, stage_sizes, stage_thresholds = [], [], [], []
    for stage in top.find("stages"):
        stage_thresholds.append(float(stage.findtext("stage_threshold")))
        weak = list(stage.find("trees"))
        stage_sizes.append(len(weak))
        for tree in weak:
            fidx, thr, left, right, leaves = [], [], [], [], []
            for node in tree:
                fidx.append(len(feats))
                feats.append(_feature(node.find("feature/rects"), node.find("feature/tilted")))
                thr.append(float(node.findtext("threshold")))
                for side, out in (("left", left), ("right", right)):
                    val = node.find(f"{side}_val")
                    if val is not None:
                        out.append(-len(leaves))
                        leaves.append(float(val.text))
                    else:
                        out.append(int(node.findtext(f"{side}_node")))
            trees.append((np.array(fidx), np.array(thr), np.array(left), np.array(right), np.array(leaves)))
    return _assemble(window, feats, trees, stage_sizes, stage_thresholds)


def _assemble(window, feats, trees, stage_sizes, stage_thresholds) -> Cascade:
    features = HaarFeatures(np.array([f[0] for f in feats], np.int32).reshape(-1, 3, 4),
                            np.array([f[1] for f in feats], np.float32).reshape(-1, 3),
                            np.array([f[2] for f in feats], bool))
    bad = np.nonzero(~features.fits(window))[0]
    if len(bad):
        raise ValueError(f"feature {bad[0]} does not fit in the {window[0]}x{window[1]} window")
    m = max(len(t[0]) for t in trees)
    t = len(trees)
    node_feature = np.zeros((t, m), np.int32)
    node_threshold = np.zeros((t, m), np.float32)
    node_left = np.zeros((t, m), np.int32)
    node_right = np.zeros((t, m), np.int32)
    leaves = np.zeros((t, m + 1), np.float32)
    for i, (f, thr, left, right, lv) in enumerate(trees):
        k = len(f)
        if len(lv) != k + 1 or np.any(np.r_[left, right] >= k) or np.any(-np.r_[left, right] > k):
            raise ValueError(f"weak tree {i} has inconsistent nodes and leaves")
        node_feature[i, :k], node_threshold[i, :k] = f, thr
        node_left[i, :k], node_right[i, :k], leaves[i, :k + 1] = left, right, lv
    return Cascade(window=tuple(window), features=features, node_feature=node_feature,
                   node_threshold=node_threshold, node_left=node_left, node_right=node_right, leaves=leaves,
                   stage_sizes=np.array(stage_sizes, np.int32),
                   stage_thresholds=np.array(stage_thresholds, np.float32))


def save_opencv_cascade(cascade: Cascade, path: str | os.PathLike) -> None:
    """Write a cascade in OpenCV's current XML layout, so ``cv2.CascadeClassifier`` can run it."""
    root = ET.Element("opencv_storage")
    top = ET.SubElement(root, "cascade", type_id="opencv-cascade-classifier")
    for tag, text in (("stageType", "BOOST"), ("featureType", "HAAR"), ("height", cascade.window[1]),
                      ("width", cascade.window[0])):
        ET.SubElement(top, tag).text = str(text)
    ET.SubElement(ET.SubElement(top, "stageParams"), "maxWeakCount").text = str(int(cascade.stage_sizes.max()))
    ET.SubElement(ET.SubElement(top, "featureParams"), "maxCatCount").text = "0"
    ET.SubElement(top, "stageNum").text = str(cascade.n_stages)
    stages = ET.SubElement(top, "stages")
    for s in range(cascade.n_stages):
        st = ET.SubElement(stages, "_")
        trees = cascade.stage_slice(s)
        ET.SubElement(st, "maxWeakCount").text = str(trees.stop - trees.start)
        ET.SubElement(st, "stageThreshold").text = repr(float(cascade.stage_thresholds[s]))
        weak = ET.SubElement(st, "weakClassifiers")
        for t in range(trees.start, trees.stop):
            m = int(np.max(np.r_[0, -cascade.node_left[t], -cascade.node_right[t]])) or 1
            nodes = " ".join(f"{cascade.node_left[t, n]} {cascade.node_right[t, n]} {cascade.node_feature[t, n]} "
                             f"{float(cascade.node_threshold[t, n])!r}" for n in range(m))
            tree = ET.SubElement(weak, "_")
            ET.SubElement(tree, "internalNodes").text = nodes
            ET.SubElement(tree, "leafValues").text = " ".join(repr(float(v)) for v in cascade.leaves[t, :m + 1])
    feats = ET.SubElement(top, "features")
    for f in range(len(cascade.features)):
        node = ET.SubElement(feats, "_")
        rects = ET.SubElement(node, "rects")
        for k in range(3):
            if k == 2 and cascade.features.weights[f, k] == 0:
                break
            x, y, w, h = cascade.features.rects[f, k]
            ET.SubElement(rects, "_").text = f"{x} {y} {w} {h} {float(cascade.features.weights[f, k])!r}"
        ET.SubElement(node, "tilted").text = str(int(cascade.features.tilted[f]))
    ET.indent(root)
    atomic_write_text(os.fspath(path), ET.tostring(root, encoding="unicode", xml_declaration=True))
