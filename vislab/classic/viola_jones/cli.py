"""``vislab vj train|detect|eval``: Viola-Jones face detection from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CASCADE_FILE = "checkpoints/cascade.npz"   # as vislab.classic.viola_jones.train writes them
XML_FILE = "checkpoints/cascade.xml"


def add_commands(sub: argparse._SubParsersAction) -> None:
    vj = sub.add_parser("vj", help="Viola-Jones cascades: train, detect, evaluate")
    vsub = vj.add_subparsers(dest="vj_command", metavar="COMMAND", parser_class=type(vj))
    vsub.required = True

    p = vsub.add_parser("train", help="train a face cascade on LFW faces and face-free images")
    p.add_argument("--run-dir", required=True, help="run directory, e.g. runs/vj")
    p.add_argument("--fresh", action="store_true", help="overwrite a run directory that holds a cascade")
    p.add_argument("--stages", type=int, default=12, help="maximum number of stages (default 12)")
    p.add_argument("--detection-rate", type=float, default=0.995, help="d of every stage (default 0.995)")
    p.add_argument("--false-positive-rate", type=float, default=0.5, help="f of every stage (default 0.5)")
    p.add_argument("--target-false-positive-rate", type=float, default=1e-6,
                   help="stop when the product of the f's reaches it (default 1e-6)")
    p.add_argument("--max-weak", type=int, default=200, help="at most this many stumps per stage")
    p.add_argument("--positives-per-face", type=int, default=10, help="augmented copies of each training face")
    p.add_argument("--negatives", type=int, default=800, help="bootstrapped negatives per stage")
    p.add_argument("--validation-negatives", type=int, default=400, help="negatives that measure f")
    p.add_argument("--features", type=int, default=0, help="random subset of the Haar pool (0: all 162,336)")
    p.add_argument("--generated-negatives", type=int, default=60, help="generated face-free images")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train)

    p = vsub.add_parser("detect", help="detect faces in images and draw the boxes")
    p.add_argument("images", nargs="+", help="image files, or scikit-image sample names (astronaut)")
    p.add_argument("--cascade", default="frontalface_default",
                   help="a vislab cascade (.npz), a run directory, an OpenCV XML file or the name of one "
                        "OpenCV ships (default frontalface_default)")
    p.add_argument("--mode", choices=("opencv", "paper"), default="opencv",
                   help="opencv: resize the image per scale (same boxes as OpenCV); paper: scale the features")
    p.add_argument("--scale-factor", type=float, default=None, help="default 1.1 (opencv) or 1.25 (paper)")
    p.add_argument("--min-neighbors", type=int, default=3)
    p.add_argument("--min-size", type=int, nargs=2, default=(0, 0), metavar=("W", "H"))
    p.add_argument("--out", default=None, help="PNG to draw the boxes into (a folder for several images)")
    p.set_defaults(func=_detect)

    p = vsub.add_parser("eval", help="precision, recall, AP50 and ROC on generated scenes, vs OpenCV")
    p.add_argument("--run-dir", required=True, help="run directory of `vislab vj train`")
    p.add_argument("--scenes", type=int, default=60, help="number of generated test scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opencv-cascade", default="frontalface_default", help="OpenCV cascade to compare with")
    p.add_argument("--scale-factor", type=float, default=1.1)
    p.add_argument("--min-neighbors", type=int, default=3)
    p.add_argument("--roc-points", type=int, default=16, help="last-stage thresholds on the ROC curve")
    p.set_defaults(func=_eval)


# --------------------------------------------------------------------------- helpers
def load_any_cascade(spec: str):
    """A cascade from a .npz file, a run directory, an OpenCV XML file or a shipped OpenCV name."""
    from vislab.classic.viola_jones.cascade import Cascade
    from vislab.classic.viola_jones.opencv_xml import load_opencv_cascade

    path = Path(spec)
    if path.is_dir():
        path = path / CASCADE_FILE
        if not path.is_file():
            from vislab.errors import UserError
            raise UserError(f"run directory {spec} has no {CASCADE_FILE}; train it with "
                            f"`vislab vj train --run-dir {spec}`")
    if path.suffix == ".npz":
        return Cascade.load(path)
    return load_opencv_cascade(spec)


def _read_image(spec: str):
    """uint8 grey image from a file or a scikit-image sample name."""
    import numpy as np

    from vislab.classic.viola_jones.detect import rgb_to_gray
    from vislab.errors import UserError

    path = Path(spec)
    if path.is_file():
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"cannot read image {spec} ({e}); pass a PNG/JPEG file") from e
        return rgb_to_gray(img)
    from skimage import data
    if spec.isidentifier() and hasattr(data, spec):
        from vislab.classic.viola_jones.data import sample_image
        return sample_image(spec)
    raise UserError(f"image {spec!r} is neither a file nor a scikit-image sample (e.g. astronaut); check the path")


# --------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from vislab.classic.viola_jones.train import CASCADE_FILE, XML_FILE, TrainConfig, train_into_run
    from vislab.errors import UserError

    cfg = TrainConfig(max_stages=args.stages, detection_rate=args.detection_rate,
                      false_positive_rate=args.false_positive_rate,
                      target_false_positive_rate=args.target_false_positive_rate, max_weak=args.max_weak,
                      positives_per_face=args.positives_per_face, negatives=args.negatives,
                      validation_negatives=args.validation_negatives, features=args.features,
                      generated_negatives=args.generated_negatives, seed=args.seed)
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(f"{e}; fix the option (see `vislab vj train --help`)") from e
    run = Path(args.run_dir)
    if (run / CASCADE_FILE).exists() and not args.fresh:
        raise UserError(f"{run} already holds a cascade; pass --fresh to overwrite it or choose another --run-dir")
    result = train_into_run(run, cfg, verbose=True)
    print(f"{result.cascade.n_stages} stages, {int(result.cascade.stage_sizes.sum())} features, "
          f"{result.seconds:.0f} s; stopped: {result.stop_reason}")
    print(f"cascade: {run / CASCADE_FILE} (OpenCV XML: {run / XML_FILE})")
    return 0


# --------------------------------------------------------------------------- detect
def _detect(args: argparse.Namespace) -> int:
    from vislab.classic.viola_jones.detect import detect
    from vislab.classic.viola_jones.evaluate import draw_boxes
    from vislab.errors import UserError

    cascade = load_any_cascade(args.cascade)
    if args.scale_factor is not None and args.scale_factor <= 1:
        raise UserError(f"--scale-factor must be above 1, got {args.scale_factor}")
    out = Path(args.out) if args.out else None
    if out and len(args.images) > 1:
        out.mkdir(parents=True, exist_ok=True)
    for spec in args.images:
        gray = _read_image(spec)
        det = detect(cascade, gray, args.mode, args.scale_factor, args.min_neighbors, tuple(args.min_size))
        print(json.dumps({"image": spec, "boxes": det.boxes.tolist(), "neighbors": det.neighbors.tolist()}))
        if out:
            target = out / f"{Path(spec).stem}_vj.png" if len(args.images) > 1 else out
            draw_boxes(gray, det.boxes, str(target))
    return 0


# --------------------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> int:
    from vislab.classic.viola_jones.data import make_scenes, sample_image
    from vislab.classic.viola_jones.detect import detect
    from vislab.classic.viola_jones.evaluate import compare, draw_boxes, plot_roc
    from vislab.classic.viola_jones.opencv_xml import load_opencv_cascade, resolve_cascade_path
    from vislab.errors import UserError

    run = Path(args.run_dir)
    if not (run / CASCADE_FILE).is_file():
        raise UserError(f"run directory {run} has no {CASCADE_FILE}; train it first with "
                        f"`vislab vj train --run-dir {run}`")
    if args.scenes < 1:
        raise UserError(f"--scenes must be at least 1, got {args.scenes}")
    if args.scale_factor <= 1:
        raise UserError(f"--scale-factor must be above 1, got {args.scale_factor}")
    ours = load_any_cascade(str(run))
    theirs_path = resolve_cascade_path(args.opencv_cascade)
    theirs = load_opencv_cascade(theirs_path)
    scenes = make_scenes(args.scenes, args.seed)
    sf, k = args.scale_factor, args.min_neighbors
    ours_xml = run / XML_FILE
    reports = compare(ours, ours_xml if ours_xml.is_file() else None, theirs_path, theirs, scenes, sf, k,
                      max(args.roc_points, 2))
    plots = run / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    plot_roc(reports, str(plots / "vj_roc.png"))
    astronaut = sample_image("astronaut")
    for label, cascade in (("vislab", ours), ("opencv", theirs)):
        draw_boxes(astronaut, detect(cascade, astronaut, "opencv", sf, k).boxes,
                   str(plots / f"vj_astronaut_{label}.png"))
        draw_boxes(scenes[0].image, detect(cascade, scenes[0].image, "opencv", sf, k).boxes,
                   str(plots / f"vj_scene_{label}.png"), truth=scenes[0].boxes)
    rows = [r.row() for r in reports]
    payload = {"scenes": args.scenes, "seed": args.seed, "scale_factor": sf, "min_neighbors": k,
               "faces": int(sum(len(s.boxes) for s in scenes)), "table": rows,
               "roc": {r.name: {"threshold": r.roc_thresholds, "detection_rate": r.roc_detection_rate,
                                "false_positives": r.roc_false_positives} for r in reports}}
    from vislab.engine.checkpoint import atomic_write_text
    atomic_write_text(str(run / "eval.json"), json.dumps(payload, indent=2))
    print(f"{'detector':44s} {'precision':>9s} {'recall':>7s} {'AP50':>6s} {'dets':>5s} {'ms/img':>7s}")
    for r in rows:
        print(f"{r['detector']:44s} {r['precision']:9.3f} {r['recall']:7.3f} {r['AP50']:6.3f} "
              f"{r['detections']:5d} {r['ms_per_image']:7.1f}")
    print(f"{payload['faces']} faces in {args.scenes} scenes; ROC and pictures in {plots}")
    return 0
