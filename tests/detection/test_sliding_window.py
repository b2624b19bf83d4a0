"""Sliding-window detection: the pyramid's windows against hand-computed boxes, the
convolutionalised classifier against windows cropped and classified one by one, the
suppression against torchvision's batched NMS, the training windows against the IoU rule, and
the pipeline end to end through the CLI (make-scenes, train, evaluate, detect) with the COCO
numbers checked by pycocotools."""

import json

import numpy as np
import pytest
import torch
import torchvision

from tests.metrics.coco_oracle import pycocotools_eval
from vislab.detection.sliding_window import (
    PyramidConfig,
    SlidingWindowDetector,
    conv_scores,
    convolutionalised,
    explicit_scores,
    label_windows,
    pyramid,
    select,
    window_patches,
)
from vislab.errors import UserError
from vislab.models import create_model
from vislab.models.window_cnn import WindowCNN

CONFIG = "sliding_window"


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN statistics, as after training (a fresh BN is the identity)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_pyramid_windows_stand_for_hand_computed_boxes():
    image = torch.rand(3, 64, 64)
    levels = pyramid(image, PyramidConfig(scales=(1.0, 0.5), ratios=(1.0, 4.0)))
    one, tall_one, half = levels       # scales outer, ratios inner; (0.5, 4) is too low for a window
    assert (one.sx, one.sy, one.grid, one.image.shape) == (1.0, 1.0, (11, 11), (3, 72, 72))
    torch.testing.assert_close(one.boxes[:2], torch.tensor([[0., 0, 24, 24], [4, 0, 28, 24]]))
    torch.testing.assert_close(one.boxes[-1], torch.tensor([64., 64, 88, 88]) - 24)   # reaches the corner
    # ratio 4 (height / width): the level is 2x wider and 2x lower, boxes 12 wide and 48 high
    assert (tall_one.sx, tall_one.sy, tall_one.grid) == (2.0, 0.5, (3, 27))
    torch.testing.assert_close(tall_one.boxes[28], torch.tensor([2., 8, 14, 56]))      # row 1, column 1
    # scale 1/2: a 32x32 level, boxes of 48 pixels every 8
    assert half.grid == (3, 3)
    torch.testing.assert_close(half.boxes[1], torch.tensor([8., 0, 56, 48]))
    # the level is the image resized (antialiased bilinear) and padded with 4 zero pixels
    ref = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(half.image[:, 4:-4, 4:-4], ref)
    assert half.image[:, :4].abs().sum() == 0


