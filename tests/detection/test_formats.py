import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.metrics.coco_oracle import pycocotools_eval, random_coco
from vislab.detection import formats as F
from vislab.errors import UserError


def _dataset(seed: int = 0, crowd: bool = True) -> F.DetectionSet:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(5):
        w, h = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        n = int(rng.integers(0, 5))
        x1, y1 = rng.uniform(0, w - 10, n), rng.uniform(0, h - 10, n)
        boxes = np.stack((x1, y1, x1 + rng.uniform(0, w - x1), y1 + rng.uniform(0, h - y1)), 1)
        boxes[: n // 2] = np.round(boxes[: n // 2])
        boxes[:, 2:] = np.minimum(boxes[:, 2:], [w, h])
        images.append(F.ImageAnnotations(f"img{i}.png", w, h, boxes, rng.integers(0, 3, n),
                                         rng.random(n) < 0.3 if crowd else None))
    return F.DetectionSet(["cat", "dog", "bird"], images, [5, 9, 2])


def _assert_same(a: F.DetectionSet, b: F.DetectionSet, exact: bool = True) -> None:
    assert a.categories == b.categories and len(a.images) == len(b.images)
    for x, y in zip(a.images, b.images):
        assert (x.file_name, x.width, x.height) == (y.file_name, y.width, y.height)
        if exact:
            assert torch.equal(x.boxes, y.boxes)
        else:
            torch.testing.assert_close(x.boxes, y.boxes, rtol=0, atol=1e-4)
        assert torch.equal(x.labels, y.labels) and torch.equal(x.iscrowd, y.iscrowd)


def test_coco_round_trip_and_pycocotools_reads_it(tmp_path):
    from pycocotools.coco import COCO
    ds = _dataset()
    F.write_coco(ds, tmp_path / "a.json")
    back = F.read_coco(tmp_path / "a.json")
    _assert_same(ds, back)
    assert back.category_ids == [5, 9, 2]
    coco = COCO(str(tmp_path / "a.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    boxes = torch.cat([im.boxes for im in ds.images])
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
    torch.testing.assert_close(xywh[:, :2], boxes[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(xywh[:, :2] + xywh[:, 2:], boxes[:, 2:])
    assert [a["category_id"] for a in anns] == [[5, 9, 2][int(c)] for c in torch.cat([im.labels for im in ds.images])]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # inside pycocotools, numpy 2
def test_coco_masks_as_rle_match_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((3, 17, 23)) < 0.4)
    masks[2] = True                      # a mask starting with 1s: the counts start with a 0 run
    boxes = torch.tensor([[0, 0, 23, 17]] * 3)
    ds = F.DetectionSet(["a"], [F.ImageAnnotations("x.png", 23, 17, boxes, [0, 0, 0], masks=masks)])
    F.write_coco(ds, tmp_path / "m.json")
    anns = json.loads((tmp_path / "m.json").read_text())["annotations"]
    for a, m in zip(anns, masks):
        rle = mask_utils.frPyObjects(a["segmentation"], 17, 23)
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m.numpy())
        assert a["area"] == int(m.sum()) == mask_utils.area(rle)


def test_voc_round_trip_and_torchvision_parses_it(tmp_path):
    import xml.etree.ElementTree as ET

    from torchvision.datasets import VOCDetection
    ds = _dataset(1)
    F.write_voc(ds, tmp_path)
    _assert_same(ds, F.read_voc(tmp_path, ds.categories))
    im = next(i for i in ds.images if len(i.boxes))
    parsed = VOCDetection.parse_voc_xml(ET.parse(tmp_path / f"img{ds.images.index(im)}.xml").getroot())
    obj = parsed["annotation"]["object"][0]
    x1, y1, x2, y2 = im.boxes[0].tolist()
    assert float(obj["bndbox"]["xmin"]) == x1 + 1 and float(obj["bndbox"]["ymax"]) == pytest.approx(y2)
    assert obj["name"] == ds.categories[int(im.labels[0])] and obj["difficult"] == str(int(im.iscrowd[0]))


def test_yolo_round_trip_and_line_by_hand(tmp_path):
    ds = _dataset(2, crowd=False)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for im in ds.images:
        Image.new("RGB", (im.width, im.height)).save(img_dir / im.file_name)
    F.write_yolo(ds, tmp_path / "labels")
    _assert_same(ds, F.read_yolo(tmp_path / "labels", img_dir), exact=False)
    one = F.DetectionSet(["a", "b"], [F.ImageAnnotations("q.png", 100, 200, [[10, 20, 30, 60]], [1])])
    F.write_yolo(one, tmp_path / "one")
    assert (tmp_path / "one" / "q.txt").read_text().split() == ["1", "0.2", "0.2", "0.2", "0.2"]
    assert (tmp_path / "one" / "classes.txt").read_text() == "a\nb\n"


def test_errors_name_the_problem(tmp_path):
    base = {"images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
            "categories": [{"id": 3, "name": "x"}]}
    ann = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20]}
    F.coco_to_dataset(base | {"annotations": [ann]})
    for bad, match in (({"bbox": [40, 10, 20, 20]}, "outside"), ({"bbox": [10, 10, -2, 5]}, "negative"),
                       ({"category_id": 4}, "category"), ({"image_id": 7}, "image")):
        with pytest.raises(UserError, match=match):
            F.coco_to_dataset(base | {"annotations": [ann | bad]})
    with pytest.raises(UserError, match="check the path"):
        F.read_coco(tmp_path / "none.json")
    # VOC: an unknown name when the categories are fixed; YOLO: a class index out of range
    ds = F.DetectionSet(["cat"], [F.ImageAnnotations("a.png", 50, 40, [[1, 1, 5, 5]], [0])])
    F.write_voc(ds, tmp_path / "voc")
    with pytest.raises(UserError, match="unknown category 'cat'"):
        F.read_voc(tmp_path / "voc", ["dog"])
    (tmp_path / "img").mkdir()
    Image.new("RGB", (50, 40)).save(tmp_path / "img" / "a.png")
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "a.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(UserError, match="class 3"):
        F.read_yolo(tmp_path / "lab", tmp_path / "img", ["a", "b"])
    (tmp_path / "lab" / "a.txt").write_text("0 0.95 0.5 0.2 0.1\n")
    with pytest.raises(UserError, match="outside"):
        F.read_yolo(tmp_path / "lab", tmp_path / "img", ["a"])
    with pytest.raises(UserError, match="classes.txt"):
        F.read_yolo(tmp_path / "lab", tmp_path / "img")
    crowd = F.DetectionSet(["a"], [F.ImageAnnotations("a.png", 50, 40, [[1, 1, 5, 5]], [0], [True])])
    with pytest.raises(UserError, match="crowd"):
        F.write_yolo(crowd, tmp_path / "y")
    assert not os.path.exists(tmp_path / "y" / "a.txt")


def test_one_coco_parser_for_data_sets_and_evaluation():
    gt, _ = random_coco(4)
    parsed = F.parse_coco(gt)
    anns = gt["annotations"]
    assert parsed.category_ids == [c["id"] for c in gt["categories"]]          # file order
    np.testing.assert_array_equal(parsed.table.boxes, [a["bbox"] for a in anns])
    np.testing.assert_array_equal(parsed.table.area, [a["area"] for a in anns])
    ds = F.coco_to_dataset(gt)
    for n, im in enumerate(ds.images):
        mine = [a for a in anns if a["image_id"] == im.image_id]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)]
        assert im.file_name == gt["images"][n]["file_name"]
        torch.testing.assert_close(im.boxes, torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4), rtol=0, atol=0)
        assert im.labels.tolist() == [parsed.category_ids.index(a["category_id"]) for a in mine]
        assert im.iscrowd.tolist() == [bool(a["iscrowd"]) for a in mine]
    by_id = parsed.by_id()                                  # pycocotools' order, for evaluation
    assert by_id.category_ids == sorted(parsed.category_ids)
    assert [im["id"] for im in by_id.images] == sorted(im["id"] for im in gt["images"])
    for t in range(len(anns)):
        assert by_id.images[by_id.table.image[t]]["id"] == anns[t]["image_id"]
        assert by_id.category_ids[by_id.table.category[t]] == anns[t]["category_id"]


