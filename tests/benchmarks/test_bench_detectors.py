"""``benchmarks/bench_detectors.py --quick`` in-process, on one thread: a row per detector with the
table's keys, each row's COCO numbers against pycocotools on the files its run wrote, and
``--reuse`` reading the rows back without training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmarks import bench_detectors as bench
from tests.metrics.coco_oracle import pycocotools_eval

TABLE_KEYS = {"name", "AP", "AP50", "AP75", "APs", "APm", "APl", "params", "macs", "train_s", "train_img_s",
              "infer_ms", "fps", "test_scenes", "sgemm_gflops", "run_dir"}
QUICK_TEST_SCENES = 24


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The ``--quick --ablation`` run's result and its output folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench_detectors")
    try:
        result = bench.main(["--quick", "--ablation", "--out", str(out), "--images-dir", ""])
    finally:
        torch.set_num_threads(threads)
    return result, out


def expected_rows() -> set[str]:
    vislab = {n for n in bench.VISLAB if os.path.exists(os.path.join(bench.RECIPES_DIR, f"{n}.yaml"))}
    return vislab | set(bench.TORCHVISION)


def test_a_row_per_detector_with_the_table_keys(quick):
    result, out = quick
    rows = {r["name"]: r for r in result["detectors"]}
    assert set(rows) == expected_rows()
    for r in rows.values():
        assert TABLE_KEYS <= set(r), r["name"]
        assert r["test_scenes"] == QUICK_TEST_SCENES and r["epochs"] == 1 and r["train_scenes"] == 64
        assert 0 <= r["AP"] <= 1 and r["params"] > 0 and r["macs"] > 0 and r["infer_ms"] > 0
        assert r["fps"] == pytest.approx(1e3 / r["infer_ms"])
        assert (out / (r["name"] + ".json")).exists()
    assert [r["name"] for r in result["ablation"]] == [f"retinanet ({loss})" for loss in bench.CLS_LOSSES]


def test_pairs_are_timed_side_by_side(quick):
    speed = quick[0]["speed"]
    assert set(speed) == {"retinanet", "tv-retinanet", "ssd", "tv-ssd"}
    assert all(v["train_img_s"] > 0 and v["infer_ms"] > 0 for v in speed.values())


def test_torchvision_copies_have_the_same_architecture(quick):
    """Same backbone, neck and head widths: torchvision's classes hold exactly as many parameters."""
    rows = {r["name"]: r for r in quick[0]["detectors"]}
    assert rows["tv-retinanet"]["params"] == rows["retinanet"]["params"]
    assert rows["tv-ssd"]["params"] == rows["ssd"]["params"]
    assert rows["tv-retinanet"]["macs"] == rows["retinanet"]["macs"]


def test_coco_numbers_match_pycocotools_on_the_written_files(quick):
    """Every row, torchvision's included (the same engine evaluates them): the six AP figures and
    AR100 equal pycocotools' on the run's ``eval_gt.json`` / ``eval_detections.json``, over 24 test
    scenes.  After one epoch on 64 scenes the APs are near 0 (AR100 is not), so this proves the
    rows carry the evaluation of the files their runs wrote, not that the detectors are good."""
    result, _ = quick
    for r in result["detectors"] + result["ablation"][1:]:
        run = Path(r["run_dir"])
        gt = json.loads((run / "eval_gt.json").read_text())
        dets = json.loads((run / "eval_detections.json").read_text())
        assert len(gt["images"]) == QUICK_TEST_SCENES
        if not dets:                        # pycocotools cannot load an empty list of results
            assert r["AP"] == 0
            continue
        ref = pycocotools_eval(gt, dets).stats
        ours = [r[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")]
        assert ours == pytest.approx([*ref[:6], ref[8]], abs=1e-9), r["name"]


def test_reuse_reads_the_rows_back_without_training(quick, monkeypatch, capsys):
    result, out = quick

    def no_training(*args, **kwargs):
        raise AssertionError("--reuse trained a model")

    monkeypatch.setattr(bench, "train", no_training)
    again = bench.main(["--quick", "--ablation", "--reuse", "--out", str(out), "--images-dir", ""])
    assert set(again.pop("speed")) == set(result["speed"])      # timings: measured again, not compared
    assert again == {k: v for k, v in result.items() if k != "speed"}
    assert "FAILED" not in capsys.readouterr().out
