"""``vislab vj train|detect|eval``: Viola-Jones face detection from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    p.add_argument("--out", default=None,
                   help="PNG to draw the boxes into, or a folder (an existing one, or one to make for "
                        "several images) that gets NAME_vj.png per image")
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


# --------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from vislab.classic.viola_jones.train import (
        CASCADE_FILE,
        XML_FILE,
        TrainConfig,
        train_into_run,
    )
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
    result = train_into_run(run, cfg, verbose=True, overwrite=args.fresh)
    print(f"{result.cascade.n_stages} stages, {int(result.cascade.stage_sizes.sum())} features, "
          f"{result.seconds:.0f} s; stopped: {result.stop_reason}")
    print(f"cascade: {run / CASCADE_FILE} (OpenCV XML: {run / XML_FILE})")
    return 0


# --------------------------------------------------------------------------- detect
def _detect(args: argparse.Namespace) -> int:
    from vislab.classic.viola_jones.sources import detect_images

    for result in detect_images(args.images, args.cascade, args.out, args.mode, args.scale_factor,
                                args.min_neighbors, tuple(args.min_size)):
        print(json.dumps(result.row()))
    return 0


# --------------------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> int:
    from vislab.classic.viola_jones.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.scenes, args.seed, args.opencv_cascade, args.scale_factor,
                          args.min_neighbors, args.roc_points)
    print(f"{'detector':44s} {'precision':>9s} {'recall':>7s} {'AP50':>6s} {'dets':>5s} {'ms/img':>7s}")
    for r in result.payload["table"]:
        print(f"{r['detector']:44s} {r['precision']:9.3f} {r['recall']:7.3f} {r['AP50']:6.3f} "
              f"{r['detections']:5d} {r['ms_per_image']:7.1f}")
    print(f"{result.payload['faces']} faces in {args.scenes} scenes; {result.eval_json}; "
          f"ROC and pictures in {result.plots[0].parent}")
    return 0