@pytest.mark.parametrize("seed", [0, 10, 17])
def test_coco_evaluate_files_and_dicts_equal_pycocotools(tmp_path, seed):
    gt, results = random_coco(seed, crowded=seed == 10)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    ref = pycocotools_eval(gt, results)
    for ev in (F.coco_evaluate(gt, results), F.coco_evaluate(tmp_path / "gt.json", str(tmp_path / "pred.json"))):
        np.testing.assert_allclose(ev.stats, ref.stats, rtol=0, atol=1e-9)
        np.testing.assert_allclose(ev.precision, ref.eval["precision"], rtol=0, atol=1e-9)
        assert ev.categories == [f"cat{c}" for c in sorted(c["id"] for c in gt["categories"])]


def test_evaluate_coco_files_writes_the_report_and_the_plot(tmp_path):
    gt, results = random_coco(6)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    ev, report = F.evaluate_coco_files(str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), per_category=True,
                                       voc=True, plot=str(tmp_path / "pr.png"), json_path=str(tmp_path / "r.json"))
    ref = pycocotools_eval(gt, results)
    np.testing.assert_allclose(list(report["coco"].values()), ref.stats, rtol=0, atol=1e-9)
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))
    assert report["gt"] == str(tmp_path / "gt.json") and report["iou_type"] == "bbox"
    cats = sorted(c["id"] for c in gt["categories"])
    assert list(report["per_category"]) == [f"cat{c}" for c in cats]
    for k, c in enumerate(cats):                            # AP50 per category: pycocotools' too
        p = ref.eval["precision"][0, :, k, 0, 2]
        assert report["per_category"][f"cat{c}"]["AP50"] == pytest.approx(p.mean() if p[0] > -1 else -1, abs=1e-9)
    assert 0 < report["voc"]["mAP"] <= 1 and set(report["voc"]["per_category"]) == set(report["per_category"])
    img = np.asarray(Image.open(tmp_path / "pr.png").convert("L"))
    assert img.shape[0] > 200 and img.min() < 100           # a real plot, with dark lines on white
    only = F.evaluate_coco_files(tmp_path / "gt.json", tmp_path / "pred.json")[1]
    assert set(only) == {"gt", "pred", "iou_type", "coco"}


