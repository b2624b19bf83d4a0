"""vislab: deep learning for computer vision, from the linear classifier to detectors (one subcommand per task).

Task packages add their own subcommands: a module listed in ``_EXTENSIONS`` exposes
``add_commands(sub)``, which adds parsers to the subparsers object and sets ``func`` on each
(a function ``args -> int``).  Library code raises :class:`vislab.UserError` for user mistakes;
here it becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vislab.errors import UserError

_EXTENSIONS = (
    "vislab.cli.core",
    "vislab.cli.detection",
    "vislab.cli.analysis",
    "vislab.cli.explain",
    "vislab.cli.report",
    "vislab.cli.viola_jones",
    "vislab.cli.export",
    "vislab.cli.metric",
    "vislab.cli.sequence",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), as every other mistake."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vislab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _EXTENSIONS:
        importlib.import_module(name).add_commands(sub)
    return parser


def _version() -> str:
    from vislab import __version__
    return f"vislab {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)      # as given (train --nproc relaunches it)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":      # of several processes, process 0 says it once
            print(f"vislab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vislab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # `vislab models | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")
        return 141


if __name__ == "__main__":
    sys.exit(main())
