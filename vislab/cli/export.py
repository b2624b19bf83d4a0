"""Export subcommand: a run's model as an ONNX file, checked against PyTorch before it is written."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a classification run's model to ONNX (checked against PyTorch)",
                       description="Export a classification run's model to ONNX (input (N, C, H, W), N dynamic). "
                                   "onnxruntime's logits must equal PyTorch's within 1e-5 on the first 256 test "
                                   "images, else nothing is written.")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the export format (default onnx)")
    p.add_argument("--out", metavar="FILE", help="where to write (default RUN/model.onnx)")
    p.add_argument("--device", default="cpu", help="where PyTorch computes the reference logits (default cpu)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from vislab.tasks.export import export_onnx
    rep = export_onnx(args.run_dir, args.out, args.device)
    print(f"exported {rep['path']}: onnxruntime vs PyTorch on {rep['images']} test images, "
          f"max abs logit difference {rep['max_abs_diff']:.2e} (limit {rep['tolerance']:g})")
    return 0
