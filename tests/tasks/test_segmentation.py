"""The segmentation task end to end on tiny scenes: train, evaluate (figures recomputed with
scikit-learn's confusion matrix and the FCN formulas), predict, report; the patch-wise loader;
a folder of images and masks; and the user mistakes."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

SCENES = "data.kwargs={source: digits, image_size: 48, objects: [1, 3], train: 24, val: 8, test: 10}"
BACKBONE = "model.kwargs.backbone_kwargs={widths: [8, 16, 32, 64], stem_width: 8}"
TINY = ["--set", SCENES, "--set", "train.epochs=2", "--set", "train.batch_size=8", "--no-progress"]
RECIPES = ["seg_pixel", "fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv3", "deeplabv3plus"]


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory):
    from vislab.cli import main
    run = tmp_path_factory.mktemp("seg") / "fcn8s"
    assert main(["train", "fcn8s", "--run-dir", str(run), *TINY, "--set", BACKBONE]) == 0
    assert main(["evaluate", str(run)]) == 0
    return run


def test_semantic_maps_label_each_instance_with_its_class():
    from vislab.detection.scenes import SceneConfig, make_scenes, semantic_maps
    scenes = make_scenes("train", 3, SceneConfig(source="digits", image_size=(32, 32), objects=(2, 3)))
    maps = semantic_maps(scenes)
    for i, t in enumerate(scenes.targets):
        inst = scenes.instance_maps[i]
        assert (maps[i][inst == 0] == 0).all()
        for j, label in enumerate(t["labels"].tolist()):
            assert (maps[i][inst == j + 1] == label + 1).all()


def test_faint_item_pixels_are_void():
    """Each owned pixel records its opacity (> 0, since an object is its item's nonzero
    pixels); below min_alpha the class map says void instead of the class."""
    from vislab.detection.scenes import SceneConfig, make_scenes, semantic_maps
    scenes = make_scenes("train", 4, SceneConfig(source="fashion_mnist", image_size=(48, 48), objects=(2, 3)))
    inst, alpha = scenes.instance_maps, scenes.alpha
    assert ((alpha > 0) == (inst > 0)).all()
    plain, voided = semantic_maps(scenes), semantic_maps(scenes, min_alpha=0.25, void=255)
    faint = (inst > 0) & (alpha < 64)
    assert faint.any() and (voided[faint] == 255).all() and torch.equal(voided[~faint], plain[~faint])


def test_evaluation_matches_sklearn_and_the_fcn_formulas(fcn_run):
    from sklearn.metrics import confusion_matrix

    from vislab.tasks import load_run
    from vislab.tasks.segmentation import load_split_pairs
    ev = json.loads((fcn_run / "eval.json").read_text())
    run = load_run(str(fcn_run))
    images, target, classes = load_split_pairs(run.config, "test")
    assert ev["num_images"] == len(target) == 10 and list(ev["iou"]) == classes == list(run.classes)
    with torch.no_grad():
        pred = run.model(run.norm.from_uint8(images)).argmax(1)
    k = len(classes)
    t_, p_ = target.numpy().ravel(), pred.numpy().ravel()
    keep = t_ != 255                                   # void: faint item pixels
    assert 0 < (~keep).sum() < 0.2 * keep.sum()
    cm = confusion_matrix(t_[keep], p_[keep], labels=range(k)).astype(float)
    assert cm.astype(int).tolist() == ev["confusion"]
    tp, t, p = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (t + p - tp)
        acc = tp / t
    assert ev["pixel_acc"] == pytest.approx(tp.sum() / cm.sum())
    assert ev["mean_acc"] == pytest.approx(np.nanmean(acc))
    assert ev["miou"] == pytest.approx(np.nanmean(iou))
    assert ev["fwiou"] == pytest.approx((t[t > 0] * iou[t > 0]).sum() / t.sum())
    absent = [classes[c] for c in range(k) if t[c] + p[c] == 0]
    assert ev["absent_classes"] == absent and all(ev["iou"][c] is None or ev["iou"][c] != ev["iou"][c] for c in absent)
    for name in ev["plots"]:
        assert (fcn_run / "plots" / name).stat().st_size > 1000


def test_predict_writes_a_palette_mask_and_an_overlay(fcn_run, tmp_path, run_cli):
    from vislab.tasks import load_run
    from vislab.tasks.segmentation import load_split_pairs
    run = load_run(str(fcn_run))
    images, _, _ = load_split_pairs(run.config, "test", 2)
    path = tmp_path / "scene.png"
    Image.fromarray(images[1].permute(1, 2, 0).numpy()).save(path)
    code, out, err = run_cli("predict", fcn_run, path)
    assert code == 0, err
    mask_path = fcn_run / "predictions" / "scene.mask.png"
    assert str(mask_path) in out and (fcn_run / "predictions" / "scene.overlay.png").exists()
    with Image.open(mask_path) as im:
        assert im.mode == "P"
        mask = np.asarray(im)
    with torch.no_grad():
        expected = run.model(run.norm.from_uint8(images[1:2])).argmax(1)[0].numpy()
    assert np.array_equal(mask, expected)


def test_report_shows_the_segmentation_sections(fcn_run, run_cli):
    code, _, err = run_cli("report", fcn_run)
    assert code == 0, err
    page = (fcn_run / "report.html").read_text()
    assert "mIoU" in page and "Best and worst" in page and "Per-class IoU" in page


def test_patch_loader_labels_each_patch_with_its_centre_pixel():
    from vislab.config import load_config
    from vislab.data.info import DataInfo, Normalization
    from vislab.tasks.base import DataBundle
    from vislab.tasks.segmentation import SegmentationLoader
    cfg = load_config("seg_pixel", ["segment.patches_per_image=5", "train.batch_size=7", "segment.flip=false"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 20, 24, generator=g)
    y = torch.randint(0, 4, (3, 20, 24), generator=g, dtype=torch.uint8)
    info = DataInfo("t", ("a", "b", "c", "d"), 3, (20, 24), Normalization((0.0,) * 3, (1.0,) * 3))
    loader = SegmentationLoader(cfg, DataBundle(x, y, x, y, info), torch.Generator().manual_seed(1))
    batches = list(loader)
    assert len(batches) == len(loader) == 15 // 7
    p, labels = batches[0]
    assert p.shape == (7, 3, 32, 32)
    # find each patch in the zero-padded images: its centre (row 16, column 16) is the labelled pixel
    padded = torch.nn.functional.pad(x, (16, 15, 16, 15))
    for patch, label in zip(p, labels):
        hits = [(n, r, c) for n in range(3) for r in range(20) for c in range(24)
                if torch.equal(padded[n, :, r:r + 32, c:c + 32], patch)]
        assert hits and all(int(y[n, r, c]) == int(label) for n, r, c in hits)


def test_patchwise_training_of_the_per_pixel_baseline(tmp_path):
    from vislab.cli import main
    run = tmp_path / "pixel"
    assert main(["train", "seg_pixel", "--run-dir", str(run), *TINY, "--set", "segment.patches_per_image=16",
                 "--set", "model.kwargs.widths=[8, 8, 16]", "--set", "model.kwargs.hidden=16"]) == 0
    assert main(["evaluate", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["model"] == "seg_pixel" and 0 <= ev["miou"] <= 1


def _mask_folder(root, n_train=12, n_val=4):
    from vislab.detection.scenes import SceneConfig, make_scenes, semantic_maps
    for split, n in (("train", n_train), ("val", n_val)):
        scenes = make_scenes(split, n, SceneConfig(source="digits", image_size=(40, 40), objects=(1, 2)))
        maps = semantic_maps(scenes)
        os.makedirs(root / split / "images")
        os.makedirs(root / split / "masks")
        for i in range(n):
            Image.fromarray(scenes.images[i].permute(1, 2, 0).numpy()).save(root / split / "images" / f"{i}.png")
            Image.fromarray(maps[i].numpy()).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(["background"] + [str(d) for d in range(10)]))


def test_a_folder_of_images_and_masks_trains_and_evaluates_on_val(tmp_path):
    from vislab.cli import main
    _mask_folder(tmp_path / "data")
    run = tmp_path / "unet"
    assert main(["train", "unet", "--run-dir", str(run), "--set", "data.name=masks", "--set",
                 f"data.root={tmp_path / 'data'}", "--set", "data.kwargs={}", "--set",
                 "model.kwargs={depth: 2, width: 4}", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                 "--no-progress"]) == 0
    assert main(["evaluate", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["split"] == "val" and ev["num_images"] == 4 and len(ev["iou"]) == 11


@pytest.mark.parametrize("args, message", [
    (["--set", "model.name=small_cnn", "--set", "model.kwargs={}"], "is a classifier"),
    (["--set", "segment.train_mode=patches"], "patch classifier"),
    (["--set", "data.kwargs.colour=red"], "unknown data.kwargs"),
    (["--set", "data.name=masks"], "set data.root"),
])
def test_mistakes_are_one_line_and_exit_2(args, message, run_cli, tmp_path):
    code, out, err = run_cli("train", "fcn8s", "--run-dir", tmp_path / "r", *args, "--no-progress")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_builds_a_model_that_keeps_the_image_size(recipe):
    from vislab.config import load_config
    from vislab.data.info import DataInfo, Normalization
    from vislab.tasks import get_task
    cfg = load_config(recipe)
    assert cfg.task == "segmentation" and cfg.model.name == recipe
    info = DataInfo("scenes", tuple(str(i) for i in range(11)), 3, (128, 128), Normalization((0.0,) * 3, (1.0,) * 3))
    model = get_task("segmentation").build_model(cfg, info).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 80)).shape == (1, 11, 64, 80)


def test_median_frequency_weights_reach_the_loss():
    """segment.class_weight=median: weights from the training masks' pixel counts (Eigen &
    Fergus: median frequency / frequency, recomputed here with numpy), used by the loss."""
    from vislab.config import load_config
    from vislab.tasks import get_task
    task = get_task("segmentation")
    cfg = load_config("fcn8s", [SCENES, BACKBONE, "segment.class_weight=median"])
    data = task.build_data(cfg, torch.device("cpu"))
    y = data.train_y.numpy()
    counts = np.bincount(y[y != 255].ravel(), minlength=11).astype(float)
    freq = counts / counts.sum()
    expected = np.where(freq > 0, np.median(freq[freq > 0]) / np.where(freq > 0, freq, 1), 0.0)
    np.testing.assert_allclose(data.info.extra["class_weights"], expected, rtol=1e-5)
    model = task.build_model(cfg, data.info)
    out = torch.randn(2, 11, 48, 48)
    target = data.train_y[:2].long()
    torch.testing.assert_close(task.loss(cfg, model)(out, target), torch.nn.functional.cross_entropy(
        out, target, weight=torch.tensor(expected, dtype=torch.float32), ignore_index=255))


def test_a_mask_folder_with_the_scene_options_says_how_to_replace_them(run_cli, tmp_path):
    _mask_folder(tmp_path / "data", n_train=2, n_val=1)
    code, _, err = run_cli("train", "unet", "--run-dir", tmp_path / "r", "--set", "data.name=masks",
                           "--set", f"data.root={tmp_path / 'data'}", "--no-progress")
    assert code == 2 and "data.kwargs={image_size: 256}" in err and len(err.strip().splitlines()) == 1
