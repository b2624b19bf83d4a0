import torch
import torchvision.transforms.v2.functional as TF

from vislab.data.transforms import (
    AugmentConfig,
    augment_batch,
    batch_color,
    batch_crop,
    batch_erase,
    batch_flip,
    crop_at,
    mixup,
)


def test_crop_at_matches_torchvision_crop():
    x = torch.randn(5, 3, 12, 10)
    top, left = torch.tensor([0, 1, 4, 2, 0]), torch.tensor([3, 0, 2, 1, 0])
    out = crop_at(x, top, left, 7, 6)
    for i in range(5):
        assert torch.equal(out[i], TF.crop(x[i], int(top[i]), int(left[i]), 7, 6))


def test_batch_crop_is_a_padded_window():
    x = torch.randn(16, 1, 8, 8)
    out = batch_crop(x, torch.Generator().manual_seed(0), pad=2, fill=-9.0)
    padded = TF.pad(x, [2], fill=-9.0)
    offsets = set()
    for i in range(16):
        hits = [(t, l) for t in range(5) for l in range(5) if torch.equal(out[i], padded[i, :, t:t + 8, l:l + 8])]
        assert hits, "every output must be a window of the padded input"
        offsets.add(hits[0])
    assert len(offsets) > 3           # offsets differ across the batch


def test_flip_per_sample():
    x = torch.randn(64, 2, 4, 5)
    out = batch_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], TF.horizontal_flip(x[i])) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


def test_erase_rectangles():
    x = torch.ones(200, 1, 20, 20)
    out = batch_erase(x, torch.Generator().manual_seed(2), p=0.5, scale=(0.02, 0.2), fill=0.0)
    erased = (out == 0).squeeze(1)
    frac = erased.float().mean((1, 2))
    n = int((frac > 0).sum())
    assert 60 < n < 140
    for m in erased[frac > 0]:
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        h, w = len(rows), len(cols)
        assert int(m.sum()) == h * w                      # one solid rectangle
        assert 0.02 * 400 * 0.5 <= h * w <= 0.2 * 400 * 1.5


def test_color_and_mixup():
    x = torch.randn(8, 1, 6, 6)
    g = torch.Generator().manual_seed(3)
    out = batch_color(x, g, brightness=0.0, contrast=0.0)
    assert torch.allclose(out, x, atol=1e-6)
    y = torch.arange(8) % 3
    xm, t = mixup(x, y, 3, torch.Generator().manual_seed(4), alpha=0.4)
    assert torch.allclose(t.sum(1), torch.ones(8))
    lam = t[torch.arange(8), y].min()                     # the weight of the own label
    assert 0 <= float(lam) <= 1


def test_augment_is_reproducible():
    x = torch.randn(4, 1, 8, 8)
    cfg = AugmentConfig(crop_pad=2, flip=True, erase=0.5, brightness=0.1, contrast=0.1)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_torch_dataset_adapter_feeds_a_dataloader():
    import numpy as np
    from torchvision.transforms import v2

    from vislab.data.datasets import load_split
    from vislab.data.loader import ArrayTorchDataset
    data = load_split("digits", "test")
    ds = ArrayTorchDataset(data, transform=v2.ToDtype(torch.float32, scale=True))
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=16)))
    assert torch.allclose(xb, torch.from_numpy(data.images[:16]).float() / 255, atol=1e-6)
    assert yb.tolist() == data.labels[:16].tolist() and len(ds) == len(np.asarray(data.labels))
