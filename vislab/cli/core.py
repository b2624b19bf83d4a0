"""Core subcommands: train, evaluate, predict, data, models."""

from __future__ import annotations

import argparse
import json
import os
import sys

from vislab.cli.args import parse_input_size
from vislab.config import list_recipes
from vislab.errors import UserError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe (default: small CNN on Fashion-MNIST)",
                       description="Train a named recipe (" + ", ".join(list_recipes()) + ") or a recipe "
                                   "YAML file into a run directory.")
    p.add_argument("config", nargs="?", metavar="RECIPE",
                   help="a recipe name (e.g. quick) or a YAML file; omit for the default recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--run-dir", help="where the run is written (default runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--fresh", action="store_true", help="start over in an existing --run-dir (the old run is moved aside)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels: bit-identical reruns and resumes")
    p.add_argument("--folds", type=int, help="k-fold cross-validation of the recipe on the training set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N local processes (DistributedDataParallel, started by torchrun's launcher; "
                        "gloo on CPU, NCCL on CUDA). For several machines run torchrun yourself: "
                        "torchrun --nnodes M --nproc-per-node N --rdzv-endpoint HOST:PORT -m vislab train ...")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a run on the test set (writes RUN_DIR/eval.json)")
    p.add_argument("run_dir")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average with the mirrored image")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="predict image files with a trained run (class, and box for localisation)")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=1)
    p.add_argument("--beam", type=int, default=1, help="captioning runs: beam width (default 1: greedy decoding)")
    p.add_argument("--device", default="auto", help="for --runtime torch (onnxruntime runs on the CPU)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                   help="torch (default), or onnx: onnxruntime on RUN/model.onnx, exported first if missing "
                        "(classification runs)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("sample", help="draw images from a generative run (AE, VAE, DCGAN, BiGAN) into a PNG grid")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", default=None, help="PNG file (default RUN_DIR/samples.png)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--nrow", type=int, default=8, help="images per row (default 8)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_sample)

    p = sub.add_parser("data", help="data sets: list, check")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    dsub.required = True
    q = dsub.add_parser("list", help="the registered data sets and whether they are present")
    q.set_defaults(func=_data_list)
    q = dsub.add_parser("check", help="where a data set was found, counts, checksums")
    q.add_argument("name")
    q.add_argument("--root", help="explicit folder with the files")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_data_check)
    from vislab.cli.detection import add_make_scenes_args, run_make_scenes
    q = dsub.add_parser("make-scenes", help="generate detection scenes (items pasted on textured canvases)")
    add_make_scenes_args(q)
    q.set_defaults(func=run_make_scenes)

    p = sub.add_parser("models", help="list the registered architectures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--table", action="store_true",
                   help="parameters, MACs and depth of each model (counted on meta tensors)")
    p.add_argument("--input", default="3x224x224", help="input size for --table, CxHxW (default 3x224x224)")
    p.add_argument("--kind", choices=("classifier", "segmentation", "generative", "captioning", "seq2seq", "detection", "all"), default="classifier",
                   help="which kind of model to list (default: classifiers)")
    p.add_argument("--png", help="with --table: also plot MACs vs parameters (log-log) to this PNG")
    p.set_defaults(func=_models)


