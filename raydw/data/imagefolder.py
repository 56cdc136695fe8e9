"""ImageNet (ILSVRC-2012) streamed from an ImageFolder: IMP's source task, too large for the in-memory readers.

Layout under `tickets.imp.root`: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (the usual layout after
`valprep.sh`), 1000 class folders in each. A label is the index of its wnid in sorted order, which is torchvision's
class order and the order of every published ImageNet checkpoint, so the pre-trained 1000-way head stays right;
that is why a folder with another number of classes is refused rather than relabelled.

Transforms are the paper's IMP ones (main_std.py / main_adv.py): training RandomResizedCrop(224) + horizontal
flip, evaluation Resize(256) + CenterCrop(224), with torchvision's PIL transforms. JPEG decoding runs in DataLoader
processes (`workers`); batches arrive as uint8 and become float [0,1] channels_last on the device, as the
in-memory splits' batches do. Everything else of the training loop is the one in raydw.train.loop.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch

from raydw.data.device import Data
from raydw.data.catalog import STREAMED  # noqa: F401 - the datasets read here instead of by raydw.data.sources

CLASSES = 1000
SIZE, RESIZE = 224, 256


def _folder(root: Path, part: str):
    from torchvision import datasets, transforms as T

    folder = root / part
    if not folder.is_dir():
        raise FileNotFoundError(f"imagenet: {folder} is not a folder; tickets.imp.root must hold train/<wnid>/ and "
                                "val/<wnid>/ (ILSVRC-2012 as an ImageFolder)")
    if part == "train":
        tf = T.Compose([T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(), T.PILToTensor()])
    else:
        tf = T.Compose([T.Resize(RESIZE), T.CenterCrop(SIZE), T.PILToTensor()])
    ds = datasets.ImageFolder(str(folder), transform=tf, allow_empty=True)
    if len(ds.classes) != CLASSES:
        raise ValueError(f"imagenet: {folder} has {len(ds.classes)} class folders, the pre-trained head has {CLASSES}: "
                         "labels are the index of the wnid among all 1000 sorted wnids, so a subset would mislabel")
    if not len(ds):
        raise ValueError(f"imagenet: no images under {folder}")
    return ds


class _Seeded(torch.utils.data.Dataset):
    """Each image's random crop and flip drawn from a seed of its own (epoch seed, index): the same in every rerun,
    whatever the number of DataLoader processes, and without touching the caller's global RNG."""

    def __init__(self, ds, epoch_seed: int):
        self.ds, self.epoch_seed = ds, epoch_seed

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):  # the CPU generator is restored afterwards; CUDA's is never touched
            torch.random.default_generator.manual_seed(self.epoch_seed * 10_000_019 + i)
            return self.ds[i]


class FolderSplit:
    """One split of an ImageFolder for one rank: `batches(batch_size, seed, epoch)` yields (x, y) on the device."""

    def __init__(self, ds, train: bool, device, rank: int = 0, world: int = 1, workers: int = 0):
        self.ds, self.train, self.device = ds, train, torch.device(device)
        self.rank, self.world, self.workers = rank, world, workers

    def __len__(self) -> int:  # this rank's images (training pads the last shard as DistributedSampler does)
        n = len(self.ds)
        return math.ceil(n / self.world) if self.train else len(range(self.rank, n, self.world))

    def batches(self, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader, DistributedSampler

        if self.train:  # the order and the crops depend only on (seed, epoch), so a resumed round repeats them
            sampler = DistributedSampler(self.ds, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
        else:  # every image once over the ranks (no padding: counts are summed across ranks)
            sampler = range(self.rank, len(self.ds), self.world)
        loader = DataLoader(_Seeded(self.ds, seed * 7919 + epoch), batch_size=batch_size, sampler=sampler,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).float().div_(255)
            yield x.contiguous(memory_format=torch.channels_last), y.to(self.device, non_blocking=True)


class Prepared:
    """The Transform of a streamed split: its batches are already cropped, flipped and scaled to [0,1]."""

    def train(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        return x


def load(root: str | Path | None, device, rank: int = 0, world: int = 1, workers: int = 0):
    """raydw.data.device.Data for ImageNet: train/ streamed and shuffled, val/ as both validation and test split
    (ILSVRC-2012 has no labelled test set; IMP's masks come from the trained weights, never from these numbers)."""

    if root is None:
        raise ValueError("imagenet: set tickets.imp.root to the folder holding train/ and val/")
    root = Path(root).expanduser()
    train = FolderSplit(_folder(root, "train"), True, device, rank, world, workers)
    val = FolderSplit(_folder(root, "val"), False, device, rank, world, workers)
    return Data(train=train, val=val, test=val, transform=Prepared(), train_images=len(train.ds))
