"""``vislab explain``: one explanation method on a trained run, written to RUN_DIR/explain/."""

from __future__ import annotations

import argparse

# The methods of vislab.explain.run.METHODS, described here so that `vislab --help` does not
# import torch.
METHOD_HELP = {
    "cam": "class activation map (global average pooling + one linear layer)",
    "gradcam": "Grad-CAM at --layer (default: the last stage)",
    "gradcam++": "Grad-CAM++ at --layer",
    "augmented-gradcam": "Grad-CAM super-resolved from the maps of 16 warped copies",
    "saliency": "vanilla gradient saliency |dS/dx|",
    "smoothgrad": "SmoothGrad: the gradient averaged over noisy copies",
    "mistakes": "the most confident test mistakes, Grad-CAM of the predicted and the true class",
    "filters": "first-layer filters, and dead filters per layer over the test set",
    "patches": "top-k test patches (receptive-field crops) of --unit of --layer",
    "maximize": "activation maximisation of each class (or of units of --layer)",
    "localize": "boxes from CAMs on generated canvases, IoU against the known boxes",
    "retrieval": "nearest training images of each --image in the latent space, precision@k",
    "tsne": "t-SNE map of test-set embeddings, coloured by class",
    "pca": "PCA map of test-set embeddings, coloured by class",
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="look inside a trained run: CAM, Grad-CAM, saliency, filters, retrieval...",
        description="Run one method on a trained run and write its image (and JSON figures) to "
                    "RUN_DIR/explain/. Images: test:N, train:N, test:N-M (of the run's data set) "
                    "or image files.",
        epilog="methods:\n" + "\n".join(f"  {k:18s} {v}" for k, v in METHOD_HELP.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--method", required=True, choices=tuple(METHOD_HELP), metavar="METHOD",
                   help="one of the methods listed below")
    p.add_argument("--image", dest="images", action="append", metavar="IMAGE",
                   help="test:N, train:N, test:N-M or a file (repeatable; default test:0-3)")
    p.add_argument("--class", dest="target", metavar="C",
                   help="class name or index to explain (default: the predicted class)")
    p.add_argument("--layer", help="module name, e.g. stages.1 (see `vislab summary`); default per method")
    p.add_argument("--unit", type=int, help="channel of --layer (patches, maximize)")
    p.add_argument("--k", type=int, default=8, help="neighbours, patches or mistakes to show (default 8)")
    p.add_argument("--limit", type=int, help="images of the data set to run over (default per method)")
    p.add_argument("--map", default="cam", choices=("cam", "gradcam", "gradcam++", "augmented-gradcam"),
                   help="localize: the map the box comes from (default cam)")
    p.add_argument("--canvas", type=int, help="localize: canvas side in pixels (default twice the image side)")
    p.add_argument("--threshold", type=float, default=0.2,
                   help="localize: box around the map above this fraction of its maximum (default 0.2)")
    p.add_argument("--steps", type=int, default=200, help="maximize: gradient-ascent steps (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    from vislab.errors import UserError
    from vislab.explain.run import Options, explain
    from vislab.tasks import load_run
    if args.k < 1 or (args.limit is not None and args.limit < 1) or args.steps < 1:
        raise UserError("--k, --limit and --steps must be positive integers")
    if not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold {args.threshold} must lie in [0, 1] (a fraction of the map's maximum)")
    opts = Options(images=args.images or ["test:0-3"], target=args.target, layer=args.layer,
                   unit=args.unit, k=args.k, limit=args.limit, map=args.map, canvas=args.canvas,
                   threshold=args.threshold, steps=args.steps, seed=args.seed)
    res = explain(load_run(args.run_dir, args.device), args.method, opts)
    for line in res.lines:
        print(line)
    for path in res.files:
        print(f"written: {path}")
    return 0
