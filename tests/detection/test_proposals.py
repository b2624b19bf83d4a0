"""Selective search (vislab.detection.proposals): the similarities on hand-built regions, the
grouping's order on a hand-made segmentation, recall on drawn and generated scenes, determinism,
the batch wrapper's normalisation and cache, and proposal_recall by hand."""

import copy
import pickle
import time

import numpy as np
import pytest
import torch

from vislab.detection.proposals import (
    SelectiveSearch,
    hierarchical_grouping,
    proposal_recall,
    region_similarity,
    selective_search,
)


def test_region_similarity_by_hand():
    # 100-pixel image; region i: 10 px in box (0, 0, 5, 2), region j: 20 px in box (5, 0, 10, 4)
    colour_i, colour_j = np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.25, 0.25, 0.25, 0.25])
    texture_i, texture_j = np.array([1.0, 0.0]), np.array([0.4, 0.6])
    box_i, box_j = np.array([0.0, 0, 5, 2]), np.array([5.0, 0, 10, 4])
    s_colour, s_texture = 0.25 + 0.25, 0.4                 # sum of the bin-wise minima
    s_size = 1 - (10 + 20) / 100
    s_fill = 1 - (10 * 4 - 10 - 20) / 100                  # the joint box is 10 x 4
    for a1, a2, a3, a4 in [(1, 1, 1, 1), (0, 1, 1, 1), (0, 0, 0, 1), (0, 0, 1, 0), (2, 0.5, 0, 0)]:
        hi, hj = np.concatenate((a1 * colour_i, a2 * texture_i)), np.concatenate((a1 * colour_j, a2 * texture_j))
        s = region_similarity(hi, hj, np.float64(10), np.float64(20), box_i, box_j, 100, a3, a4)
        assert s == pytest.approx(a1 * s_colour + a2 * s_texture + a3 * s_size + a4 * s_fill)


def test_grouping_merges_the_most_similar_neighbours_first():
    # four vertical stripes 0 | 1 | 2 | 3; colours: 0 and 1 alike, 2 and 3 alike, 1 and 2 unlike
    seg = np.repeat(np.arange(4)[None], 8, 0).repeat(2, 1)                          # (8, 8)
    colour = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0], [0, 0.2, 0.8]])
    boxes = hierarchical_grouping(seg, colour, np.zeros((4, 0)), (1, 0, 0, 0))
    assert boxes.tolist()[:4] == [[0, 0, 2, 8], [2, 0, 4, 8], [4, 0, 6, 8], [6, 0, 8, 8]]
    # s(0,1) = 0.9 > s(2,3) = 0.8 > s(1,2) = 0: merge 0+1, then 2+3, then the two halves
    assert boxes.tolist()[4:] == [[0, 0, 4, 8], [4, 0, 8, 8], [0, 0, 8, 8]]
    # with the size term alone the smallest pair goes first: stripe 3 is wider
    seg2 = np.concatenate((seg, np.full((8, 4), 3)), 1)                              # (8, 12)
    boxes = hierarchical_grouping(seg2, colour, np.zeros((4, 0)), (0, 0, 1, 0))
    assert boxes.tolist()[4] == [0, 0, 4, 8]                                           # 16 + 16 px, not 16 + 48


def _blocks() -> tuple[np.ndarray, torch.Tensor]:
    """Flat-coloured rectangles on a noisy grey background."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(90, 6, (64, 64, 3)), 0, 255)
    boxes = [(4, 6, 20, 30), (30, 4, 60, 20), (26, 34, 44, 58), (50, 40, 62, 62)]
    for (x1, y1, x2, y2), c in zip(boxes, [(220, 40, 40), (40, 200, 60), (30, 40, 230), (240, 240, 60)]):
        img[y1:y2, x1:x2] = c
    return img.astype(np.uint8), torch.tensor(boxes, dtype=torch.float32)


def test_every_block_is_found_and_the_output_is_well_formed():
    img, gt = _blocks()
    for mode in ("single", "fast"):
        boxes = selective_search(img, mode)
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert len(np.unique(boxes, axis=0)) == len(boxes)                      # no duplicates
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert [0.0, 0.0, 64.0, 64.0] in boxes.tolist()                          # the last merge
        assert proposal_recall([torch.from_numpy(boxes)], [gt], [60], 0.9) == [1.0]
    assert len(selective_search(img, "fast", max_proposals=7)) == 7


def test_recall_and_speed_on_generated_scenes():
    from vislab.detection.scenes import SceneConfig, make_scenes
    scenes = make_scenes("test", 12, SceneConfig(image_size=(64, 64), objects=(1, 4), scale=(0.8, 1.6)))
    images = [im.permute(1, 2, 0).numpy() for im in scenes.images]
    start = time.process_time()
    props = [torch.from_numpy(selective_search(im, "fast", max_proposals=300)) for im in images]
    per_scene = (time.process_time() - start) / len(images)
    assert per_scene < 0.15, f"fast selective search took {per_scene * 1e3:.0f} ms per 64x64 scene"
    r50, r300 = proposal_recall(props, [t["boxes"] for t in scenes.targets], [50, 300], 0.5)
    assert r300 >= 0.9 and r50 >= 0.7, (r50, r300)


def test_ranking_is_seeded():
    img, _ = _blocks()
    a, b, c = selective_search(img, seed=3), selective_search(img, seed=3), selective_search(img, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, c.tolist()))      # same boxes, other order


def test_batch_wrapper_normalisation_cache_and_pickling():
    img, _ = _blocks()
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    mean, std = torch.tensor([80.0, 100, 90])[:, None, None], torch.tensor([40.0, 60, 50])[:, None, None]
    ss = SelectiveSearch("single", max_proposals=50)
    out = ss(((x - mean) / std)[None].repeat(2, 1, 1, 1), use_cache=True)
    # a per-channel affine map does not change the min-max stretched uint8 image
    lo, hi = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
    stretched = ((x - lo) / (hi - lo) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    ref = selective_search(stretched, "single", max_proposals=50)
    assert len(out) == 2 and out[0].dtype == torch.float32 and np.array_equal(out[0].numpy(), ref)
    assert len(ss.cache) == 1                                           # the same image twice: one entry
    assert ss(x[None], use_cache=False)[0].shape[1] == 4 and len(ss.cache) == 1
    assert pickle.loads(pickle.dumps(ss)).cache == {} and copy.deepcopy(ss).cache == {}
    gray = ss(x[:1][None])[0]                                           # one channel, repeated to three
    assert gray.shape[1] == 4 and len(gray) <= 50
    with pytest.raises(ValueError, match="mode"):
        SelectiveSearch("slow")


def test_proposal_recall_by_hand():
    gt = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([[0.0, 0, 4, 4]]), torch.zeros(0, 4)]
    props = [torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 12], [20, 20, 30, 30]]),   # IoU 10/12 with gt 0
             torch.tensor([[0.0, 0, 4, 8]]),                                         # IoU 0.5
             torch.tensor([[0.0, 0, 5, 5]])]
    assert proposal_recall(props, gt, [1, 2, 3], 0.5) == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert proposal_recall(props, gt, [1, 3], 0.7) == pytest.approx([0.0, 2 / 3])
