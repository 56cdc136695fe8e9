"""The paper's 224-px protocol on the device vs torchvision, and the native protocol.

Tolerances (measured, torchvision 0.29.1): eval equals torchvision Resize(256)+CenterCrop(224) on float tensors
within 1e-6, and the reference code's PIL path (uint8 PIL resize, then ToTensor) within 1/255 per pixel.
"""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from raydw.data.device import Transform


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randint(0, 256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def gradient(n: int) -> torch.Tensor:
    """Images whose value grows left to right (0..248), so a flip shows as a falling row."""
    row = torch.arange(32, dtype=torch.uint8) * 8
    return row.view(1, 1, 1, 32).expand(n, 3, 32, 32).contiguous()


def test_paper_eval_matches_torchvision_resize_centercrop(batch):
    ours = Transform("cifar10", "paper", 32).eval(batch)
    assert ours.shape == (6, 3, 224, 224)
    tv = T.Compose([T.Resize(256), T.CenterCrop(224)])
    ref = torch.stack([tv(x.float() / 255) for x in batch])
    assert (ours - ref).abs().max() < 1e-6
    pil = torch.stack([T.ToTensor()(tv(Image.fromarray(x.permute(1, 2, 0).numpy()))) for x in batch])
    assert (ours - pil).abs().max() <= 1 / 255 + 1e-6  # the reference code's PIL pipeline
    assert (ours - pil).abs().mean() < 0.5 / 255


def test_paper_train_is_224_in_unit_range_and_seeded(batch):
    t = Transform("svhn", "paper", 32)  # the paper crops and flips SVHN too
    a = t.train(batch, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 224, 224) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, t.train(batch, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, t.train(batch, torch.Generator().manual_seed(2)))


def test_paper_train_flips_about_half_and_crops_vary():
    n = 400
    out = Transform("cifar10", "paper", 32).train(gradient(n), torch.Generator().manual_seed(0))[:, 0]
    slope = out[:, 112, -1] - out[:, 112, 0]
    assert (slope.abs() > 0).all()
    flipped = (slope < 0).float().mean().item()
    assert 0.4 < flipped < 0.6  # binomial(400, 0.5): 4.0 sigma either side
    # crop width ~ |slope| (the image's full width spans 248/255); scale 0.08-1 and ratio 3/4-4/3 give widths
    # from ~0.25 to 1 of the image; crop centres vary too
    width = slope.abs() / (248 / 255)
    assert width.min() < 0.4 and width.max() > 0.9
    centre = out[:, 112, 112]
    assert centre.std() > 0.1


def test_native_keeps_size(batch):
    for ds, size in [("cifar10", 32), ("digits", 28)]:
        x = batch[:, :1, :size, :size] if ds == "digits" else batch
        t = Transform(ds, "native", size)
        assert t.out_size == size
        assert t.eval(x).shape == x.shape and torch.allclose(t.eval(x), x.float() / 255)
        y = t.train(x, torch.Generator().manual_seed(0))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_native_flips_cifar_only():
    g = gradient(200)
    for ds, expect in [("cifar10", True), ("svhn", False)]:
        out = Transform(ds, "native", 32).train(g, torch.Generator().manual_seed(0))[:, 0]
        falling = (out[:, 16, 20] < out[:, 16, 12]).any().item()
        assert falling == expect, ds


def test_crop_sizes_follow_torchvision_rejection_sampling():
    from raydw.data.device import _crop_sizes

    w, h = _crop_sizes(20000, torch.Generator().manual_seed(0))
    assert (w <= 1).all() and (h <= 1).all()
    ratio, area = w / h, w * h
    whole = (w == 1) & (h == 1)  # the fallback after 10 misses: rare
    assert whole.float().mean() < 0.01
    assert ratio[~whole].min() >= 3 / 4 - 1e-5 and ratio[~whole].max() <= 4 / 3 + 1e-5
    assert area.min() >= 0.08 - 1e-5
    # same distribution as torchvision's own sampler (on a 1000-px image, where pixel rounding is negligible)
    torch.manual_seed(0)
    tv = torch.tensor([h * w / 1e6 for _, _, h, w in (T.RandomResizedCrop.get_params(torch.zeros(1, 1000, 1000),
                                                                                    (0.08, 1.0), (3 / 4, 4 / 3))
                                                      for _ in range(5000))])
    assert abs(area.mean() - tv.mean()) < 0.02 and abs(area.std() - tv.std()) < 0.02  # ~4 sigma of 5000 draws
