"""Single-object localisation: the multi-task loss and the box coding against hand computations
and torchvision, the two-headed model, and the task end to end through the CLI (train,
evaluate, detect) with the COCO numbers checked by pycocotools."""

import json

import numpy as np
import pytest
import torch
import torchvision

from tests.metrics.coco_oracle import pycocotools_eval
from vislab.detection.localization import (
    Localizer,
    decode_boxes,
    encode_boxes,
    multitask_loss,
    predict,
)
from vislab.errors import UserError
from vislab.models import create_model

CONFIG = "localization"
TINY = ["--set", "data.kwargs={source: digits, image_size: 32, scale: [2, 3], train: 40, val: 10, test: 12}",
        "--set", "model.kwargs={widths: [8, 8, 8], box_hidden: 16}", "--set", "train.epochs=1",
        "--set", "train.batch_size=16", "--no-progress"]


@pytest.mark.parametrize("alpha,box_loss,beta", [(0.5, "smooth_l1", 0.05), (0.2, "smooth_l1", 1.0), (0.7, "l2", 0.05)])
def test_multitask_loss_is_the_weighted_sum_computed_by_hand(alpha, box_loss, beta):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    boxes = torch.rand(6, 4, generator=g, dtype=torch.float64)
    target = torch.cat((torch.tensor([0., 3, 1, 1, 2, 0], dtype=torch.float64)[:, None],
                        torch.rand(6, 4, generator=g, dtype=torch.float64)), 1)
    # cross-entropy: minus the log-softmax of the true class; smooth-L1: quadratic below beta
    ce = -(logits - logits.exp().sum(1, keepdim=True).log())[torch.arange(6), target[:, 0].long()].mean()
    d = (boxes - target[:, 1:]).abs()
    if box_loss == "smooth_l1":
        reg = torch.where(d < beta, 0.5 * d ** 2 / beta, d - 0.5 * beta).mean()
    else:
        reg = (d ** 2).mean()
    got = multitask_loss(logits, boxes, target, alpha, box_loss, beta)
    torch.testing.assert_close(got, alpha * ce + (1 - alpha) * reg)


def test_box_coding_against_torchvision():
    boxes = torch.tensor([[0., 0., 64., 64.], [10., 20., 30., 60.], [3.5, 7., 4.5, 9.]])
    t = encode_boxes(boxes, (64, 80))             # image 64 high, 80 wide
    scale = torch.tensor([80., 64., 80., 64.])
    torch.testing.assert_close(t, torchvision.ops.box_convert(boxes, "xyxy", "cxcywh") / scale)
    torch.testing.assert_close(t[1], torch.tensor([20 / 80, 40 / 64, 20 / 80, 40 / 64]))
    torch.testing.assert_close(decode_boxes(t, (64, 80)), boxes)
    # decoded boxes are clipped to the image
    torch.testing.assert_close(decode_boxes(torch.tensor([[0.9, 0.5, 0.4, 2.0]]), (10, 10)),
                               torch.tensor([[7., 0., 10., 10.]]))


def test_localizer_heads_and_backbone_face():
    torch.manual_seed(0)
    model = Localizer(create_model("small_cnn", num_classes=5, in_chans=3, widths=(4, 8, 8)), 3, (32, 48),
                      box_hidden=8, box_grid=2)
    x = torch.randn(3, 3, 32, 48)
    with torch.no_grad():      # the class head is the backbone's own
        torch.testing.assert_close(model.eval()(x)[0], model.backbone(x))
    logits, boxes = model.train()(x)
    assert logits.shape == (3, 5) and boxes.shape == (3, 4)
    target = torch.tensor([[1., .5, .5, .2, .2]] * 3)
    model.loss((logits, boxes), target).backward()
    assert all(p.grad is not None for p in model.parameters())
    # flip TTA: the average with the mirror image's prediction, its box mirrored back
    lg, bx = predict(model, [x], flip=True)
    assert model.training                                     # predict restores the mode
    with torch.no_grad():
        (l1, b1), (l2, b2) = model.eval()(x), model(x.flip(3))
    torch.testing.assert_close(lg, (l1 + l2) / 2)
    torch.testing.assert_close(bx, (b1 + b2 * torch.tensor([-1., 1, 1, 1]) + torch.tensor([1., 0, 0, 0])) / 2)
    with pytest.raises(UserError, match="convolutional backbone"):
        Localizer(create_model("vit_ti_16", num_classes=5, in_chans=3, img_size=32, small_input=True), 3, (32, 32))
    with pytest.raises(UserError, match="box_loss"):
        Localizer(create_model("small_cnn", num_classes=5, in_chans=3), 3, (32, 32), box_loss="l1")


