"""Device-resident data and batched on-device augmentation.

The uint8 images of a split live on the training device (45k CIFAR images are 138 MB); every batch is
indexed, converted and augmented there, in whole batches, with no DataLoader and no per-image Python.
Protocols (see docs/protocol.md):
  native: the dataset's own size; training adds a random translation (pad size/8, crop) and, for CIFAR, flips.
  paper:  training = RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3) + horizontal flip (all datasets, as
          the paper's dataset.py); evaluation = Resize(256) + CenterCrop(224). Bilinear, via grid_sample /
          interpolate on the device: close to but not bit-identical with torchvision's PIL transforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

FLIP_OK = {"cifar10", "cifar100"}  # native protocol: flipping digits changes their meaning


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W) on the device
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.y.device

    @staticmethod
    def from_numpy(x: np.ndarray, y: np.ndarray, device) -> "Split":
        return Split(torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device))

    def shard(self, rank: int, world: int) -> "Split":
        return self if world == 1 else Split(self.x[rank::world], self.y[rank::world])


class Transform:
    """Batch transforms for one (dataset, protocol): `train(x_uint8, gen)` and `eval(x_uint8)` -> float [0,1]."""

    def __init__(self, dataset: str, protocol: str, size: int):
        self.dataset, self.protocol, self.size = dataset, protocol, size
        self.out_size = 224 if protocol == "paper" else size

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255)
        if self.protocol == "paper":
            x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=False)
            o = (256 - 224) // 2
            x = x[:, :, o:o + 224, o:o + 224]
        return x.clamp_(0, 1).contiguous(memory_format=torch.channels_last)

    def train(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = x.float().div_(255)
        n = x.shape[0]
        dev = x.device
        if self.protocol == "paper":
            return _random_resized_crop(x, 224, gen, flip=True).contiguous(memory_format=torch.channels_last)
        pad = max(1, self.size // 8)
        flip = self.dataset in FLIP_OK
        # Random translation by up to `pad` pixels with zero fill == pad + random crop, as one affine warp.
        shift = (torch.randint(-pad, pad + 1, (n, 2), generator=gen, device="cpu").float() * 2 / self.size).to(dev)
        theta = torch.zeros(n, 2, 3, device=dev)
        sx = torch.ones(n, device=dev)
        if flip:
            sx = torch.where(torch.rand(n, generator=gen, device="cpu").to(dev) < 0.5, -1.0, 1.0)
        theta[:, 0, 0], theta[:, 1, 1] = sx, 1.0
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False).contiguous(memory_format=torch.channels_last)


def _crop_sizes(n: int, gen: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop width and height as fractions of a square image, sampled as torchvision's RandomResizedCrop does.

    torchvision redraws (area, ratio) up to 10 times until the crop fits and falls back to the whole image
    (a square image's ratio is in range); clamping an oversize draw instead would skew large crops' ratio.
    """
    area = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=gen)
    r = torch.exp(torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen))
    w, h = torch.sqrt(area * r), torch.sqrt(area / r)
    ok = (w <= 1) & (h <= 1)
    first = ok.to(torch.uint8).argmax(1, keepdim=True)  # the first draw that fits
    pick = ok.any(1)
    one = torch.ones(n)
    return (torch.where(pick, w.gather(1, first).squeeze(1), one),
            torch.where(pick, h.gather(1, first).squeeze(1), one))


def _random_resized_crop(x: torch.Tensor, out: int, gen: torch.Generator, flip: bool,
                         scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop (+ optional horizontal flip), vectorized over the batch as one warp.

    Square images assumed (every dataset here is); crop corners are continuous, not rounded to pixels.
    """
    n, dev = x.shape[0], x.device
    w, h = _crop_sizes(n, gen, scale, ratio)  # crop width, height / image width, height
    cx = (torch.rand(n, generator=gen) * (1 - w) + w / 2) * 2 - 1
    cy = (torch.rand(n, generator=gen) * (1 - h) + h / 2) * 2 - 1
    sx = w * (torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if flip else 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta.to(dev), [n, x.shape[1], out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def epoch_batches(split: Split, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches of one epoch; the order depends only on (seed, epoch), so a resumed run repeats it."""
    if not isinstance(split, Split):  # streamed from disk (raydw.data.imagefolder): it shuffles and crops itself
        yield from split.batches(batch_size, seed, epoch)
        return
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(split), generator=g).to(split.y.device)
    for i in range(0, len(split), batch_size):
        idx = perm[i:i + batch_size]
        yield split.x[idx], split.y[idx]


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if not isinstance(split, Split):
        yield from split.batches(batch_size)
        return
    for i in range(0, len(split), batch_size):
        yield split.x[i:i + batch_size], split.y[i:i + batch_size]


@dataclass
class Data:
    """What a training run reads: this rank's training shard, the validation and test splits, their transform."""

    train: Split  # this rank's shard
    val: Split
    test: Split
    transform: Transform
    train_images: int  # across all ranks
