import pytest
import torch
from torchvision.models.detection.anchor_utils import (
    AnchorGenerator as TvAnchorGenerator,
)
from torchvision.models.detection.anchor_utils import (
    DefaultBoxGenerator as TvDefaultBoxGenerator,
)
from torchvision.models.detection.image_list import ImageList

from vislab.detection.anchors import (
    AnchorGenerator,
    DefaultBoxGenerator,
    kmeans_anchors,
    mean_best_iou,
    wh_iou,
)
from vislab.detection.boxes import box_iou


@pytest.mark.parametrize("image_size", [(64, 96), (70, 101)])
def test_anchors_match_torchvision(image_size):
    sizes = ((16, 20), (32,), (64, 80, 100))
    ratios = ((0.5, 1.0, 2.0), (1.0,), (0.33, 1.0, 3.0))
    ours, theirs = AnchorGenerator(sizes, ratios), TvAnchorGenerator(sizes, ratios)
    images = torch.zeros(2, 3, *image_size)
    feats = [torch.zeros(2, 8, image_size[0] // s, image_size[1] // s) for s in (8, 16, 32)]
    want = theirs(ImageList(images, [image_size] * 2), feats)
    got = ours(images, feats)
    assert torch.equal(got, want[0]) and torch.equal(got, want[1])
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location()


def test_offset_centres_anchors_in_cells():
    gen = AnchorGenerator(((8,),), ((1.0,),), offset=0.5)
    (a,) = gen.grid_anchors([(2, 3)], [(16, 16)])
    # cell (row 1, col 2) is centred at ((2 + 0.5) * 16, (1 + 0.5) * 16) = (40, 24)
    assert a.shape == (6, 4)
    assert a[5].tolist() == [36.0, 20.0, 44.0, 28.0]


def test_one_ratio_tuple_serves_all_levels():
    gen = AnchorGenerator(((8,), (16,)), ((0.5, 1.0),))
    assert gen.num_anchors_per_location() == [2, 2]
    with pytest.raises(ValueError, match="levels"):
        AnchorGenerator(((8,), (16,), (32,)), ((1.0,), (1.0,)))


SSD_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SETTINGS = {"scales": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],   # torchvision's SSD300
                   "steps": [8, 16, 32, 64, 100, 300]}


@pytest.mark.parametrize("settings", [{}, SSD300_SETTINGS, dict(SSD300_SETTINGS, clip=False),
                                      {"min_ratio": 0.2, "max_ratio": 0.95, "clip": False}])
@pytest.mark.parametrize("image_size, grids", [
    ((300, 300), [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]),
    ((320, 512), [(40, 64), (20, 32), (10, 16), (5, 8), (3, 4), (1, 2)]),
])
def test_default_boxes_match_torchvision(settings, image_size, grids):
    ours = DefaultBoxGenerator(SSD_RATIOS, **settings)
    theirs = TvDefaultBoxGenerator(SSD_RATIOS, **settings)
    images = torch.zeros(2, 3, *image_size)
    feats = [torch.zeros(2, 4, *g) for g in grids]
    want = theirs(ImageList(images, [image_size] * 2), feats)
    got = ours(images, feats)
    assert len(want) == 2 and torch.equal(got, want[0]) and torch.equal(got, want[1])
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]
    assert got.shape[0] == sum(h * w * a for (h, w), a in zip(grids, [4, 6, 6, 6, 4, 4]))


def test_default_boxes_one_level_matches_torchvision():
    ours, theirs = DefaultBoxGenerator([[2, 3]]), TvDefaultBoxGenerator([[2, 3]])
    assert ours.scales == theirs.scales == [0.15, 0.9]
    images, feats = torch.zeros(1, 3, 64, 48), [torch.zeros(1, 4, 4, 3)]
    assert torch.equal(ours(images, feats), theirs(ImageList(images, [(64, 48)]), feats)[0])


def test_default_box_scales_follow_the_paper():
    # s_k = s_min + (s_max - s_min)(k - 1)/(m - 1), k = 1..m, then s_{m+1} = 1
    gen = DefaultBoxGenerator([[2]] * 5, min_ratio=0.2, max_ratio=0.9)
    assert gen.scales == pytest.approx([0.2, 0.375, 0.55, 0.725, 0.9, 1.0])


