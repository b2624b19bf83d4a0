"""``benchmarks/bench_two_stage.py --quick`` in-process, on one thread, for Faster R-CNN and Panoptic
FPN: the box row's COCO numbers against pycocotools on the files its run wrote, the panoptic row's
PQ / SQ / RQ equal to its ``eval.json``, and ``rows.json`` read back by ``bench_detectors --two-stage``
into the one table of every detector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench_detectors
from benchmarks import bench_two_stage as bench
from tests.metrics.coco_oracle import pycocotools_eval


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench_two_stage")
    try:
        result = bench.main(["--quick", "--models", "faster_rcnn", "panoptic_fpn", "--out", str(out),
                             "--images-dir", ""])
    finally:
        torch.set_num_threads(threads)
    return result, out


def test_box_row_matches_pycocotools_on_its_files(quick):
    result, _ = quick
    [row] = result["detectors"]
    assert row["name"] == "faster_rcnn" and row["epochs"] == 1 and row["train_scenes"] == 64
    assert row["params"] > 0 and row["macs"] > 0 and row["fps"] == pytest.approx(1e3 / row["infer_ms"])
    run = Path(row["run_dir"])
    gt = json.loads((run / "eval_gt.json").read_text())
    dets = json.loads((run / "eval_detections.json").read_text())
    if dets:
        ref = pycocotools_eval(gt, dets).stats
        assert [row[k] for k in ("AP", "AP50", "APs")] == pytest.approx([ref[0], ref[1], ref[3]], abs=1e-9)
        one = {**gt, "categories": [{"id": 1, "name": "object"}],
               "annotations": [{**a, "category_id": 1} for a in gt["annotations"]]}
        ref_any = pycocotools_eval(one, [{**d, "category_id": 1} for d in dets]).stats
        assert row["AP50_any"] == pytest.approx(ref_any[1], abs=1e-9)
    else:
        assert row["AP"] == 0


def test_panoptic_row_carries_its_evaluation(quick):
    result, _ = quick
    [row] = result["panoptic"]
    ev = json.loads((Path(row["run_dir"]) / "eval.json").read_text())
    assert {k: row[k] for k in ("pq", "sq", "rq", "pq_things", "pq_stuff")} == {
        k: ev["panoptic"][k] for k in ("pq", "sq", "rq", "pq_things", "pq_stuff")}
    assert row["mask_AP"] == ev["coco_segm"]["AP"]


def test_rows_join_the_one_stage_table(quick, capsys):
    _, out = quick
    rows = bench_detectors.read_two_stage(str(out / "rows.json"))
    assert [r["name"] for r in rows] == ["faster_rcnn"]
    bench_detectors.print_table(rows, 100.0)
    assert "faster_rcnn (read)" in capsys.readouterr().out