@pytest.fixture(scope="module")
def loc_run(tmp_path_factory):
    from vislab.cli import main
    run = tmp_path_factory.mktemp("loc") / "run"
    assert main(["train", CONFIG, "--run-dir", str(run), *TINY]) == 0
    return run


def test_train_evaluate_matches_pycocotools(loc_run, run_cli):
    rows = [json.loads(line) for line in open(loc_run / "metrics.jsonl")]
    assert {"val_top1", "val_miou", "val_loc_acc", "train_top1"} <= set(rows[-1])
    code, out, err = run_cli("evaluate", loc_run)
    assert code == 0, err
    rep = json.loads((loc_run / "eval.json").read_text())
    assert rep["task"] == "localization" and rep["num_samples"] == 12 and len(rep["coco"]) == 12
    gt = json.loads((loc_run / "eval_gt.json").read_text())
    results = json.loads((loc_run / "eval_detections.json").read_text())
    assert len(gt["images"]) == 12 and len(results) == 12 * 10          # one box, every class scored
    np.testing.assert_allclose(list(rep["coco"].values()), pycocotools_eval(gt, results).stats, atol=1e-9)
    # mean IoU and accuracy from the written files: the best-scored detection of each image
    best = {}
    for r in results:
        if r["score"] > best.get(r["image_id"], {"score": -1})["score"]:
            best[r["image_id"]] = r
    anns = {a["image_id"]: a for a in gt["annotations"]}
    xyxy = lambda b: torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]]], dtype=torch.float64)  # noqa: E731
    ious = [float(torchvision.ops.box_iou(xyxy(best[i]["bbox"]), xyxy(anns[i]["bbox"]))) for i in anns]
    assert rep["miou"] == pytest.approx(np.mean(ious), abs=1e-5)
    assert rep["top1"] == pytest.approx(np.mean([best[i]["category_id"] == anns[i]["category_id"] for i in anns]))


def test_detect_draws_the_box(loc_run, run_cli, tmp_path):
    from PIL import Image

    from vislab.detection.localization import scene_options
    from vislab.detection.scenes import make_scenes
    config, _ = scene_options({"source": "digits", "image_size": 32, "scale": [2, 3]})
    image = make_scenes("test", 1, config, seed=3).images[0].permute(1, 2, 0).numpy()
    Image.fromarray(image).resize((64, 64)).save(tmp_path / "scene.png")       # another size
    code, out, err = run_cli("detect", loc_run, tmp_path / "scene.png", "--out", tmp_path / "d.png")
    assert code == 0, err
    assert "1 detections drawn" in out and Image.open(tmp_path / "d.png").size == (512, 512)
    box = [float(v) for v in out.split("box")[1].split()[:4]]
    assert all(0 <= v <= 64 for v in box)
    code, out, err = run_cli("detect", loc_run, "--eval-scenes", "5")
    assert code == 0, err
    assert json.loads((loc_run / "detect_eval.json").read_text())["num_samples"] == 5

    # predict gives the same class and box as detect (the box in the file's 64x64 pixels)
    code, out2, err = run_cli("predict", loc_run, tmp_path / "scene.png")
    assert code == 0, err
    predicted = [float(v) for v in out2.rsplit("  box ", 1)[1].split()[:4]]
    np.testing.assert_allclose(predicted, box, atol=0.06)


def test_report_of_a_localization_run(loc_run, run_cli):
    """The report works for any task: the localisation run's headline is its own evaluation."""
    code, out, err = run_cli("report", loc_run, "--device", "cpu")
    assert code == 0, err
    page = (loc_run / "report.html").read_text()
    rep = json.loads((loc_run / "eval.json").read_text())
    assert f"{rep['miou']:.3f}" in page and "COCO box evaluation" in page and "Training curves" in page


def test_mistakes(run_cli, tmp_path):
    code, _, err = run_cli("train", CONFIG, "--run-dir", tmp_path / "r", *TINY,
                           "--set", "data.kwargs.objects=2")
    assert code == 2 and "unknown data.kwargs" in err
    code, _, err = run_cli("train", CONFIG, "--run-dir", tmp_path / "r2", *TINY,
                           "--set", "data.name=digits")
    assert code == 2 and "data.name: scenes" in err
