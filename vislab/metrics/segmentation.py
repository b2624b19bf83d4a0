"""Semantic-segmentation metrics with the definitions of Long et al., "Fully Convolutional Networks
for Semantic Segmentation" (CVPR 2015, Sec. 5).

Everything derives from one confusion matrix over the whole data set: ``n_ij`` is the number of
pixels of ground-truth class ``i`` predicted as class ``j`` (rows: ground truth, columns:
prediction), ``t_i = sum_j n_ij`` the pixels of class ``i`` and ``p_j = sum_i n_ij`` the pixels
predicted as ``j``.  Pixels whose target is ``ignore_index`` are not counted at all, whatever
their prediction.

* ``pixel_acc = sum_i n_ii / sum_i t_i``;
* ``acc_i = n_ii / t_i`` (NaN where ``t_i = 0``) and ``mean_acc``, their mean over the classes
  with ``t_i > 0``;
* ``iou_i = n_ii / (t_i + p_i - n_ii)``, NaN where the denominator is 0, which is where the class
  is absent from both prediction and ground truth; a class only predicted has IoU 0;
* ``miou`` ("mean IU"), the mean of ``iou_i`` over the classes where it is defined;
* ``fwiou`` ("frequency weighted IU"), ``sum_i t_i iou_i / sum_k t_k``: a class predicted but
  absent from the ground truth has IoU 0 and weight 0.

A class absent from both prediction and ground truth has no error to measure, so it is left out
of the means rather than counted as 0 (a class the model failed on) or 1 (a free perfect score);
:func:`scores_from_confusion` lists those classes as ``absent_classes``.  The means are data-set
level: :class:`SegmentationMeter` sums confusion matrices over the images and computes once at
the end, which weights every pixel equally; the mean of per-image mIoUs instead weights small
images and rare classes up, and drops a class from an image's mean wherever it is absent.

An ``ignore_index`` inside ``[0, num_classes)`` removes that class's ground-truth pixels only:
predictions of it elsewhere still count, so its IoU is 0 if it is ever predicted.  Mark
unlabelled pixels with a value outside the classes (255 in VOC, Cityscapes and ADE20K).

torchmetrics differs (checked on 1.9.0).  ``MulticlassJaccardIndex(average="macro")`` gives
weight 0 to the classes with ``t_i + p_i = 0`` and so agrees with ``miou`` on them, but it also
drops the ``ignore_index`` class from the mean when ``ignore_index`` lies inside
``[0, num_classes)``, where vislab keeps it (IoU 0 if predicted).  ``MulticlassAccuracy(
average="macro")`` gives weight 0 to the classes with ``tp + fp + fn = 0``, also absent from both,
but a class predicted and absent from the ground truth (``t_i = 0``, ``p_i > 0``) counts as
recall 0 there, where FCN's ``mean_acc`` leaves it out: its accuracy ``n_ii / t_i`` is 0/0, and
a wrong prediction is already charged to the recall of the true class.  With
``average="none"`` both return 0, not NaN, for a class with an undefined value
(``zero_division=0``), so per-class lists cannot tell "absent" from "always wrong".  Ignored
pixels are handled as here in both (removed before counting).  ``MulticlassAccuracy(
average="micro")`` is ``pixel_acc`` and ``MulticlassJaccardIndex(average="weighted")`` is
``fwiou``; ``MulticlassJaccardIndex(average="micro")`` (``sum_i n_ii / sum_i (t_i + p_i - n_ii)``)
is none of FCN's four.  vislab follows FCN because that is how published results are computed:
FCN's reference ``score.py`` and mmsegmentation's ``IoUMetric`` take the nan-mean over the
classes that occur, of IoU and of per-class accuracy alike.

Class weights for a weighted cross-entropy (:func:`class_weights`) come from the pixel
frequencies of :func:`class_frequencies`.

**Panoptic quality** (Kirillov et al., "Panoptic Segmentation", CVPR 2019): :func:`panoptic_quality`
and :class:`PanopticMeter`.  A panoptic map gives every pixel a (category, instance id); a
*segment* is the set of pixels of one pair, and a stuff category has one segment per image
(its instance ids are ignored).  Per image, a predicted and a ground-truth segment of the same
category match when their IoU exceeds 0.5, which makes the matching unique (two segments cannot
both overlap a third by more than half).  Per category, over the data set:
``SQ = sum of matched IoUs / TP`` (0 without a match), ``RQ = TP / (TP + FP/2 + FN/2)`` and
``PQ = SQ x RQ``; the overall, things and stuff numbers average the categories that occur
(``TP + FP + FN > 0``), as panopticapi and torchmetrics do.

Void: a ground-truth pixel whose category is neither a thing nor a stuff is void, as is a
predicted pixel of category ``void`` (a pixel the model leaves unlabelled).  As in the paper
(Sec. 4.1) and panopticapi, ground-truth void pixels leave a predicted segment (they are taken
out of the pair's union), and an unmatched prediction lying more than half in ground-truth void
is not a false positive; predicted void pixels belong to no segment and "do not affect
evaluation": they still count in a ground-truth segment's area, and a ground truth left void is
a false negative.  torchmetrics' ``PanopticQuality`` (checked on 1.9.0) treats predicted void
like ground-truth void instead: it takes it out of the union too, and excuses an unmatched
ground truth lying more than half in predicted void, so a model that leaves what it is unsure
of void loses nothing; ``excuse_pred_void=True`` gives its numbers.  vislab's per-category
values are NaN for a category absent from both sides (torchmetrics reports 0 there, so
"absent" and "always wrong" look alike).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from vislab.errors import UserError

__all__ = [
    "WEIGHTINGS",
    "PanopticMeter",
    "SegmentationMeter",
    "class_frequencies",
    "class_weights",
    "confusion_matrix",
    "format_panoptic",
    "format_scores",
    "panoptic_quality",
    "scores_from_confusion",
    "segmentation_scores",
]

WEIGHTINGS = ("none", "inverse", "median")


def _check_args(num_classes: int, ignore_index: int | None) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise UserError(f"ignore_index must be an integer or None, got {ignore_index!r}")


def _check_classes(name: str, labels: Tensor, num_classes: int, fix: str) -> None:
    """``labels`` (flat int64) hold only classes ``0 .. num_classes - 1``."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        values = torch.unique(bad).tolist()
        shown = ", ".join(map(str, values[:5])) + (", ..." if len(values) > 5 else "")
        raise UserError(f"{name} holds class {shown} but num_classes is {num_classes}; {fix}")


