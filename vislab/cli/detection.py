"""Detection commands: ``vislab eval-detections`` and ``vislab detect`` here, and the arguments
and handler of ``vislab data make-scenes`` (wired into the ``data`` group by :mod:`vislab.cli.core`)."""

from __future__ import annotations

import argparse
import json
import os

from vislab.cli.args import parse_size
from vislab.errors import UserError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-detections", help="COCO AP/AR of detections against COCO ground truth",
                       description="Prints pycocotools' twelve numbers (same rules, faster).")
    p.add_argument("gt", help="COCO ground-truth JSON (images, annotations, categories)")
    p.add_argument("pred", help="COCO results JSON: a list of {image_id, category_id, bbox, score} "
                                "(with --iou-type segm: a 'segmentation' RLE instead of or beside the bbox)")
    p.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox",
                   help="what to compare: boxes (default) or masks (COCO RLE; mask AP)")
    p.add_argument("--per-class", action="store_true", help="also print AP and AP50 per category")
    p.add_argument("--voc", action="store_true",
                   help="also print Pascal VOC AP at IoU 0.5 per category (all-points and 11-point)")
    p.add_argument("--plot", metavar="PNG", help="write precision-recall curves at IoU 0.5 per category")
    p.add_argument("--json", metavar="OUT", help="write all numbers as JSON")
    p.set_defaults(func=_eval_detections)

    p = sub.add_parser("detect", help="find objects with a trained run: draw them on an image, or "
                                      "evaluate on the run's test scenes",
                       description="The run is a detection run (RetinaNet), a localization run (one box per "
                                   "image) or a window classifier trained on scene_patches, run as a "
                                   "sliding-window detector.")
    p.add_argument("run_dir")
    p.add_argument("image", nargs="?", help="image file to detect in (omit with --eval-scenes)")
    p.add_argument("--out", metavar="PNG", help="where to draw the detections (default IMAGE_STEM_detections.png)")
    p.add_argument("--scales", type=float, nargs="+", metavar="S",
                   help="pyramid scales of the sliding windows (default 1.7 1.35 1.07 0.85 0.67 0.53 0.42)")
    p.add_argument("--ratios", type=float, nargs="+", metavar="R",
                   help="box shapes, height/width, of the sliding windows (default 0.5 1 2)")
    p.add_argument("--score-thr", type=float, metavar="P",
                   help="lowest score kept (default 0.5 when drawing, 0.05 when evaluating)")
    p.add_argument("--nms-iou", type=float, default=0.3, metavar="IOU",
                   help="sliding windows: suppress same-class boxes overlapping more (default 0.3)")
    p.add_argument("--conv", action="store_true",
                   help="score all windows of a level in one pass of the convolutionalised classifier")
    p.add_argument("--eval-scenes", type=int, metavar="N",
                   help="evaluate on the first N test scenes of the run (0: all): COCO AP/AR, and for "
                        "sliding windows the time of the explicit and the convolutionalised path")
    p.add_argument("--time-scenes", type=int, default=5, metavar="K",
                   help="with --eval-scenes: time both window paths on the first K scenes (default 5)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_detect)


def _eval_detections(args: argparse.Namespace) -> int:
    from vislab.detection.formats import evaluate_coco_files
    if args.iou_type == "segm":
        from vislab.detection.detect import evaluate_coco_segm_files
        if args.voc:
            raise UserError("--voc compares boxes only; drop it with --iou-type segm")
        ev, report = evaluate_coco_segm_files(args.gt, args.pred, per_category=args.per_class, plot=args.plot,
                                              json_path=args.json)
    else:
        ev, report = evaluate_coco_files(args.gt, args.pred, per_category=args.per_class, voc=args.voc,
                                         plot=args.plot, json_path=args.json, iou_type=args.iou_type)
    print(ev.summary())
    if args.per_class:
        print(f"\n{'category':24s} {'AP':>7s} {'AP50':>7s}")
        for name, v in report["per_category"].items():
            print(f"{name[:24]:24s} {v['AP']:7.3f} {v['AP50']:7.3f}")
    if args.voc:
        voc = report["voc"]
        print(f"\nPascal VOC, IoU 0.5: mAP {voc['mAP']:.4f} (all points), {voc['mAP_07']:.4f} (11-point)")
        if args.per_class:
            for name, v in voc["per_category"].items():
                print(f"{name[:24]:24s} {_nan(v['AP']):7.3f} {_nan(v['AP_07']):7.3f}")
    if args.plot:
        print(f"precision-recall curves: {args.plot}")
    return 0


def _detect(args: argparse.Namespace) -> int:
    from vislab.detection.sliding_window import PyramidConfig
    from vislab.tasks.detect import EVAL_FILES, detect_image, evaluate_detector
    if (args.image is None) == (args.eval_scenes is None):
        raise UserError("give an IMAGE to detect in, or --eval-scenes N to evaluate on test scenes (not both)")
    defaults = PyramidConfig()
    pyramid = PyramidConfig(scales=tuple(args.scales or defaults.scales), ratios=tuple(args.ratios or defaults.ratios))
    if args.image is not None:
        thr = 0.5 if args.score_thr is None else args.score_thr
        det, classes, paths = detect_image(args.run_dir, args.image, args.out, pyramid, args.conv, thr,
                                           args.nms_iou, args.device)
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            print(f"{classes[label]:16s} {score:.3f}  box {' '.join(f'{v:.1f}' for v in box)}")
        print(f"{len(det['boxes'])} detections drawn on {paths[0]}")
        for path in paths[1:]:
            print(f"panoptic map drawn on {path}")
        return 0
    thr = 0.05 if args.score_thr is None else args.score_thr
    report = evaluate_detector(args.run_dir, args.eval_scenes, args.time_scenes, pyramid, thr, args.nms_iou,
                               args.device)
    print(report["summary"])
    print(f"written: {os.path.join(args.run_dir, EVAL_FILES[0])} (and {', '.join(EVAL_FILES[1:])} "
          "for `vislab eval-detections`)")
    return 0


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


def add_make_scenes_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vislab data make-scenes``."""
    parser.add_argument("out", help="folder to write (must be new or empty)")
    parser.add_argument("--source", default="fashion_mnist",
                        help="grayscale data set whose items are pasted: fashion_mnist (default), mnist, digits")
    parser.add_argument("--train", type=int, default=1000, help="number of training scenes (default 1000)")
    parser.add_argument("--val", type=int, default=200, help="number of validation scenes (default 200)")
    parser.add_argument("--test", type=int, default=200, help="number of test scenes (default 200)")
    parser.add_argument("--size", default="128", metavar="H[xW]", help="canvas size, e.g. 128 or 96x160")
    parser.add_argument("--objects", type=int, nargs=2, default=(2, 6), metavar=("MIN", "MAX"),
                        help="objects per scene (default 2 6)")
    parser.add_argument("--scale", type=float, nargs=2, default=(1.0, 2.5), metavar=("MIN", "MAX"),
                        help="item size relative to its source size (default 1.0 2.5)")
    parser.add_argument("--stuff", type=int, default=0, metavar="N",
                        help="stuff classes: the background becomes regions of N distinct textures (sky, "
                             "stripes, dots, checker, grass, bricks; at most 6), and SPLIT_panoptic.json + "
                             "SPLIT/panoptic/*.png hold the panoptic ground truth (default 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--data-dir", help="folder with the source data set's files")
    parser.add_argument("--captions", action="store_true",
                        help="also write SPLIT/captions.json: captions of each scene from its annotations")
    parser.add_argument("--captions-per-image", type=int, default=5, metavar="N",
                        help="with --captions: captions per scene, distinct phrasings (default 5)")


def run_make_scenes(args: argparse.Namespace) -> int:
    from vislab.detection.scenes import SceneConfig, make_scene_dataset
    if args.captions and args.captions_per_image < 1:
        raise UserError(f"--captions-per-image {args.captions_per_image}: give at least 1")
    config = SceneConfig(source=args.source, image_size=parse_size(args.size, "--size"), objects=tuple(args.objects),
                         scale=tuple(args.scale), stuff=args.stuff)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    paths = make_scene_dataset(args.out, counts, config, args.seed, args.data_dir)
    for split, path in paths.items():
        with open(path) as f:
            coco = json.load(f)
        print(f"{split:5s}: {len(coco['images'])} scenes, {len(coco['annotations'])} objects -> {path}")
        if args.stuff:
            print(f"{split:5s}: panoptic ground truth, {args.stuff} stuff classes -> "
                  f"{os.path.join(args.out, split + '_panoptic.json')}")
    if args.captions:
        from vislab.sequence.captions import write_captions
        for split in paths:
            path = write_captions(args.out, split, args.captions_per_image, args.seed)
            print(f"{split:5s}: {args.captions_per_image} captions per scene -> {path}")
    return 0