def test_default_box_order_by_hand():
    # one 2x2 map on a 100x100 image, scales 0.2 and 0.8: s' = 0.4, ratio 2 -> 0.2 * sqrt(2) wide
    gen = DefaultBoxGenerator([[2]], scales=[0.2, 0.8])
    boxes = gen.grid_default_boxes((100, 100), [(2, 2)])[0]
    assert boxes.shape == (2 * 2 * 4, 4)
    r = 10 * 2 ** 0.5
    cell_00 = torch.tensor([[15, 15, 35, 35], [5, 5, 45, 45],
                            [25 - r, 25 - r / 2, 25 + r, 25 + r / 2],
                            [25 - r / 2, 25 - r, 25 + r / 2, 25 + r]])
    torch.testing.assert_close(boxes[:4], cell_00)
    # cells run rows first: the second cell is (row 0, col 1), centred at (75, 25)
    torch.testing.assert_close(boxes[4], torch.tensor([65.0, 15.0, 85.0, 35.0]))
    torch.testing.assert_close(boxes[8], torch.tensor([15.0, 65.0, 35.0, 85.0]))


def test_default_box_clip_caps_the_size_not_the_corners():
    # a 1.2-wide box is cut to the image's width but stays centred on its cell
    gen = DefaultBoxGenerator([[]], scales=[1.2, 1.2])
    boxes = gen.grid_default_boxes((10, 20), [(1, 2)])[0]
    torch.testing.assert_close(boxes[0], torch.tensor([-5.0, 0.0, 15.0, 10.0]))
    unclipped = DefaultBoxGenerator([[]], scales=[1.2, 1.2], clip=False)
    torch.testing.assert_close(unclipped.grid_default_boxes((10, 20), [(1, 2)])[0][0],
                               torch.tensor([-7.0, -1.0, 17.0, 11.0]))


def test_default_box_generator_rejects_bad_settings():
    with pytest.raises(ValueError, match="m \\+ 1"):
        DefaultBoxGenerator([[2], [2]], scales=[0.1, 0.5])
    with pytest.raises(ValueError, match="steps"):
        DefaultBoxGenerator([[2], [2]], steps=[8])
    with pytest.raises(ValueError, match="levels"):
        DefaultBoxGenerator([[2], [2]]).grid_default_boxes((64, 64), [(8, 8)])


def test_wh_iou_is_box_iou_of_corner_boxes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10, 2, generator=g) * 50 + 1, torch.rand(4, 2, generator=g) * 50 + 1
    corner = lambda wh: torch.cat((torch.zeros_like(wh), wh), 1)  # noqa: E731
    torch.testing.assert_close(wh_iou(a, b), box_iou(corner(a), corner(b)))


def _clustered(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.tensor([[10.0, 12.0], [40.0, 20.0], [25.0, 80.0], [120.0, 110.0]])
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 4, (800,), generator=g)
    noise = 1 + 0.05 * torch.randn(800, 2, generator=g)
    return centres[idx] * noise, centres


def test_kmeans_recovers_known_clusters():
    wh, centres = _clustered(0)
    anchors = kmeans_anchors(wh, 4, seed=0)
    torch.testing.assert_close(anchors, centres, rtol=0.03, atol=0)   # sorted by area, as centres
    assert mean_best_iou(wh, anchors) > 0.85
    assert torch.equal(anchors, kmeans_anchors(wh, 4, seed=0))         # deterministic


def test_kmeans_iou_distance_beats_euclidean_on_mixed_scales():
    # three small shapes and one large, spread-out size: Euclidean k-means (scikit-learn)
    # merges the small ones and splits the large one; 1 - IoU separates the shapes
    from sklearn.cluster import KMeans
    centres = torch.tensor([[8.0, 8.0], [14.0, 5.0], [5.0, 14.0], [150.0, 150.0]])
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 4, (800,), generator=g)
    spread = torch.where(idx[:, None] == 3, 0.2, 0.05)
    wh = centres[idx] * (1 + spread * torch.randn(800, 2, generator=g))
    anchors = kmeans_anchors(wh, 4, seed=0)
    torch.testing.assert_close(anchors[:3], centres[[0, 2, 1]], rtol=0.03, atol=0)
    km = KMeans(4, n_init=1, random_state=0).fit(wh.numpy())
    euclid = mean_best_iou(wh, torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
    assert mean_best_iou(wh, anchors) > euclid + 0.2


def test_mean_best_iou_by_hand():
    wh = torch.tensor([[10.0, 10.0], [20.0, 10.0]])
    anchors = torch.tensor([[10.0, 10.0]])
    assert mean_best_iou(wh, anchors) == pytest.approx((1.0 + 0.5) / 2)