def _labelled(target: Tensor, num_classes: int, ignore_index: int | None) -> tuple[Tensor, Tensor | None]:
    """The classes of ``target``'s counted pixels, flat int64, and the flat mask of those pixels
    (``None``: all of them)."""
    if not isinstance(target, Tensor) or target.is_floating_point() or target.is_complex():
        kind = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise UserError(f"target must be an integer tensor of class indices, got {kind}")
    t = target.reshape(-1).long()
    keep = None if ignore_index is None else t != ignore_index
    if keep is not None:
        t = t[keep]
    fix = ("set ignore_index to the value that marks unlabelled pixels, or num_classes to the "
           "number of classes" if ignore_index is None else
           f"pixels to skip must hold ignore_index={ignore_index}; otherwise raise num_classes")
    _check_classes("target", t, num_classes, fix)
    return t, keep


def _pred_labels(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Class indices of the shape of ``target``: ``pred`` itself, or the argmax over dim 1 of
    float scores ``(N, C, ...)`` for a ``target`` of shape ``(N, ...)``."""
    if not isinstance(pred, Tensor):
        raise UserError(f"pred must be a tensor, got {type(pred).__name__}")
    if pred.is_floating_point():
        if pred.ndim != target.ndim + 1 or pred.shape[:1] + pred.shape[2:] != target.shape:
            raise UserError(f"pred is a float tensor of shape {tuple(pred.shape)} for a target of shape "
                            f"{tuple(target.shape)}; pass class indices of the target's shape (integer "
                            "dtype) or scores (N, C, H, W) for a target (N, H, W)")
        if pred.shape[1] != num_classes:
            raise UserError(f"pred has scores for {pred.shape[1]} classes but num_classes is "
                            f"{num_classes}; pass the model's number of outputs as num_classes")
        return pred.detach().argmax(1)
    if pred.shape != target.shape:
        raise UserError(f"pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; "
                        "pass one predicted class per target pixel")
    return pred


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int,
                     ignore_index: int | None = None) -> Tensor:
    """``cm[i, j]``: pixels of ground-truth class ``i`` predicted as ``j``, int64
    ``(num_classes, num_classes)`` on the device of the inputs.

    ``pred`` and ``target`` hold class indices, of the same shape (any); ``pred`` may instead be
    float scores (logits or probabilities) ``(N, C, ...)`` for a ``target`` ``(N, ...)``, whose
    argmax over dim 1 is taken.  Pixels whose target is ``ignore_index`` are skipped.  A class
    index outside ``[0, num_classes)`` in the target (other than ``ignore_index``), or in the
    prediction at a counted pixel, raises :class:`UserError` naming it.
    """
    _check_args(num_classes, ignore_index)
    t, keep = _labelled(target, num_classes, ignore_index)
    p = _pred_labels(pred, target, num_classes).reshape(-1).long()
    if keep is not None:
        p = p[keep]
    _check_classes("pred", p, num_classes, "pass the model's number of outputs as num_classes")
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def _floats(x: Tensor) -> list[float]:
    return [float(v) for v in x]


def scores_from_confusion(cm: Tensor) -> dict:
    """FCN's four scores and the per-class values from a confusion matrix (rows: ground truth,
    columns: prediction), computed in float64.  See the module docstring for the definitions.

    Keys: ``pixel_acc``, ``mean_acc``, ``miou``, ``fwiou`` (floats, NaN without any pixel),
    ``iou`` and ``acc`` (per-class lists, NaN where undefined), ``present`` (per class: occurs in
    the ground truth or the prediction), ``absent_classes`` (the others, left out of the means),
    ``num_pixels`` and ``freq`` (per-class share of the ground-truth pixels).
    """
    cm = torch.as_tensor(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise UserError(f"a confusion matrix is square (num_classes, num_classes), got shape {tuple(cm.shape)}")
    cm = cm.detach().to("cpu", torch.float64)
    tp = cm.diagonal()
    t = cm.sum(1)                                   # ground-truth pixels of each class
    union = t + cm.sum(0) - tp
    total = t.sum()
    iou = tp / union                                # 0/0 = NaN: absent from both
    acc = tp / t
    present = union > 0
    return {
        "pixel_acc": float(tp.sum() / total),
        "mean_acc": float(acc.nanmean()),
        "miou": float(iou.nanmean()),
        "fwiou": float((t * iou)[t > 0].sum() / total),
        "iou": _floats(iou),
        "acc": _floats(acc),
        "present": present.tolist(),
        "absent_classes": (~present).nonzero().flatten().tolist(),
        "num_pixels": int(total),
        "freq": _floats(t / total),
    }


def segmentation_scores(pred: Tensor, target: Tensor, num_classes: int,
                        ignore_index: int | None = None) -> dict:
    """:func:`scores_from_confusion` of :func:`confusion_matrix`: ``pred`` is class indices of
    the target's shape or float scores ``(N, C, H, W)`` (argmax over dim 1)."""
    return scores_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


