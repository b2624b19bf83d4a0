"""Mask R-CNN (vislab.detection.mask_rcnn) against torchvision's Mask R-CNN pieces: mask
targets, mask loss, pasting and the mask head with copied weights; and a model that overfits a
handful of scenes (mask AP by pycocotools)."""

import contextlib
import copy
import io

import pytest
import torch
from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
from torchvision.models.detection import roi_heads as tv_roi_heads

from tests.detection.overfit import check_detections
from vislab.detection.mask_rcnn import (
    MaskHead,
    mask_loss,
    mask_rcnn,
    paste_masks_in_image,
    project_masks_on_boxes,
)
from vislab.errors import UserError

H, W = 50, 60
TINY = {"backbone_kwargs": {"widths": [8, 16, 32, 64], "stem_width": 8}, "fpn_chs": 16, "mask_chs": 16,
        "representation_size": 64, "rpn_pre_nms_top_n": (100, 100), "rpn_post_nms_top_n": (50, 50),
        "box_batch_size_per_image": 32}


def random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """Boxes inside a W x H image (as detections are clipped), some on its border, one empty."""
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([W, H])
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 40], 1)
    boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clamp(0, W), boxes[:, 1::2].clamp(0, H)
    boxes[:4] = torch.tensor([[0.0, 0, W, H], [0, 0, 5.5, 4.2], [W - 2.5, H - 3, W, H], [10, 10, 10, 10]])
    return boxes


def test_mask_targets_and_loss_equal_torchvision():
    gen = torch.Generator().manual_seed(0)
    masks = [(torch.rand(3, H, W, generator=gen) > 0.5).to(torch.uint8), (torch.rand(2, H, W, generator=gen) > 0.3)]
    labels = [torch.tensor([4, 0, 2]), torch.tensor([1, 1])]
    boxes = [random_boxes(9, gen), random_boxes(6, gen)]
    idx = [torch.randint(0, 3, (9,), generator=gen), torch.randint(0, 2, (6,), generator=gen)]
    for m, b, i in zip(masks, boxes, idx):
        torch.testing.assert_close(project_masks_on_boxes(m, b, i, 14),
                                   tv_roi_heads.project_masks_on_boxes(m, b, i, 14), atol=1e-6, rtol=0)
    # torchvision's logits have a background channel 0 and its labels count from 1
    tv_logits = torch.randn(15, 6, 14, 14, generator=gen, requires_grad=True)
    ours = mask_loss(tv_logits[:, 1:], boxes, masks, labels, idx)
    ref = tv_roi_heads.maskrcnn_loss(tv_logits, boxes, masks, [lab + 1 for lab in labels], idx)
    torch.testing.assert_close(ours, ref)
    g_ours, = torch.autograd.grad(ours, tv_logits)
    g_ref, = torch.autograd.grad(ref, tv_logits)
    torch.testing.assert_close(g_ours, g_ref)
    empty = mask_loss(tv_logits[:0, 1:], [b[:0] for b in boxes], masks, labels, [i[:0] for i in idx])
    assert empty.item() == 0 and empty.requires_grad


def test_paste_masks_equal_torchvision():
    gen = torch.Generator().manual_seed(1)
    boxes = random_boxes(60, gen)
    for size in (14, 7):
        masks = torch.rand(60, size, size, generator=gen)
        ref = tv_roi_heads.paste_masks_in_image(masks[:, None], boxes, (H, W))[:, 0]
        ours = paste_masks_in_image(masks, boxes, (H, W))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
        assert (ref[:3] > 0).any((1, 2)).all()                     # the border boxes are pasted
    assert paste_masks_in_image(masks[:0], boxes[:0], (H, W)).shape == (0, H, W)


def test_mask_head_equals_torchvision_with_copied_weights():
    ours = MaskHead(16, 5, num_convs=3, chs=24)
    heads = tv_mask_rcnn.MaskRCNNHeads(16, [24, 24, 24], 1)
    predictor = tv_mask_rcnn.MaskRCNNPredictor(24, 24, 5)
    convs = [m for m in ours.convs if isinstance(m, torch.nn.Conv2d)]
    tv_convs = [m for m in heads.modules() if isinstance(m, torch.nn.Conv2d)]
    for a, b in zip(convs + [ours.upsample, ours.predictor], tv_convs + [predictor.conv5_mask, predictor.mask_fcn_logits]):
        b.weight.data.copy_(a.weight.data)
        b.bias.data.copy_(a.bias.data)
    x = torch.randn(4, 16, 7, 7)
    torch.testing.assert_close(ours(x), predictor(heads(x)))
    assert ours(x).shape == (4, 5, 14, 14)


def _normalised_scenes(n: int):
    from vislab.detection.scenes import SceneConfig, make_scenes
    from vislab.tasks.detection import scene_targets
    scenes = make_scenes("train", n, SceneConfig(image_size=(64, 64), objects=(1, 3), scale=(0.8, 1.6)))
    x = scenes.images.float() / 255
    return scenes, (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True), scene_targets(scenes)


def test_mask_rcnn_overfits_a_few_scenes():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vislab.detection.detect import coco_files
    torch.manual_seed(0)
    scenes, x, targets = _normalised_scenes(4)
    model = mask_rcnn(num_classes=10, **TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    history = []
    for _ in range(50):
        losses = model(x, targets)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert {"loss", "rpn_objectness", "rpn_box", "cls", "box", "mask"} == set(history[0])
    assert history[-1]["mask"] < 0.6 * history[0]["mask"] and history[-1]["loss"] < 0.5 * history[0]["loss"]
    with torch.no_grad():
        dets = model.eval()(x)
    for d in dets:
        check_detections(d, most=100, width=64, height=64, num_classes=10)
        m = d["masks"]
        assert m.shape == (len(d["boxes"]), 64, 64) and m.dtype == torch.float32
        assert (m >= 0).all() and (m <= 1).all() and ((m >= 0.5).flatten(1).any(1)).float().mean() > 0.5
    gt, results = coco_files(targets, dets, scenes.categories, (64, 64))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results]), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[1] > 0.5                                  # mask AP50 on the training scenes


def test_mistakes():
    with pytest.raises(UserError, match="mask_roi_size"):
        mask_rcnn(mask_roi_size=0)
    model = mask_rcnn(num_classes=10, **TINY).train()
    with pytest.raises(ValueError, match="masks"):          # box-only targets
        model(torch.randn(1, 3, 64, 64), [{"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])}])


def test_shared_roi_features_equal_separate_pooling():
    """With the box branch's RoIAlign settings the mask branch reuses its pooled features in
    training: the losses equal those of pooling the positive RoIs again."""
    _, x, targets = _normalised_scenes(2)
    model = mask_rcnn(num_classes=10, **TINY).train()
    assert model.roi_heads.shared_pool
    torch.manual_seed(0)
    shared = model(x, targets)
    model.roi_heads.shared_pool = False
    torch.manual_seed(0)
    separate = model(x, targets)
    assert shared["mask"].item() > 0
    for k in shared:
        torch.testing.assert_close(shared[k], separate[k])
    assert not mask_rcnn(num_classes=10, mask_roi_size=14, **TINY).roi_heads.shared_pool
