import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.metrics.coco_oracle import pycocotools_eval, random_coco
from vislab.cli import main
from vislab.cli.detection import add_make_scenes_args, run_make_scenes
from vislab.errors import UserError


def _files(tmp_path, seed=5):
    gt, results = random_coco(seed)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    return gt, results


def test_eval_detections_prints_and_writes_pycocotools_numbers(tmp_path, capsys):
    gt, results = _files(tmp_path)
    rc = main(["eval-detections", str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), "--per-class",
               "--voc", "--plot", str(tmp_path / "pr.png"), "--json", str(tmp_path / "out.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    assert "Pascal VOC" in out and (tmp_path / "pr.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out.json").read_text())
    ref = pycocotools_eval(gt, results).stats
    np.testing.assert_allclose(list(saved["coco"].values()), ref, rtol=0, atol=1e-9)
    assert set(saved["per_category"]) == {c["name"] for c in gt["categories"]}
    assert 0 <= saved["voc"]["mAP"] <= 1


def test_eval_detections_mistakes_are_one_line(tmp_path, capsys):
    _, results = _files(tmp_path)
    assert main(["eval-detections", str(tmp_path / "nope.json"), str(tmp_path / "pred.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "check the path" in err
    (tmp_path / "bad.json").write_text(json.dumps([dict(results[0], image_id=123456)]))
    assert main(["eval-detections", str(tmp_path / "gt.json"), str(tmp_path / "bad.json")]) == 2
    assert "another data set" in capsys.readouterr().err


def test_eval_detections_runs_without_torch(tmp_path):
    gt, results = _files(tmp_path)
    code = ("import sys\n"
            "from vislab.cli import main\n"
            "rc = main(['eval-detections', *sys.argv[1:3], '--per-class', '--voc', '--plot', sys.argv[3], "
            "'--json', sys.argv[4]])\n"
            "assert rc == 0, rc\n"
            "import vislab.detection, vislab.detection.formats, vislab.metrics.detection\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    paths = [str(tmp_path / f) for f in ("gt.json", "pred.json", "pr.png", "out.json")]
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Pascal VOC" in proc.stdout and (tmp_path / "pr.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out.json").read_text())
    np.testing.assert_allclose(list(saved["coco"].values()), pycocotools_eval(gt, results).stats, rtol=0, atol=1e-9)


def _scene_args(*argv):
    p = argparse.ArgumentParser()
    add_make_scenes_args(p)
    return p.parse_args(argv)


def test_make_scenes(tmp_path, capsys):
    out = tmp_path / "scenes"
    args = _scene_args(str(out), "--source", "digits", "--train", "4", "--val", "2", "--test", "0",
                       "--size", "40x56", "--objects", "1", "3", "--seed", "7")
    assert run_make_scenes(args) == 0
    assert "train: 4 scenes" in capsys.readouterr().out
    coco = json.loads((out / "train.json").read_text())
    assert coco["images"][0]["width"] == 56 and coco["images"][0]["height"] == 40
    assert (out / "val.json").exists() and not (out / "test.json").exists()
    with pytest.raises(UserError, match="not empty"):
        run_make_scenes(args)
    with pytest.raises(UserError, match="--size"):
        run_make_scenes(_scene_args(str(tmp_path / "other"), "--size", "big"))
