"""Core subcommands: train, evaluate, predict, data, models."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered architectures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from vislab.models import list_models, model_family
    for name in list_models(args.pattern):
        print(f"{name:32s} {model_family(name)}")
    return 0