def _train(args: argparse.Namespace) -> int:
    from vislab.config import load_config
    from vislab.tasks import runner
    from vislab.tasks.rundir import resume_config
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.deterministic:
        overrides.append("deterministic=true")
    if args.resume:
        if not args.run_dir:
            raise UserError("--resume needs --run-dir DIR (the run to continue)")
        if args.config:
            raise UserError("--resume takes the config saved in the run; drop the CONFIG argument")
        cfg = resume_config(args.run_dir, overrides)
    else:
        cfg = load_config(args.config, overrides)
    if args.nproc != 1:
        return _launch(args, cfg)
    progress = not args.no_progress
    if args.folds:
        out = runner.cross_validate(cfg, args.folds, args.run_dir, progress=progress)
        print(f"{args.folds}-fold cross-validation: {out['monitor']} {out['mean']:.4f} ± {out['std']:.4f}")
        return 0
    res = runner.train(cfg, args.run_dir, resume=args.resume, fresh=args.fresh, progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:       # one of several processes: process 0 says it
        return 0
    print(f"run directory: {res.run_dir}")
    best = (f"best.pt: the last epoch ({res.best['epoch']})" if res.best["monitor"] == "last"
            else f"best {res.best['monitor']} {res.best['value']:.4f} (epoch {res.best['epoch']})")
    print(f"{best}, training time {res.train_time_s:.1f}s")
    return 0


def _launch(args: argparse.Namespace, cfg) -> int:
    """``vislab train ... --nproc N``: the same command in N processes through torchrun's
    launcher (``torch.distributed.launcher``, a local rendezvous on a free port), after the
    mistakes that can be seen from here (config, run directory) are refused in one line."""
    from vislab.engine import distributed
    from vislab.io import resolve_device
    from vislab.tasks.rundir import check_run_dir
    if distributed.launched():
        raise UserError("--nproc starts the processes itself; under torchrun drop it (torchrun's --nproc-per-node "
                        "says how many)")
    if args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    if args.folds:
        raise UserError("--folds trains its folds one after the other in one process; drop --nproc")
    distributed.check_batch_for(cfg.train.batch_size, args.nproc)
    if cfg.train.sync_bn:
        distributed.check_sync_bn(resolve_device(cfg.device))
    if args.run_dir:
        check_run_dir(args.run_dir, args.resume, args.fresh)
    rest, skip = [], False
    for a in args.argv:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        rest.append(a)
    return distributed.launch(args.nproc, ["-m", "vislab", *rest])


def _evaluate(args: argparse.Namespace) -> int:
    from vislab.tasks import runner
    rep = runner.evaluate(args.run_dir, tta=args.tta, device=args.device)
    print(rep["summary"])
    print(f"  written: {os.path.join(args.run_dir, 'eval.json')}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from vislab.tasks import runner
    results = runner.predict(args.run_dir, args.images, args.device, args.topk, args.runtime,
                             log=lambda s: print(s, file=sys.stderr), beam=args.beam)
    for r in results:
        print(f"{r['path']}\t{r['line']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from vislab.tasks import runner
    out = runner.sample(args.run_dir, args.n, args.out, args.seed, args.nrow, args.device)
    print(f"{args.n} samples: {out}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    import vislab.detection  # noqa: F401  (registers the detection data sets; no torch)
    from vislab.data.datasets import get_dataset_info, list_datasets, locate
    for name in list_datasets():
        info = get_dataset_info(name)
        try:
            where = locate(name) if name != "folder" else "(give data.root)"
            where = where or "(ships with a package)"
        except UserError:
            where = "not found"
        print(f"{name:16s} {where:40s} {info.description}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    import vislab.detection  # noqa: F401  (registers the detection data sets; no torch)
    from vislab.data.datasets import check_dataset
    rep = check_dataset(args.name, args.root)
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0 if rep["ok"] else 1
    print(f"{rep['name']}: found in {rep['folder'] or '(package data)'}")
    for split in ("train", "test"):
        s = rep[split]
        print(f"  {split}: {s['count']} images of shape {tuple(s['shape'])}, per class {s['per_class']}")
    for f in rep["files"]:
        ok = "ok" if f["ok"] else "MISMATCH"
        how = ("content" if f.get("content_ok") and not f["sha256_ok"]
               else "Debian's file" if f.get("repackaged") else "file")
        print(f"  {os.path.basename(f['file'])}: sha256 {f['sha256'][:16]}... {ok} ({how} checksum)")
    return 0 if rep["ok"] else 1


def _models(args: argparse.Namespace) -> int:
    import vislab.tasks  # noqa: F401  (each task registers the models of its kind: detectors, captioners...)
    from vislab.models import list_models, model_family
    names = list_models(args.pattern, None if args.kind == "all" else args.kind)
    if not args.table:
        for name in names:
            print(f"{name:32s} {model_family(name)}")
        return 0
    from vislab.analysis.zoo import zoo_plot, zoo_table
    size = parse_input_size(args.input)
    rows = zoo_table(size, names)
    print(f"{'model':24s} {'family':14s} {'params':>14s} {'GMACs':>9s} {'depth':>6s}   "
          f"(input {'x'.join(map(str, size))}; FLOPs = 2 x MACs)")
    for r in rows:
        macs = f"{r.macs / 1e9:9.3f}" if r.macs is not None else f"{'-':>9s}"
        depth = f"{r.depth:6d}" if r.depth is not None else f"{'-':>6s}"
        note = f"   ({r.error})" if r.error else ""
        print(f"{r.name:24s} {r.family:14s} {r.params:14,d} {macs} {depth}{note}")
    if args.png:
        zoo_plot(rows, args.png)
        print(f"plot: {args.png}")
    return 0
