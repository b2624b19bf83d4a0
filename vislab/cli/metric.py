"""Metric-learning subcommands: retrieve the nearest gallery images of a query image, and verify
whether two images show the same class (the siamese use of an embedding)."""

from __future__ import annotations

import argparse
import os


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieve", help="the nearest gallery images of query images, by a metric-learning run",
                       description="Embed the query images and a gallery with a metric-learning run (vislab train "
                                   "triplet / contrastive) and show each query's nearest gallery images.")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--gallery", default="test",
                   help="test (default) or train: that split's images of the classes the run is evaluated on; "
                        "or a folder of image files")
    p.add_argument("--k", type=int, default=8, help="neighbours per query (default 8)")
    p.add_argument("--out", metavar="PNG", help="the figure (default RUN/retrieval_query.png)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_retrieve)

    p = sub.add_parser("verify", help="are two images the same class? (distance vs the run's best threshold)",
                       description="The siamese network of a metric-learning run: the distance between the two "
                                   "images' embeddings against the threshold its evaluation found best.")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("image1", metavar="IMAGE1")
    p.add_argument("image2", metavar="IMAGE2")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_verify)


def _metric_run(run_dir: str, device: str, paths: list[str]):
    from vislab.errors import UserError
    from vislab.tasks import load_run
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"image {p} does not exist; check the path")
    run = load_run(run_dir, device)
    if run.task.name != "metric":
        raise UserError(f"{run_dir} is a {run.task.name} run; retrieval and verification need a metric-learning "
                        "run (vislab train triplet)")
    return run


def _retrieve(args: argparse.Namespace) -> int:
    from vislab.tasks.metric import retrieve
    run = _metric_run(args.run_dir, args.device, args.images)
    out = retrieve(run, args.images, args.gallery, args.k, args.out)
    for r in out["results"]:
        near = "  ".join(f"{n['name']} ({n['distance']:.3f})" for n in r["neighbours"])
        print(f"{r['path']}\t{near}")
    print(f"figure: {out['figure']} (gallery: {out['gallery']}, {out['gallery_size']} images)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from vislab.tasks.metric import verify
    run = _metric_run(args.run_dir, args.device, [args.image1, args.image2])
    v = verify(run, args.image1, args.image2)
    print(f"{'same' if v['same'] else 'different'}: distance {v['distance']:.3f} "
          f"{'<=' if v['same'] else '>'} threshold {v['threshold']:.3f}")
    return 0
