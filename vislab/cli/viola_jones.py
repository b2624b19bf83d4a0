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
    p.add_argument("--stages", type=int, default=22, help="maximum number of stages (default 22)")
    p.add_argument("--detection-rate", type=float, default=0.995, help="d of every stage (default 0.995)")
    p.add_argument("--false-positive-rate", type=float, default=0.5, help="f of every stage (default 0.5)")
    p.add_argument("--target-false-positive-rate", type=float, default=1e-7,
                   help="stop when the measured false-positive rate per window reaches it (default 1e-7)")
    p.add_argument("--max-weak", type=int, default=200, help="at most this many stumps per stage")
    p.add_argument("--positives-per-face", type=int, default=10, help="views of each training face")
    p.add_argument("--validation-per-face", type=int, default=20,
                   help="views of each validation face (default 20); they set, with the training faces, "
                        "each stage's threshold")
    p.add_argument("--crop-positives", action="store_true",
                   help="positives are the jittered LFW crops, not the faces as they look pasted in scenes")
    p.add_argument("--negatives", type=int, default=1000, help="bootstrapped negatives per stage")
    p.add_argument("--validation-negatives", type=int, default=500, help="negatives that measure f")
    p.add_argument("--features", type=int, default=20_000,
                   help="random part of the Haar pool each stage boosts over, drawn anew per stage "
                        "(default 20000; 0: all 162,336)")
    p.add_argument("--generated-negatives", type=int, default=8000,
                   help="generated backgrounds bootstrapping may use (made only when needed; default 8000)")
    p.add_argument("--scan-windows", type=float, default=6e7,
                   help="windows a refill of negatives scans at most; deeper stages train on fewer "
                        "negatives (default 6e7)")
    p.add_argument("--harvest-rate", type=float, default=1e-4,
                   help="false-positive rate per window below which every window of the natural images "
                        "the cascade accepts is kept (default 1e-4; 0: never)")
    p.add_argument("--measure-images", type=int, default=16,
                   help="fresh images, at least, that measure each stage's false-positive rate per "
                        "window (default 16; after the last stage, as many as it takes to count 100 "
                        "accepted windows, at most --scan-windows windows)")
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
        summary_table,
        train_into_run,
    )
    from vislab.errors import UserError

    cfg = TrainConfig(max_stages=args.stages, detection_rate=args.detection_rate,
                      false_positive_rate=args.false_positive_rate,
                      target_false_positive_rate=args.target_false_positive_rate, max_weak=args.max_weak,
                      positives_per_face=args.positives_per_face, validation_per_face=args.validation_per_face,
                      scene_positives=not args.crop_positives,
                      negatives=args.negatives, validation_negatives=args.validation_negatives,
                      features=args.features, generated_negatives=args.generated_negatives,
                      scan_windows=int(args.scan_windows), harvest_rate=args.harvest_rate,
                      measure_images=args.measure_images, seed=args.seed)
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(f"{e}; fix the option (see `vislab vj train --help`)") from e
    run = Path(args.run_dir)
    result = train_into_run(run, cfg, verbose=True, overwrite=args.fresh)
    print(summary_table(result))
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
