"""``vislab report``: one self-contained HTML page of a trained run."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write RUN_DIR/report.html: metrics, curves, Grad-CAM of mistakes, filters, t-SNE...",
        description="Write one self-contained HTML page (images embedded, opens offline) with "
                    "everything a run produced; evaluates the run first if it has no eval.json.")
    p.add_argument("run_dir")
    p.add_argument("--out", help="where to write the page (default RUN_DIR/report.html)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from vislab.tasks.runner import report
    report(args.run_dir, args.device, args.out)
    return 0
