import pytest
import torch

from vislab.detection.panoptic import (
    VOID,
    PanopticFPN,
    SemanticFPNHead,
    panoptic_merge,
    semantic_loss,
)
from vislab.detection.scenes import SceneConfig, make_scenes
from vislab.errors import UserError
from vislab.metrics.segmentation import panoptic_quality
from vislab.tasks.detection import pack_targets, unpack_targets
from vislab.tasks.panoptic import panoptic_targets

TINY = {"backbone_kwargs": {"widths": [8, 16, 32, 64], "stem_width": 8}, "fpn_chs": 16, "semantic_chs": 16,
        "semantic_groups": 8, "mask_chs": 16, "representation_size": 64, "rpn_post_nms_top_n": (100, 100)}


def _box_mask(y0, y1, x0, x1, p=0.9, size=(8, 8)):
    m = torch.zeros(size)
    m[y0:y1, x0:x1] = p
    return m


def test_merge_by_hand():
    # 8x8 image, 2 thing classes, stuff classes 0 and 1 then "other" (2)
    masks = torch.stack([
        _box_mask(0, 4, 0, 4),            # a: score 0.9, 16 px, placed first
        _box_mask(1, 4, 1, 4),            # b: score 0.8, 9 px all under a -> dropped (overlap 1.0)
        _box_mask(2, 6, 2, 6),            # c: score 0.7, 16 px, 4 under a (0.25) -> keeps its other 12
        _box_mask(6, 8, 6, 8),            # d: score 0.3 -> under score_thresh
        _box_mask(6, 8, 0, 2, p=0.4),     # e: score 0.95 but every pixel < mask_thresh -> empty
    ])
    instances = {"scores": torch.tensor([0.9, 0.8, 0.7, 0.3, 0.95]), "labels": torch.tensor([1, 0, 0, 1, 1]),
                 "masks": masks}
    logits = torch.zeros(3, 8, 8)
    logits[0, :, :4] = 5                  # stuff 0 on the left half
    logits[1, :, 4:] = 5                  # stuff 1 on the right half ...
    logits[2, :3, 4:] = 10                # ... except "other" on its top rows
    logits[1, 6:, 6:] = -5                # and d's corner: other there too
    logits[2, 6:, 6:] = 5
    out = panoptic_merge(instances, logits, num_things=2, score_thresh=0.5, overlap_thresh=0.5, stuff_area=10)
    expect = torch.full((8, 8, 2), 0)
    expect[..., 0] = VOID
    expect[..., 0][:, :4] = 2             # stuff 0 -> category 2: 32 px - a's 16 - c's 4 = 12 px
    expect[3:, 4:, 0] = 3                 # stuff 1 -> category 3: 20 px - the corner's 4 - c's 6 = 10 px
    expect[6:, 6:, 0] = VOID              # "other" but no instance: void
    expect[2:6, 2:6] = torch.tensor([0, 2])   # c: second instance placed
    expect[:4, :4] = torch.tensor([1, 1])     # a first, over c
    assert torch.equal(out, expect)
    # the stuff area threshold: at 11 px stuff 1's 10 px go void, stuff 0's 12 stay
    small = panoptic_merge(instances, logits, num_things=2, stuff_area=11)
    assert (small[..., 0] == 3).sum() == 0 and (small[..., 0] == 2).sum() == (out[..., 0] == 2).sum()
    # a stricter overlap rule drops c too
    strict = panoptic_merge(instances, logits, num_things=2, overlap_thresh=0.2, stuff_area=10)
    assert set(strict[..., 1].unique().tolist()) == {0, 1}


def test_semantic_head_shapes_and_loss():
    head = SemanticFPNHead(16, [4, 8, 16], num_classes=4, mid_chs=8, groups=4)
    feats = [torch.randn(2, 16, 16 // s * 4, 16 // s * 4) for s in (4, 8, 16)]
    logits = head(feats, (64, 64))
    assert logits.shape == (2, 4, 64, 64)
    # the finest level: one conv stage, no upsampling; the others one stage per octave
    assert [sum(isinstance(m, torch.nn.Upsample) for m in h) for h in head.scale_heads] == [0, 1, 2]
    stuff = torch.randint(0, 3, (2, 64, 64), dtype=torch.uint8)
    stuff[:, :8] = 255                                         # things' pixels: the "other" class
    target = torch.where(stuff == 255, 3, stuff.long())
    torch.testing.assert_close(semantic_loss(logits, stuff, 3), torch.nn.functional.cross_entropy(logits, target))


def test_panoptic_fpn_overfits_a_few_stuff_scenes():
    torch.manual_seed(0)
    scenes = make_scenes("train", 4, SceneConfig(image_size=(64, 64), objects=(1, 2), scale=(0.8, 1.6), stuff=3))
    targets = unpack_targets(pack_targets(scenes.targets, [scenes.instance_maps, scenes.stuff_maps]), (64, 64))
    truth = scenes.panoptic_maps()
    assert torch.equal(panoptic_targets(targets, 10), truth)      # the task's packing loses nothing
    x = scenes.images.float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    model = PanopticFPN(10, num_stuff=3, **TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(40):
        losses = model(x, targets)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in losses.items()}
    assert set(losses) == {"loss", "rpn_objectness", "rpn_box", "cls", "box", "mask", "semantic"}
    # the semantic term starts at 0.5 * log(4) (four equally likely classes) and falls
    assert first["semantic"] == pytest.approx(0.5 * torch.log(torch.tensor(4.0)).item(), abs=0.02)
    last = {k: float(v.detach()) for k, v in losses.items()}
    assert last["semantic"] < 0.6 * first["semantic"] and last["loss"] < 0.5 * first["loss"]
    with torch.no_grad():
        dets = model.eval()(x)
    for d in dets:
        pan = d["panoptic"]
        assert pan.shape == (64, 64, 2) and pan.dtype == torch.int64 and d["semantic"].shape == (64, 64)
        cat, inst = pan[..., 0], pan[..., 1]
        assert ((cat == VOID) | ((cat >= 0) & (cat < 13))).all()
        assert (inst[cat >= 10] == 0).all() and (inst[(cat >= 0) & (cat < 10)] > 0).all()
        for i in inst.unique()[1:]:                                  # one category per thing instance
            assert len(cat[inst == i].unique()) == 1
    pq = panoptic_quality(torch.stack([d["panoptic"] for d in dets]), truth, range(10), range(10, 13))
    assert pq["pq_things"] > 0.3 and pq["pq_stuff"] > 0.5          # untrained: 0 and ~0.1


def test_panoptic_fpn_refusals():
    with pytest.raises(UserError, match="num_stuff"):
        PanopticFPN(10, num_stuff=0, **TINY)
    model = PanopticFPN(10, num_stuff=2, **TINY)
    with pytest.raises(ValueError, match="semantic"):
        model(torch.zeros(1, 3, 64, 64), [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