def test_convolutionalised_scores_equal_windows_classified_one_by_one():
    torch.manual_seed(0)
    model = _trained_looking(WindowCNN(num_classes=4, widths=(4, 8, 8), hidden=8))
    config = PyramidConfig(scales=(1.2, 0.8), ratios=(0.5, 1.0))
    fcn = convolutionalised(model, 3, config)
    with torch.no_grad():
        for level in pyramid(torch.rand(3, 41, 37), config):
            conv, explicit = conv_scores(fcn, level.image), explicit_scores(model, level.image, 32, 4)
            torch.testing.assert_close(conv, explicit, atol=1e-5, rtol=1e-5)
            ny, nx = level.grid
            assert conv.shape == (ny * nx, 4)
            for r, c in [(0, 0), (ny - 1, nx - 1), (ny // 2, nx - 1)]:     # crops cut by hand
                crop = level.image[None, :, 4 * r:4 * r + 32, 4 * c:4 * c + 32]
                torch.testing.assert_close(explicit[r * nx + c], model(crop)[0], atol=1e-5, rtol=1e-5)


def test_conv_path_needs_a_convolutionalisable_classifier():
    with pytest.raises(UserError, match="cannot be convolutionalised"):
        convolutionalised(create_model("small_cnn", num_classes=3, in_chans=3), 3, PyramidConfig())
    with pytest.raises(UserError, match="last class"):
        SlidingWindowDetector(WindowCNN(3), [0.5] * 3, [0.2] * 3, ["a", "b", "c"])


@pytest.mark.parametrize("seed", [0, 1])
def test_select_equals_torchvision_batched_nms(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(600, 2, generator=g) * 90
    boxes = torch.cat((xy, xy + 4 + torch.rand(600, 2, generator=g) * 40), 1)     # some beyond 100
    probs = torch.softmax(torch.randn(600, 5, generator=g) * 3, 1)
    probs[:8] = probs[8:16]                                                        # score ties
    got = select(boxes, probs, (100, 100), score_thr=0.3, nms_iou=0.4, max_dets=50, pre_nms=300)
    scores, labels = probs[:, :4].max(1)
    cand = torch.nonzero(scores >= 0.3).flatten()
    cand = cand[torch.sort(scores[cand], descending=True, stable=True).indices[:300]]
    clipped = torchvision.ops.clip_boxes_to_image(boxes[cand], (100, 100))
    keep = torchvision.ops.batched_nms(clipped, scores[cand], labels[cand], 0.4)[:50]
    torch.testing.assert_close(got["boxes"], clipped[keep])
    torch.testing.assert_close(got["scores"], scores[cand][keep])
    assert torch.equal(got["labels"], labels[cand][keep]) and len(keep) == 50


def test_window_labels_follow_the_iou_rule():
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[20., 20., 44., 44.], [60., 10., 72., 40.]])
    xy = torch.rand(3000, 2, generator=g) * 80
    boxes = torch.cat((xy, xy + 8 + torch.rand(3000, 2, generator=g) * 30), 1)
    index, label = label_windows(boxes, gt, torch.tensor([3, 7]), background=10, rng=np.random.default_rng(0))
    iou = torchvision.ops.box_iou(boxes[index], gt)
    pos = label != 10
    assert 0 < pos.sum() <= 8 and len(np.unique(index)) == len(index)
    best, owner = iou.max(1)
    assert bool((best[pos] >= 0.6).all()) and np.array_equal(np.array([3, 7])[owner[pos].numpy()], label[pos])
    neg = best[~pos]
    assert (~pos).sum() == max(4, pos.sum()) and bool((neg < 0.3).all())
    assert int((neg >= 0.1).sum()) == (~pos).sum() // 2                # half of them hard
    # no object: background windows only
    index, label = label_windows(boxes, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 10,
                                 np.random.default_rng(0))
    assert len(index) == 4 and (label == 10).all()


def test_training_windows_are_the_detector_windows():
    from vislab.detection.scenes import SceneConfig, make_scenes
    scenes = make_scenes("train", 2, SceneConfig(source="digits", image_size=(48, 48), objects=(1, 2), scale=(2.5, 4)))
    config = PyramidConfig(scales=(1.2, 0.85, 0.6), ratios=(1.0, 2.0))
    x, y = window_patches(scenes.images, scenes.targets, background=10, config=config, seed=5)
    assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and len(x) == len(y)
    start = 0
    for i in range(2):
        levels = pyramid(scenes.images[i].float() / 255, config)
        windows = torch.cat([torch.nn.functional.unfold(lv.image[None], 32, stride=4)[0].T for lv in levels])
        index, label = label_windows(torch.cat([lv.boxes for lv in levels]), scenes.targets[i]["boxes"],
                                     scenes.targets[i]["labels"], 10, np.random.default_rng([5, i]))
        expected = (windows[index] * 255).round().to(torch.uint8).reshape(-1, 3, 32, 32)
        assert np.array_equal(x[start:start + len(index)], expected.numpy())
        assert np.array_equal(y[start:start + len(index)], label)
        start += len(index)
    assert start == len(y)


@pytest.fixture(scope="module")
def sw_run(tmp_path_factory):
    from vislab.cli import main
    from vislab.detection.scenes import SceneConfig, make_scene_dataset
    root = tmp_path_factory.mktemp("sw")
    make_scene_dataset(str(root / "scenes"), {"train": 10, "val": 4, "test": 3},
                       SceneConfig(source="digits", image_size=(48, 48), objects=(1, 2), scale=(2.5, 4)), seed=0)
    run = root / "run"
    assert main(["train", CONFIG, "--run-dir", str(run), "--set", f"data.root={root / 'scenes'}",
                 "--set", "model.kwargs={widths: [4, 8, 8], hidden: 8}", "--set", "train.epochs=1",
                 "--set", "train.batch_size=32", "--no-progress"]) == 0
    return run, root / "scenes"


def test_train_evaluate_detect(sw_run, run_cli, tmp_path):
    from PIL import Image
    run, scenes = sw_run
    code, out, err = run_cli("evaluate", run)           # patch classification on the val scenes' windows
    assert code == 0, err
    rep = json.loads((run / "eval.json").read_text())
    assert rep["classes"][-1] == "background" and len(rep["classes"]) == 11
    image = scenes / "test" / "images" / "000000.png"
    outs = {}
    for flag in ([], ["--conv"]):
        out_png = tmp_path / f"d{len(flag)}.png"
        code, out, err = run_cli("detect", run, image, "--score-thr", "0", "--out", out_png, *flag)
        assert code == 0, err
        assert Image.open(out_png).size == (480, 480)
        outs[len(flag)] = out
    assert outs[0] == outs[1].replace("d1.png", "d0.png")    # both paths find the same boxes


def test_eval_scenes_matches_pycocotools(sw_run, run_cli):
    run, _ = sw_run
    code, out, err = run_cli("detect", run, "--eval-scenes", "0", "--time-scenes", "1", "--score-thr", "0.01")
    assert code == 0, err
    rep = json.loads((run / "detect_eval.json").read_text())
    assert rep["num_images"] == 3 and rep["timing"]["scenes"] == 1
    assert rep["timing"]["max_prob_difference"] < 1e-4 and "convolutionalised" in out
    gt = json.loads((run / "detect_gt.json").read_text())
    results = json.loads((run / "detect_detections.json").read_text())
    assert results and len(gt["annotations"]) == rep["num_objects"]
    np.testing.assert_allclose(list(rep["coco"].values()), pycocotools_eval(gt, results).stats, atol=1e-9)


def test_detect_mistakes(sw_run, run_cli, tmp_path):
    run, _ = sw_run
    code, _, err = run_cli("detect", run)
    assert code == 2 and "--eval-scenes" in err
    code, _, err = run_cli("detect", run, tmp_path / "missing.png")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli("detect", run, "--eval-scenes", "2", "--scales", "0")
    assert code == 2 and "positive" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a scene folder")
    code, _, err = run_cli("train", CONFIG, "--run-dir", tmp_path / "r", "--set", f"data.root={tmp_path / 'other'}")
    assert code == 2 and "make-scenes" in err
