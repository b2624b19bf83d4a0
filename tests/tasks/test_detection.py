"""The detection task end to end through the CLI (train each detection recipe briefly, evaluate,
predict, detect, report), its eval.json against pycocotools on the files it writes, and the
packed targets that carry variable numbers of boxes and the scenes' maps through the engine's
tensor loader."""

import json

import pytest
import torch
from PIL import Image

from tests.metrics.coco_oracle import pycocotools_eval

COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}
SMALL = ["--set", "model.kwargs.backbone_kwargs={widths: [16, 32, 64, 128], stem_width: 16}",
         "--set", "data.kwargs.val=16", "--set", "data.kwargs.test=24",
         "--set", "train.batch_size=16", "--no-progress",
         "--set", "model.kwargs.score_thresh=0.001"]   # after one short epoch scores are near the prior 0.01
# per recipe: its narrower neck, and the loss terms it logs
RECIPES = {"retinanet": (["--set", "model.kwargs.fpn_chs=32"], {"train_cls", "train_box"}),
           "centernet": (["--set", "model.kwargs.neck_chs=32", "--set", "model.kwargs.head_chs=32"],
                         {"train_heatmap", "train_size", "train_offset"}),
           "yolov3": (["--set", "model.kwargs.neck_chs=32"], {"train_box", "train_obj", "train_cls"})}


def test_packed_targets_round_trip():
    from vislab.tasks.detection import pack_targets, unpack_targets
    targets = [{"boxes": torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8.5]]), "labels": torch.tensor([3, 0])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
               {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([9])}]
    instance = torch.zeros(3, 4, 5, dtype=torch.uint8)
    instance[0, 0, :2], instance[0, 3, 4], instance[2, 1:3, 1:3] = 1, 2, 1
    semantic = torch.randint(0, 7, (3, 4, 5))
    packed = pack_targets(targets, [instance, semantic])
    assert packed.shape == (3, 2 + 5 * 2 + 2 * 4 * 5) and packed.dtype == torch.float32
    assert packed[:, :2].tolist() == [[2, 2]] * 3
    assert packed[0, 7:12].tolist() == [0, 5, 6, 7, 8.5] and packed[1, 2:12].eq(-1).all()
    back = unpack_targets(packed, (4, 5))
    for a, b, inst, sem in zip(targets, back, instance, semantic):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        assert b["labels"].dtype == torch.int64 and b["semantic"].dtype == torch.int64
        assert torch.equal(b["semantic"], sem)
        assert b["masks"].dtype == torch.uint8 and b["masks"].shape == (len(a["labels"]), 4, 5)
        for j, m in enumerate(b["masks"]):
            assert torch.equal(m.bool(), inst == j + 1)
    assert back[0]["masks"].sum() == 3 and back[2]["masks"].sum() == 4
    boxes_only = unpack_targets(pack_targets(targets), (4, 5))   # no maps: no masks
    assert pack_targets(targets).shape == (3, 12) and "masks" not in boxes_only[0]
    assert torch.equal(boxes_only[0]["boxes"], targets[0]["boxes"])
    assert set(unpack_targets(pack_targets(targets, [instance]), (4, 5))[0]) == {"boxes", "labels", "masks"}


@pytest.fixture(scope="module", params=list(RECIPES))
def run_dir(request, tmp_path_factory):
    """A briefly trained run of each detection recipe, in a folder named after it."""
    from vislab.cli import main
    run = tmp_path_factory.mktemp("det") / request.param
    assert main(["train", request.param, "--run-dir", str(run), "--set", "train.epochs=1",
                 "--set", "data.limit_train=64", *SMALL, *RECIPES[request.param][0]]) == 0
    return run


def test_train_then_evaluate_writes_the_coco_numbers(run_dir, run_cli):
    code, out, err = run_cli("evaluate", run_dir)
    assert code == 0, err
    assert "24 test scenes" in out and "Average Precision" in out
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["task"] == "detection" and ev["num_images"] == 24
    categories = json.loads((run_dir / "eval_gt.json").read_text())["categories"]
    assert COCO_KEYS <= set(ev["coco"]) and set(ev["per_category"]) == {c["name"] for c in categories}
    assert (run_dir / "plots" / "detections.png").exists()
    gt = json.loads((run_dir / "eval_gt.json").read_text())
    results = json.loads((run_dir / "eval_detections.json").read_text())
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_loss", "val_ap", "val_ap50"} | RECIPES[run_dir.name][1] <= set(metrics)
    assert len(results) > 24
    ref = pycocotools_eval(gt, results).stats
    ours = [ev["coco"][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert ours == pytest.approx(list(ref[:6]), abs=1e-9)


def test_predict_detect_and_report(run_dir, run_cli, tmp_path):
    from vislab.detection.scenes import SceneConfig, make_scenes
    scene = make_scenes("test", 1, SceneConfig(image_size=(64, 64), objects=(2, 2)))
    image = tmp_path / "scene.png"
    Image.fromarray(scene.images[0].permute(1, 2, 0).numpy()).resize((128, 96)).save(image)
    code, out, err = run_cli("predict", run_dir, image)
    assert code == 0, err
    assert str(image) in out
    drawn = tmp_path / "drawn.png"
    code, out, err = run_cli("detect", run_dir, image, "--out", drawn, "--score-thr", "0.0")
    assert code == 0, err
    assert drawn.exists() and "detections drawn on" in out
    for line in out.splitlines()[:-1]:             # boxes in the file's pixels (128 x 96)
        x1, y1, x2, y2 = map(float, line.split("box")[1].split())
        assert 0 <= x1 <= x2 <= 128 and 0 <= y1 <= y2 <= 96
    code, out, err = run_cli("detect", run_dir, "--eval-scenes", "5")
    assert code == 0, err
    assert json.loads((run_dir / "detect_eval.json").read_text())["num_images"] == 5
    code, out, err = run_cli("report", run_dir)
    assert code == 0, err
    html = (run_dir / "report.html").read_text()
    assert "COCO box evaluation" in html and "Detections on test scenes" in html
    assert "Precision-recall per category" in html and (run_dir / "plots" / "pr_curves.png").exists()


def test_user_mistakes(run_cli, tmp_path):
    code, _, err = run_cli("train", "retinanet", "--run-dir", tmp_path / "a", "--set", "data.name=mnist",
                           "--no-progress")
    assert code == 2 and "data.name: scenes" in err
    few = ["--set", "data.kwargs.train=8", "--set", "data.kwargs.val=4", "--no-progress"]
    code, _, err = run_cli("train", "retinanet", "--run-dir", tmp_path / "b", "--set", "model.name=resnet18", *few)
    assert code == 2 and "retinanet" in err
    code, _, err = run_cli("train", "retinanet", "--run-dir", tmp_path / "c", "--set", "model.kwargs.cls_loss=ce", *few)
    assert code == 2 and "cls_loss" in err
    # a model's own refusal reaches the user as it is, not wrapped as "does not take these arguments"
    code, _, err = run_cli("train", "yolov3", "--run-dir", tmp_path / "d", "--set", "model.kwargs.anchors=[[1, 2]]", *few)
    assert code == 2 and err.strip().endswith("got [(1, 2)]") and "does not take" not in err and len(err.strip().splitlines()) == 1
