"""torchvision's FasterRCNN / MaskRCNN wrapped on vislab's backbone + FPN (tv_faster_rcnn,
tv_mask_rcnn): they train a step on vislab targets, return vislab's outputs, and have the same
parameters as vislab's faster_rcnn_fpn where the architecture is the same."""

import torch

from tests.detection.overfit import check_detections
from vislab.detection import tv_detection, two_stage  # noqa: F401  (registers the models)
from vislab.models import create_model, list_models

SMALL = {"backbone": "resnet18", "backbone_kwargs": {"widths": [8, 16, 32, 64], "stem_width": 8},
         "fpn_chs": 16, "representation_size": 32}


def _scenes(n: int = 3):
    from vislab.detection.scenes import SceneConfig, make_scenes
    scenes = make_scenes("train", n, SceneConfig(image_size=(64, 64), objects=(1, 3), scale=(0.8, 1.6)))
    return (scenes.images.float() / 255 - 0.5) / 0.25, [scenes[i][1] for i in range(n)]


def test_same_parameters_as_vislab_faster_rcnn_fpn():
    """Backbone, FPN, RPN head, box head and predictor: the same tensors in the same order
    (only the names differ); the mask branch comes on top."""
    assert {"tv_faster_rcnn", "tv_mask_rcnn"} <= set(list_models(kind="detection"))
    ours = create_model("faster_rcnn_fpn", num_classes=5, **SMALL)
    tv = create_model("tv_faster_rcnn", num_classes=5, **SMALL)
    shapes = [p.shape for p in ours.parameters()]
    assert [p.shape for p in tv.parameters()] == shapes
    mask = {"mask_num_convs": 2, "mask_chs": 16}
    tv_mask = create_model("tv_mask_rcnn", num_classes=5, **SMALL, **mask)
    extra = [p.shape for n, p in tv_mask.named_parameters() if "mask" in n]
    assert [p.shape for n, p in tv_mask.named_parameters() if "mask" not in n] == shapes
    assert extra == [(16, 16, 3, 3), (16,), (16, 16, 3, 3), (16,), (16, 16, 2, 2), (16,), (6, 16, 1, 1), (6,)]
    import vislab.detection.mask_rcnn  # noqa: F401  (registers mask_rcnn)
    ours_mask = create_model("mask_rcnn", num_classes=5, **SMALL, **mask)
    ours_extra = [p.shape for n, p in ours_mask.named_parameters() if "mask" in n]
    assert ours_extra[:-2] == extra[:-2]            # the same mask head; torchvision's predictor also
    assert ours_extra[-2:] == [(5, 16, 1, 1), (5,)]  # has a mask for the background class


def test_wrappers_train_a_step_and_return_vislab_outputs():
    x, targets = _scenes()
    for name, keys in (("tv_faster_rcnn", set()), ("tv_mask_rcnn", {"mask"})):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, **SMALL, **({"mask_chs": 16} if keys else {}))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        losses = model.train()(x, targets)
        assert set(losses) == {"loss", "rpn_objectness", "rpn_box", "cls", "box"} | keys
        assert torch.isclose(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))
        before = model.net.roi_heads.box_predictor.cls_score.weight.clone()
        losses["loss"].backward()
        opt.step()
        assert not torch.equal(before, model.net.roi_heads.box_predictor.cls_score.weight)
        with torch.no_grad():
            dets = model.eval()(x)
        for d in dets:
            check_detections(d, most=100, width=64, num_classes=10)
            if keys:
                m = d["masks"]
                assert m.shape == (len(d["boxes"]), 64, 64) and m.dtype == torch.float32
                assert 0 <= m.min() and m.max() <= 1
