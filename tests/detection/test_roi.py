import pytest
import torch
import torchvision.ops as tvo
from torchvision.ops.poolers import initLevelMapper

from vislab.detection.roi import (
    assign_fpn_levels,
    convert_boxes_to_rois,
    multiscale_roi_align,
    roi_align,
    roi_pool,
)

MAP = (2, 3, 24, 30)       # N, C, H, W: odd-sized RoIs on a map that is not square


def _features(seed: int, shape=MAP, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()


def _rois(k: int, seed: int, scale: float, n_images: int = MAP[0], dtype=torch.float64) -> torch.Tensor:
    """``Tensor[k, 5]`` RoIs in image pixels for a ``MAP``-sized map at ``scale``: corners up to
    15% outside the image, a quarter tiny (under one bin), a quarter with integer corners (RoIPool's
    rounding ties at scale 1/4), and by hand a flat, an inverted, an outside and a whole-image box."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([MAP[3], MAP[2]], dtype=dtype) / scale                   # image (width, height)
    xy = (torch.rand(k, 2, generator=g, dtype=dtype) * 1.3 - 0.15) * size
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * 0.8 * size
    q = k // 4
    wh[:q] *= 0.03
    boxes = torch.cat((xy, xy + wh), dim=1)
    boxes[q:2 * q] = boxes[q:2 * q].round()
    w, h = size.tolist()
    boxes[-4:] = torch.tensor([[0.3 * w, 0.2 * h, 0.3 * w, 0.6 * h],       # flat
                               [0.6 * w, 0.5 * h, 0.4 * w, 0.3 * h],       # inverted
                               [1.2 * w, 1.1 * h, 1.4 * w, 1.3 * h],       # outside the map
                               [0.0, 0.0, w, h]], dtype=dtype)             # the whole image
    batch = torch.randint(0, n_images, (k, 1), generator=g).to(dtype)
    return torch.cat((batch, boxes), dim=1)


def _as_list(rois: torch.Tensor, n_images: int = MAP[0]) -> list[torch.Tensor]:
    return [rois[rois[:, 0] == i, 1:] for i in range(n_images)]


def _check_op(ours, theirs, x, boxes, *args, exact=False, **tol):
    """Forward values and input gradients of ``ours`` against ``theirs``."""
    got, want = ours(x, boxes, *args), theirs(x, boxes, *args)
    assert got.shape == want.shape
    if exact:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, **tol)
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(7), dtype=want.dtype)
    (grad_got,), (grad_want,) = torch.autograd.grad(got, x, g), torch.autograd.grad(want, x, g)
    torch.testing.assert_close(grad_got, grad_want, **tol)


@pytest.mark.parametrize("scale", [1.0, 1 / 4, 1 / 16])
@pytest.mark.parametrize("output_size", [7, (3, 5)])
@pytest.mark.parametrize("as_list", [False, True])
def test_roi_pool_matches_torchvision(scale, output_size, as_list):
    rois = _rois(60, seed=int(1 / scale), scale=scale)
    boxes = _as_list(rois) if as_list else rois
    _check_op(roi_pool, tvo.roi_pool, _features(0), boxes, output_size, scale, exact=True)


def test_roi_pool_float32_quantises_like_torchvision():
    # bin edges are floored and ceiled in the input's dtype: float32 rounding must agree too
    rois = _rois(80, seed=3, scale=1 / 4, dtype=torch.float32)
    _check_op(roi_pool, tvo.roi_pool, _features(1, dtype=torch.float32), rois, (3, 7), 1 / 4,
              exact=True, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize("scale, output_size", [(1.0, 7), (1 / 4, (3, 5)), (1 / 16, 7)])
def test_roi_align_matches_torchvision(aligned, sampling_ratio, scale, output_size):
    rois = _rois(60, seed=int(1 / scale) + 100, scale=scale)
    _check_op(roi_align, tvo.roi_align, _features(2), rois, output_size, scale, sampling_ratio, aligned,
              atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_float32_and_box_list(aligned):
    rois = _rois(50, seed=5, scale=1 / 8, dtype=torch.float32)
    _check_op(roi_align, tvo.roi_align, _features(3, dtype=torch.float32), _as_list(rois), 7, 1 / 8, -1,
              aligned, atol=1e-5, rtol=1e-5)


def test_no_rois_gives_an_empty_batch():
    x, none = _features(0), torch.zeros(0, 5, dtype=torch.float64)
    assert roi_pool(x, none, 7).shape == tvo.roi_pool(x, none, 7).shape == (0, 3, 7, 7)
    assert roi_align(x, none, (3, 5)).shape == tvo.roi_align(x, none, (3, 5)).shape == (0, 3, 3, 5)


def test_bad_batch_index_is_refused():
    rois = torch.tensor([[2.0, 0, 0, 4, 4]], dtype=torch.float64)
    for op in (roi_pool, roi_align):
        with pytest.raises(ValueError, match="batch"):
            op(_features(0), rois, 7)


@pytest.mark.parametrize("k_min, k_max", [(2, 5), (3, 4), (2, 2)])
def test_fpn_levels_match_torchvision_level_mapper(k_min, k_max):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    wh = torch.exp(torch.rand(200, 2, generator=g) * 8)                    # 1 to 3000 pixels a side
    boxes = torch.cat((xy, xy + wh), dim=1)
    boxes[:4] = torch.tensor([[0.0, 0, 224, 224], [10, 10, 122, 122], [0, 0, 448, 448], [5, 5, 6, 6]])
    mapper = initLevelMapper(k_min, k_max)                                  # canonical 224, level 4, eps 1e-6
    assert torch.equal(assign_fpn_levels(boxes, k_min=k_min, k_max=k_max) - k_min, mapper([boxes]))


def test_fpn_levels_by_hand():
    sides = torch.tensor([224.0, 112, 448, 1, 56, 223, 2000, 0])
    boxes = torch.stack((torch.zeros(8), torch.zeros(8), sides, sides), dim=1)
    # floor(4 + log2(side / 224)): 4, 3, 5, -3.8 -> 2, 2, 3.99 -> 3, 7.2 -> 5, -inf -> 2
    assert assign_fpn_levels(boxes).tolist() == [4, 3, 5, 2, 2, 3, 5, 2]
    # eps = 1e-6 keeps a box a hair (1e-9) under 112 pixels on level 3, not 2
    hair = torch.tensor([[0.0, 0, 112 * (1 - 1e-9), 112 * (1 - 1e-9)]], dtype=torch.float64)
    assert assign_fpn_levels(hair).tolist() == [3] and assign_fpn_levels(hair, eps=0).tolist() == [2]
    # canonical size scaled for 256-pixel images: a 72-pixel box lands where a 224-pixel one did
    assert assign_fpn_levels(torch.tensor([[0.0, 0, 72, 72]]), canonical_size=72).tolist() == [4]


@pytest.mark.parametrize("strides, canonical", [((8, 16), 224), ((4, 8, 16), 224), ((4, 8, 16, 32), 224),
                                                ((4, 8, 16, 32), 112)])
def test_multiscale_roi_align_matches_torchvision(strides, canonical):
    image_size = (256, 320)
    g = torch.Generator().manual_seed(len(strides))
    features = {f"p{s.bit_length() - 1}": torch.randn(2, 4, image_size[0] // s, image_size[1] // s,
                                                       generator=g, dtype=torch.float64).requires_grad_()
                for s in strides}
    boxes = []
    for _ in range(2):
        xy = torch.rand(40, 2, generator=g, dtype=torch.float64) * 200
        wh = torch.exp(torch.rand(40, 2, generator=g, dtype=torch.float64) * 4.5 + 2)   # 7 to 665 pixels
        boxes.append(torch.cat((xy, xy + wh), dim=1))
    theirs = tvo.MultiScaleRoIAlign(list(features), output_size=7, sampling_ratio=2,
                                    canonical_scale=canonical, canonical_level=4)
    want = theirs(features, boxes, [image_size] * 2)
    got = multiscale_roi_align(features, boxes, 7, strides, sampling_ratio=2, canonical_size=canonical)
    k_min, k_max = strides[0].bit_length() - 1, strides[-1].bit_length() - 1
    levels = assign_fpn_levels(torch.cat(boxes), canonical_size=canonical, k_min=k_min, k_max=k_max)
    assert len(levels.unique()) > 1                                         # several levels in use
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    maps = list(features.values())
    grad = torch.randn(want.shape, generator=g, dtype=want.dtype)
    grads = [torch.autograd.grad(out, maps, grad, allow_unused=True, materialize_grads=True) for out in (got, want)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # a list of maps is the same pyramid
    torch.testing.assert_close(multiscale_roi_align(maps, boxes, 7, strides, canonical_size=canonical), got)


def test_multiscale_roi_align_refuses_bad_strides():
    maps = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4)]
    boxes = [torch.tensor([[0.0, 0, 10, 10]])]
    with pytest.raises(ValueError, match="strides"):
        multiscale_roi_align(maps, boxes, 7, [8, 24])
    with pytest.raises(ValueError, match="stride"):
        multiscale_roi_align(maps, boxes, 7, [8])


def test_convert_boxes_to_rois_round_trip():
    per_image = [torch.rand(3, 4), torch.zeros(0, 4), torch.rand(2, 4)]
    rois = convert_boxes_to_rois(per_image)
    assert rois[:, 0].tolist() == [0, 0, 0, 2, 2]
    for i, b in enumerate(per_image):
        assert torch.equal(rois[rois[:, 0] == i, 1:], b)
    assert convert_boxes_to_rois(rois) is rois


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(2, 3, 5), [torch.zeros(3, 5)], []])
def test_convert_boxes_to_rois_refuses_wrong_shapes(bad):
    with pytest.raises(ValueError, match="Tensor"):
        convert_boxes_to_rois(bad)
