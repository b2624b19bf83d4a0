"""Sliding-window scoring: every window cropped and classified on its own (the reference)
against the convolutionalised classifier (one pass per pyramid level), same windows, same
classifier (``window_cnn``, untrained: the cost does not depend on the weights).

    .venv/bin/python -m benchmarks.bench_sliding_window            # 5 scenes of 96x96, default pyramid
    .venv/bin/python -m benchmarks.bench_sliding_window --quick    # 2 scenes of 64x64

Prints the windows per image, the time per image of both paths, the ratio and the largest
difference between their class probabilities.
"""

from __future__ import annotations

import argparse
import time

import torch

from vislab.detection.scenes import SceneConfig, make_scenes
from vislab.detection.sliding_window import SlidingWindowDetector
from vislab.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 scenes of 64x64")
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    n, size = (2, 64) if args.quick else (args.scenes, args.size)
    scenes = make_scenes("test", n, SceneConfig(image_size=(size, size), objects=(1, 3), scale=(1.0, 2.0)))
    torch.manual_seed(0)
    model = create_model("window_cnn", num_classes=11, in_chans=3).eval()
    classes = [str(k) for k in range(10)] + ["background"]
    paths = {conv: SlidingWindowDetector(model, [0.2] * 3, [0.2] * 3, classes, conv=conv) for conv in (False, True)}
    times, probs = {False: 0.0, True: 0.0}, {}
    windows, diff = 0, 0.0
    for i in range(n):
        image = scenes[i][0]
        for conv, det in paths.items():
            t0 = time.perf_counter()
            boxes, probs[conv] = det.candidates(image)
            times[conv] += time.perf_counter() - t0
        windows += len(boxes)
        diff = max(diff, float((probs[False] - probs[True]).abs().max()))
    print(f"{n} scenes of {size}x{size}, {windows / n:.0f} windows each, {torch.get_num_threads()} thread(s)")
    print(f"explicit windows (reference): {times[False] / n * 1000:8.1f} ms/image")
    print(f"convolutionalised:            {times[True] / n * 1000:8.1f} ms/image   "
          f"{times[False] / times[True]:.1f}x faster")
    print(f"largest probability difference: {diff:.1e}")


if __name__ == "__main__":
    main()
