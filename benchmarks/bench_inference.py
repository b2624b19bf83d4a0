"""CPU inference: PyTorch eager, BatchNorm folded + channels_last, torch.compile and onnxruntime.

    python -m benchmarks.bench_inference [--rounds 7] [--round-seconds 1] [--run RUN] [--threads N] [--quick]

Models: the default recipe's CNN (``small_cnn``, 1x28x28, 10 classes; random weights, or the
weights of a classification run with ``--run``) at batch 1, 64 and 512, and vislab's ResNet-50
(3x224x224, 1000 classes, random weights) at batch 1 and 16.  Runtimes, all fp32 on the same
input with the same number of threads:
  eager        the model as built, under torch.inference_mode
  fused+CL     BatchNorm folded into the convolutions (vislab.analysis.fuse_bn), channels_last
  compile      fused+CL through torch.compile (inductor, frozen weights, a cold cache); the
               compile time is reported apart, the figures are the steady state
  onnxruntime  the graph of ``vislab export`` (vislab.tasks.export.onnx_bytes) in an
               onnxruntime CPU session
Each (model, runtime, batch) lives in its own worker process: onnxruntime's spinning threads
slow whatever runs beside them.  The workers are set up one at a time (export, compile, warm-up,
outputs checked against eager), then the parent asks the workers of one model for one timed
round each (calls for about --round-seconds), in a rotating order, one worker at a time, for
--rounds rounds; each figure is the median of its rounds.  The fp32 sgemm of this machine is
measured in the parent, with every worker idle, before the rounds and after each model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.common import measured_sgemm_gflops

RUNTIMES = ("eager", "fused+CL", "compile", "onnxruntime")
BATCHES = {"cnn": (1, 64, 512), "resnet50": (1, 16)}
GOAL = ("cnn", 64, 2.0)             # onnxruntime >= 2x eager on the default CNN at batch 64
WARMUP = 3                          # untimed calls after the setup
PAUSE_S = 0.2                       # between two workers: the last one's spinning threads go idle
TAG = "@@ "                         # marks the worker's protocol lines on its stdout
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- worker side

def build_model(name: str, run: str | None) -> tuple[torch.nn.Module, tuple[int, int, int], str]:
    """The model in eval mode, its input size (C, H, W) and a label."""
    from vislab.models import create_model
    torch.manual_seed(0)
    if name == "resnet50":
        return create_model("resnet50", num_classes=1000, in_chans=3).eval(), (3, 224, 224), \
            "vislab resnet50, random weights"
    if run:
        from vislab.tasks import load_run
        r = load_run(run, "cpu")
        return r.model, (r.info.in_chans, *r.info.image_size), f"{r.config.model.name} of {run}"
    from vislab.config import load_config
    cfg = load_config(None)
    model = create_model(cfg.model.name, num_classes=10, in_chans=1, **cfg.model.kwargs)
    return model.eval(), (1, 28, 28), f"{cfg.model.name} of the default recipe, random weights"


def prepare(runtime: str, model: torch.nn.Module, x: torch.Tensor, threads: int) -> tuple[Callable[[], object], float]:
    """The call to time and the seconds its one-off preparation took (export or compile)."""
    from vislab.analysis import fuse_bn
    if runtime == "eager":
        return lambda: model(x), 0.0
    if runtime == "onnxruntime":
        from vislab.tasks.export import onnx_bytes, onnx_session
        t0 = time.perf_counter()
        session = onnx_session(onnx_bytes(model, tuple(x.shape[1:])), threads)
        name, xs = session.get_inputs()[0].name, x.numpy()
        return lambda: session.run(None, {name: xs})[0], time.perf_counter() - t0
    fused = fuse_bn(model, tuple(x.shape[1:])).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    if runtime == "fused+CL":
        return lambda: fused(x_cl), 0.0
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True               # weights become constants: folded, prepacked
    compiled = torch.compile(fused)
    t0 = time.perf_counter()
    compiled(x_cl)
    return lambda: compiled(x_cl), time.perf_counter() - t0


def _send(msg: dict) -> None:
    print(TAG + json.dumps(msg), flush=True)


def worker(model_name: str, runtime: str, batch: int, threads: int, round_seconds: float, run: str | None) -> None:
    """Set up one configuration, say so, then answer each ``round`` line on stdin with the
    seconds per call of about ``round_seconds`` of calls."""
    torch.set_num_threads(threads)
    try:
        from vislab.analysis import summarize
        model, size, label = build_model(model_name, run)
        flops = summarize(model, size).flops       # outside inference_mode, where it counts nothing
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            ref = model(x)
            fn, prep_s = prepare(runtime, model, x, threads)
            err = float((torch.as_tensor(fn()) - ref).abs().max())
            if not err <= 1e-3 * float(ref.abs().max()):
                raise RuntimeError(f"{runtime} disagrees with eager by {err:.3g}")
            for _ in range(WARMUP):
                fn()
            t0 = time.perf_counter()
            fn()
            calls = max(1, round(round_seconds / (time.perf_counter() - t0)))
            _send({"ready": True, "label": label, "size": size, "prep_s": prep_s, "calls": calls, "err": err,
                   "flops_per_image": flops})
            for line in sys.stdin:
                if line.strip() != "round":
                    break
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                _send({"s": (time.perf_counter() - t0) / calls})
    except Exception as e:                       # no C++ compiler, an op the exporter lacks...
        _send({"error": f"{type(e).__name__}: {e}".splitlines()[0][:160]})


# ----------------------------------------------------------------------------- parent side

@dataclass
class Worker:
    """One configuration's process, and the seconds per call of each of its rounds."""
    model: str
    runtime: str
    batch: int
    proc: subprocess.Popen | None = None
    log: str = ""
    info: dict = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    error: str | None = None

    def start(self, args: argparse.Namespace, tmp: str) -> None:
        name = f"{self.model}-{self.runtime}-{self.batch}".replace("+", "")
        self.log = os.path.join(tmp, name + ".log")
        cmd = [sys.executable, "-m", "benchmarks.bench_inference", "--worker", self.model, self.runtime,
               str(self.batch), "--threads", str(args.threads), "--round-seconds", str(args.round_seconds)]
        cmd += ["--run", args.run] if args.run else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
               "TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "inductor-" + name)}   # a cold compile
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         text=True, cwd=ROOT, env=env)
        self.info = self._receive() or {}

    def _receive(self) -> dict | None:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                msg = json.loads(line[len(TAG):])
                if "error" in msg:
                    self.error = msg["error"]
                    self.stop()
                    return None
                return msg
        with open(self.log) as f:
            tail = f.read().strip().splitlines()[-1:] or ["no output"]
        self.error = f"worker ended: {tail[0][:160]}"
        self.stop()
        return None

    def round(self) -> None:
        if self.error:
            return
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        msg = self._receive()
        if msg:
            self.times.append(msg["s"])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median of the rounds."""
        return (max(self.times) - min(self.times)) / self.seconds


def bench_model(model: str, batches: tuple[int, ...], runtimes: tuple[str, ...], args: argparse.Namespace,
                tmp: str) -> list[Worker]:
    workers = [Worker(model, rt, b) for b in batches for rt in runtimes]
    for w in workers:
        print(f"  setting up {model} {w.runtime} batch {w.batch}...", file=sys.stderr, flush=True)
        w.start(args, tmp)
    live = [w for w in workers if not w.error]
    for r in range(args.rounds if live else 0):
        k = r % len(live)                          # a rotating order: no worker always goes first
        for w in live[k:] + live[:k]:
            w.round()
            time.sleep(PAUSE_S)
    for w in workers:
        w.stop()
    return workers


def print_table(title: str, workers: list[Worker], sgemm: float) -> None:
    info = next((w.info for w in workers if w.info), None)
    if info is None:
        print(f"\n{title}: no worker started ({workers[0].error})")
        return
    gflop = info["flops_per_image"] / 1e9
    print(f"\n{title}: {info['label']}, input {'x'.join(map(str, info['size']))}, "
          f"{gflop:.4g} GFLOP/image (2 x MACs)")
    print(f"{'runtime':12s} {'batch':>5s} {'ms/batch':>10s} {'images/s':>10s} {'GFLOP/s':>8s} {'% sgemm':>8s} "
          f"{'x eager':>8s} {'spread':>7s}  one-off")
    eager = {w.batch: w.seconds for w in workers if w.runtime == "eager" and w.times}
    for w in workers:
        if not w.times:
            print(f"{w.runtime:12s} {w.batch:5d}   unavailable: {w.error}")
            continue
        ips = w.batch / w.seconds
        ratio = f"{eager[w.batch] / w.seconds:7.2f}x" if w.batch in eager else f"{'-':>8s}"
        once = {"compile": "compile", "onnxruntime": "export + session"}.get(w.runtime)
        once = f"{once} {w.info['prep_s']:.1f} s" if once else ""
        print(f"{w.runtime:12s} {w.batch:5d} {w.seconds * 1e3:10.2f} {ips:10.1f} {ips * gflop:8.1f} "
              f"{ips * gflop / sgemm:8.1%} {ratio} {w.spread:7.0%}  {once}")
    ort = {w.batch: w.seconds for w in workers if w.runtime == "onnxruntime" and w.times}
    pairs = [f"batch {b} {eager[b] / ort[b]:.2f}x" for b in eager if b in ort]
    if pairs:
        print("onnxruntime / eager (images/s): " + ", ".join(pairs))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds per configuration")
    p.add_argument("--round-seconds", type=float, default=1.0, help="about how long one round of calls lasts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of every runtime")
    p.add_argument("--run", help="a classification run whose model replaces the default CNN")
    p.add_argument("--sgemm-best-of", type=int, default=5, help="sgemm products timed at each measuring point")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 short rounds, sgemm best of 2, the CNN at batch 1 and 64, ResNet-50 at "
                        "batch 1 without torch.compile")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "RUNTIME", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        model, runtime, batch = args.worker
        worker(model, runtime, int(batch), args.threads, args.round_seconds, args.run)
        return
    if min(args.rounds, args.threads, args.sgemm_best_of) < 1 or args.round_seconds <= 0:
        p.error("--rounds, --threads and --sgemm-best-of must be >= 1, --round-seconds > 0")
    if args.run:
        from vislab.config import config_from_run
        config_from_run(args.run)                  # a folder that is not a run fails here, once
    if args.quick:
        args.rounds, args.round_seconds, args.sgemm_best_of = 2, 0.05, 2
    runtimes = tuple(r for r in RUNTIMES if not (args.no_compile and r == "compile"))
    plan = [("cnn", BATCHES["cnn"][:2] if args.quick else BATCHES["cnn"], runtimes),
            ("resnet50", (1,) if args.quick else BATCHES["resnet50"],
             tuple(r for r in runtimes if r != "compile") if args.quick else runtimes)]

    import onnxruntime
    print(f"CPU inference, fp32, {args.threads} threads per runtime, each configuration in its own process; "
          f"median of {args.rounds} interleaved rounds of ~{args.round_seconds:g} s")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {_cpu_name()}, "
          f"{os.cpu_count()} logical CPUs, load average at start {os.getloadavg()[0]:.1f}")
    sgemm = [measured_sgemm_gflops(args.sgemm_best_of)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_inference-") as tmp:
        for model, batches, rts in plan:
            results[model] = bench_model(model, batches, rts, args, tmp)
            sgemm.append(measured_sgemm_gflops(args.sgemm_best_of))
    peak = max(sgemm)                              # the best measured: the more conservative percentage
    print(f"measured sgemm (fp32 2048x2048), best of {args.sgemm_best_of * len(sgemm)}: {peak:.1f} GFLOP/s "
          f"(best of {args.sgemm_best_of} before the rounds and after each model: "
          f"{', '.join(f'{g:.0f}' for g in sgemm)}); load average at end {os.getloadavg()[0]:.1f}")
    print_table("default CNN" if not args.run else "the run's CNN", results["cnn"], peak)
    print_table("ResNet-50", results["resnet50"], peak)
    print("'x eager': images/s over eager's at the same batch; 'spread': (slowest - fastest round) / median; "
          "'% sgemm': GFLOP/s over the measured sgemm above")

    model, batch, target = GOAL
    ws = {w.runtime: w for w in results[model] if w.batch == batch and w.times}
    if "eager" in ws and "onnxruntime" in ws:
        ratio = ws["eager"].seconds / ws["onnxruntime"].seconds
        print(f"goal onnxruntime >= {target:g}x eager on the default CNN at batch {batch}: "
              f"{'MET' if ratio >= target else 'NOT MET'} ({ratio:.2f}x)")
    else:
        print(f"goal onnxruntime >= {target:g}x eager on the default CNN at batch {batch}: not measured")
    print("note: this machine is shared with other jobs while this runs; the rounds are interleaved so that "
          "load changes hit every runtime alike, but the figures stay noisy (see 'spread' and the sgemm values)")
    load = os.getloadavg()[0]
    if args.threads > 1 and load > os.cpu_count():
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs: with {args.threads} threads a runtime that "
              "wakes its threads for every op (PyTorch eager) waits for descheduled threads; compare --threads 1")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