def test_coco_evaluation_mistakes_are_user_errors(tmp_path):
    gt, results = random_coco(1)
    for bad, match in (([dict(results[0], image_id=-5)], "another data set"),
                       ([dict(results[0], category_id=999)], "category 999"),
                       ([{"image_id": results[0]["image_id"], "bbox": [0, 0, 1, 1]}], "score"),
                       (gt, "ground-truth file as the predictions")):
        with pytest.raises(UserError, match=match):
            F.coco_evaluate(gt, bad)
    with pytest.raises(UserError, match="swap"):
        F.coco_evaluate(results, results)
    with pytest.raises(UserError, match="'images', 'annotations' and 'categories'"):
        F.coco_evaluate({"annotations": []}, results)
    with pytest.raises(UserError, match="negative"):
        F.coco_evaluate(dict(gt, annotations=[dict(gt["annotations"][0], bbox=[0, 0, -3, 4])]), results)
    with pytest.raises(UserError, match="share an id"):
        F.coco_evaluate(dict(gt, images=gt["images"] + gt["images"][:1]), results)
    with pytest.raises(UserError, match="check the path"):
        F.coco_evaluate(tmp_path / "missing.json", results)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(UserError, match="not valid JSON"):
        F.coco_evaluate(gt, tmp_path / "broken.json")
    # evaluation needs only ids; a DetectionSet also needs file names and sizes
    bare = dict(gt, images=[{"id": im["id"]} for im in gt["images"]])
    np.testing.assert_array_equal(F.coco_evaluate(bare, results).stats, F.coco_evaluate(gt, results).stats)
    with pytest.raises(UserError, match="file_name"):
        F.coco_to_dataset(bare)
