import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder

from vislab.detection.coder import BoxCoder


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat((xy, xy + 1 + torch.rand(n, 2, generator=g) * 60), 1)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_match_torchvision(weights):
    gt, anchors = _boxes(200, 0), _boxes(200, 1)
    ours, theirs = BoxCoder(weights), TvBoxCoder(weights)
    deltas = ours.encode(gt, anchors)
    assert torch.equal(deltas, theirs.encode_single(gt, anchors))
    codes = torch.randn(200, 4, generator=torch.Generator().manual_seed(2)) * 3   # exp clipped too
    assert torch.equal(ours.decode(codes, anchors), theirs.decode_single(codes, anchors))
    torch.testing.assert_close(ours.decode(deltas, anchors), gt, rtol=1e-5, atol=1e-4)


def test_decode_per_class_and_clip():
    anchors = _boxes(30, 3)
    codes = torch.randn(30, 5, 4, generator=torch.Generator().manual_seed(4))
    ours = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(codes, anchors)
    theirs = TvBoxCoder((10.0, 10.0, 5.0, 5.0)).decode(codes.reshape(30, 20), [anchors])
    assert ours.shape == (30, 5, 4) and torch.equal(ours, theirs)
    # a huge dw is clipped to log(1000 / 16): the box grows 62.5 times, not exp(100)
    big = BoxCoder().decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert (big[0, 2] - big[0, 0]).item() == pytest.approx(10 * math.exp(math.log(1000 / 16)))
