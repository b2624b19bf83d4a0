"""``vislab summary``: the per-layer cost table of a model."""

from __future__ import annotations

import argparse

from vislab.cli.args import parse_input_size
from vislab.errors import UserError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary", help="per-layer shapes, parameters, MACs/FLOPs, memory and receptive field",
        description="Count a model exactly on one input, layer by layer (FLOPs = 2 x MACs; other "
                    "ops = BN, pooling, activations, adds). Counting runs on meta tensors: no "
                    "arithmetic, a second even for ViT-L.")
    p.add_argument("model", help="a registered vislab model (see `vislab models`) or "
                                 "torchvision:NAME for torchvision's own, e.g. "
                                 "torchvision:resnet50")
    p.add_argument("--input", default="3x224x224", metavar="CxHxW",
                   help="input size of one image (default 3x224x224)")
    p.add_argument("--num-classes", type=int, default=1000,
                   help="classifier outputs (default 1000, as the published ImageNet figures)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=_summary)


def _summary(args: argparse.Namespace) -> int:
    from vislab.analysis.summary import summarize
    from vislab.analysis.zoo import build_model

    size = parse_input_size(args.input)
    if args.num_classes < 1 or args.batch_size < 1:
        raise UserError("--num-classes and --batch-size must be positive integers")
    model = build_model(args.model, size, args.num_classes)
    try:
        s = summarize(model, size, batch_size=args.batch_size, name=args.model)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        raise UserError(f"{args.model} does not run on a {args.input} input ({e}): choose "
                        "another --input (e.g. 1x28x28 for Fashion-MNIST models)") from None
    print(s.to_json() if args.json else s.table())
    return 0