class SegmentationMeter:
    """Accumulates one confusion matrix over a data set, batch by batch, so the scores are those
    of all its pixels together (not a mean of per-image scores).

    Args:
        num_classes: number of classes.
        ignore_index: target value of pixels not to count (e.g. 255).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        _check_args(num_classes, ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` class indices or float scores ``(N, C, H, W)``, as in
        :func:`confusion_matrix`."""
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()

    def compute(self) -> dict:
        return scores_from_confusion(self.confusion)


def class_frequencies(targets: Tensor | Iterable[Tensor], num_classes: int,
                      ignore_index: int | None = None) -> Tensor:
    """Share of each class among the labelled pixels of ``targets`` (one label map, a batch, or
    an iterable of them), float64 ``(num_classes,)`` summing to 1."""
    _check_args(num_classes, ignore_index)
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for target in [targets] if isinstance(targets, Tensor) else targets:
        t, _ = _labelled(target, num_classes, ignore_index)
        counts += torch.bincount(t, minlength=num_classes).cpu()
    total = int(counts.sum())
    if total == 0:
        raise UserError(f"the label maps hold no labelled pixel (all empty or ignore_index={ignore_index}); "
                        "pass the training set's targets")
    return counts.double() / total


def class_weights(freq: Tensor | Sequence[float], mode: str) -> Tensor:
    """Per-class weights, float32, for ``cross_entropy(weight=...)`` from pixel frequencies
    (e.g. :func:`class_frequencies`; raw counts work too, they are normalised first).

    * ``"none"``: all 1.
    * ``"inverse"``: ``1 / freq_c``, scaled so that ``sum_c freq_c w_c = 1`` (the average weight
      of a pixel is 1, so the loss keeps its scale): ``w_c = 1 / (m freq_c)`` with ``m`` the
      number of classes that occur.
    * ``"median"``: median frequency balancing (Eigen & Fergus, ICCV 2015; used by SegNet):
      ``w_c = median(freq) / freq_c``, the median over the classes that occur (the mean of the
      two middle values for an even count, as ``numpy.median``).  Eigen & Fergus divide a class's
      pixels by those of the images where it occurs rather than by all pixels; pass such
      frequencies to get their weights exactly.

    A class with frequency 0 never occurs as a target and gets weight 0 in both balanced modes.
    """
    f = torch.as_tensor(freq, dtype=torch.float64).detach().cpu()
    if f.ndim != 1 or not torch.isfinite(f).all() or (f < 0).any() or f.sum() <= 0:
        raise UserError(f"freq must be a 1-D vector of non-negative class frequencies with a positive sum, got {f}")
    if mode not in WEIGHTINGS:
        raise UserError(f"unknown class weighting {mode!r}: use none, inverse or median")
    if mode == "none":
        return torch.ones(len(f), dtype=torch.float32)
    f = f / f.sum()
    occurs = f > 0
    scale = 1 / occurs.sum() if mode == "inverse" else f[occurs].quantile(0.5)
    w = torch.zeros_like(f)
    w[occurs] = scale / f[occurs]
    return w.float()


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.2f}"


def format_scores(scores: dict, class_names: Sequence[str] | None = None) -> str:
    """A readable report of :func:`scores_from_confusion`'s result: the four scores, a line per
    class (IoU, accuracy, ground-truth frequency, in %), and the classes left out of the means."""
    k = len(scores["iou"])
    names = [str(c) for c in range(k)] if class_names is None else list(class_names)
    if len(names) != k:
        raise UserError(f"{len(names)} class names for {k} classes; pass one name per class")
    width = max([5, *map(len, names)])
    header = (f"pixel acc {_pct(scores['pixel_acc'])}  mean acc {_pct(scores['mean_acc'])}  "
              f"mIoU {_pct(scores['miou'])}  FW-IoU {_pct(scores['fwiou'])}  ({scores['num_pixels']} pixels)")
    lines = [header, f"{'class':<{width}}  {'IoU':>6}  {'acc':>6}  {'freq':>6}"]
    for name, iou, acc, freq, present in zip(names, scores["iou"], scores["acc"], scores["freq"], scores["present"]):
        row = f"{_pct(iou):>6}  {_pct(acc):>6}  {_pct(freq):>6}" if present else "absent"
        lines.append(f"{name:<{width}}  {row}")
    if scores["absent_classes"]:
        absent = ", ".join(names[c] for c in scores["absent_classes"])
        lines.append(f"left out of the means (absent from prediction and ground truth): {absent}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- panoptic quality

def _segments(x: Tensor, stuff: Tensor, void: Tensor) -> tuple[Tensor, Tensor]:
    """Per pixel the index of its segment, 0 for void and ``1..n`` for the segments, and the
    category of each segment ``(n,)``; ``x`` ``(P, 2)`` int64, ``stuff``/``void`` ``(P,)``."""
    x = x.clone()
    x[stuff, 1] = 0                                       # one segment per stuff category
    keys, inverse = torch.unique(x[~void], dim=0, return_inverse=True)
    index = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    index[~void] = inverse + 1
    return index, keys[:, 0]


class PanopticMeter:
    """Accumulates PQ's counts (IoU sum, TP, FP, FN per category) image by image; see the
    module docstring for the rules (those of torchmetrics' ``PanopticQuality``).

    Args:
        things / stuffs: the category ids of countable things and of amorphous stuff (disjoint).
        void: the category a prediction gives to pixels it leaves unlabelled; any other category
            outside ``things | stuffs`` in a prediction is an error.  Ground-truth pixels of any
            unknown category are void.
        excuse_pred_void: torchmetrics' rule for predicted void (see the module docstring)
            instead of the paper's.
    """

    def __init__(self, things: Iterable[int], stuffs: Iterable[int], void: int = -1,
                 excuse_pred_void: bool = False) -> None:
        self.things, self.stuffs = sorted({int(c) for c in things}), sorted({int(c) for c in stuffs})
        if set(self.things) & set(self.stuffs):
            raise UserError(f"categories {sorted(set(self.things) & set(self.stuffs))} are both things and stuff; "
                            "each category is one or the other")
        if not self.things and not self.stuffs:
            raise UserError("give at least one thing or stuff category")
        if void in self.things or void in self.stuffs:
            raise UserError(f"void={void} is also a category; choose a value outside things and stuffs")
        self.void, self.excuse_pred_void = void, excuse_pred_void
        self.categories = self.things + self.stuffs       # torchmetrics' order
        self.reset()

    def reset(self) -> None:
        k = len(self.categories)
        self.iou_sum = torch.zeros(k, dtype=torch.float64)
        self.tp, self.fp, self.fn = (torch.zeros(k, dtype=torch.int64) for _ in range(3))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred``/``target`` ``(B, H, W, 2)`` integer (category, instance id)."""
        if not isinstance(pred, Tensor) or not isinstance(target, Tensor) or pred.shape != target.shape \
                or pred.ndim < 3 or pred.shape[-1] != 2 or pred.is_floating_point() or target.is_floating_point():
            raise UserError("pred and target must be integer tensors of one shape (B, H, W, 2): (category, "
                            f"instance id) per pixel; got {getattr(pred, 'shape', pred)} and "
                            f"{getattr(target, 'shape', target)}")
        pred, target = pred.detach().cpu().long().flatten(1, -2), target.detach().cpu().long().flatten(1, -2)
        cats = torch.tensor(self.categories, dtype=torch.int64)
        n_things = len(self.things)
        lut = {c: k for k, c in enumerate(self.categories)}
        for p, t in zip(pred, target):
            p_known, t_known = torch.isin(p[:, 0], cats), torch.isin(t[:, 0], cats)
            bad = p[~p_known & (p[:, 0] != self.void), 0]
            if len(bad):
                raise UserError(f"pred holds category {torch.unique(bad)[:5].tolist()}, neither a thing, a stuff "
                                f"nor void ({self.void}); add it to things or stuffs, or mark it void")
            p_stuff, t_stuff = torch.isin(p[:, 0], cats[n_things:]), torch.isin(t[:, 0], cats[n_things:])
            ps, pcat = _segments(p, p_stuff, ~p_known)
            ts, tcat = _segments(t, t_stuff, ~t_known)
            n_p, n_t = len(pcat) + 1, len(tcat) + 1
            inter = torch.bincount(ps * n_t + ts, minlength=n_p * n_t).view(n_p, n_t).double()
            p_area, t_area = inter.sum(1), inter.sum(0)
            i = inter[1:, 1:]
            t_kept = t_area[1:] - inter[0, 1:] if self.excuse_pred_void else t_area[1:]
            union = (p_area[1:, None] - inter[1:, :1]) + t_kept[None] - i
            iou = torch.where(i > 0, i / union.clamp(min=1), torch.zeros_like(i))
            match = (pcat[:, None] == tcat[None, :]) & (iou > 0.5)
            pk = torch.tensor([lut[int(c)] for c in pcat], dtype=torch.int64)
            tk = torch.tensor([lut[int(c)] for c in tcat], dtype=torch.int64)
            _, col = match.nonzero(as_tuple=True)
            self.tp.index_add_(0, tk[col], torch.ones_like(col))
            self.iou_sum.index_add_(0, tk[col], iou[match])
            fn = ~match.any(0)
            if self.excuse_pred_void:
                fn &= inter[0, 1:] / t_area[1:] <= 0.5
            fp = ~match.any(1) & (inter[1:, 0] / p_area[1:] <= 0.5)
            self.fn.index_add_(0, tk[fn], torch.ones_like(tk[fn]))
            self.fp.index_add_(0, pk[fp], torch.ones_like(pk[fp]))

    def compute(self) -> dict:
        """``pq``, ``sq``, ``rq`` (mean over the categories that occur), the same over things
        (``pq_things``...) and stuff (``pq_stuff``...), the number of categories each mean
        counts (``n``, ``n_things``, ``n_stuff``) and ``per_class``: category id -> ``pq``,
        ``sq``, ``rq`` (NaN when it occurs in neither side), ``tp``, ``fp``, ``fn``.  A mean
        over no category is NaN."""
        tp = self.tp.double()
        denom = tp + 0.5 * self.fp + 0.5 * self.fn
        occurs = denom > 0
        sq = torch.where(tp > 0, self.iou_sum / tp.clamp(min=1), torch.zeros_like(tp))
        rq = torch.where(occurs, tp / denom.clamp(min=1e-12), torch.zeros_like(tp))
        pq = sq * rq
        out: dict = {}
        n_things = len(self.things)
        for suffix, part in (("", slice(None)), ("_things", slice(0, n_things)), ("_stuff", slice(n_things, None))):
            keep = occurs[part]
            for name, v in (("pq", pq), ("sq", sq), ("rq", rq)):
                out[name + suffix] = float(v[part][keep].mean()) if keep.any() else math.nan
            out["n" + suffix] = int(keep.sum())
        nan = torch.where(occurs, torch.zeros_like(tp), torch.full_like(tp, math.nan))
        out["per_class"] = {c: {"pq": float(pq[k] + nan[k]), "sq": float(sq[k] + nan[k]), "rq": float(rq[k] + nan[k]),
                                "tp": int(self.tp[k]), "fp": int(self.fp[k]), "fn": int(self.fn[k])}
                            for k, c in enumerate(self.categories)}
        return out


def panoptic_quality(pred: Tensor, target: Tensor, things: Iterable[int], stuffs: Iterable[int],
                     void: int = -1, excuse_pred_void: bool = False) -> dict:
    """PQ, SQ and RQ of panoptic maps ``pred``/``target`` ``(B, H, W, 2)`` (category, instance
    id), overall, over things and over stuff, and per category (:meth:`PanopticMeter.compute`;
    the arguments are its)."""
    meter = PanopticMeter(things, stuffs, void, excuse_pred_void)
    meter.update(pred, target)
    return meter.compute()


def format_panoptic(scores: dict, names: dict[int, str] | None = None) -> str:
    """A readable report of :func:`panoptic_quality`: PQ/SQ/RQ overall, things and stuff (in
    %), then a line per category (``absent`` where it occurs in neither side)."""
    lines = [f"{'':8s} {'PQ':>6} {'SQ':>6} {'RQ':>6}  categories"]
    for label, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
        lines.append(f"{label:8s} {_pct(scores['pq' + suffix]):>6} {_pct(scores['sq' + suffix]):>6} "
                     f"{_pct(scores['rq' + suffix]):>6}  {scores['n' + suffix]}")
    per = scores["per_class"]
    width = max([8, *(len((names or {}).get(c, str(c))) for c in per)])
    lines.append(f"{'category':<{width}} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'TP':>5} {'FP':>5} {'FN':>5}")
    for c, v in per.items():
        name = (names or {}).get(c, str(c))
        row = (f"{_pct(v['pq']):>6} {_pct(v['sq']):>6} {_pct(v['rq']):>6} {v['tp']:5d} {v['fp']:5d} {v['fn']:5d}"
               if not math.isnan(v["pq"]) else "absent")
        lines.append(f"{name:<{width}} {row}")
    return "\n".join(lines)
