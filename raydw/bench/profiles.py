"""`raydw bench`'s profiles and the measuring both recipes share: a Row, the device sync, peak memory, FLOPs."""
from __future__ import annotations

import resource
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from raydw.reference import PREFETCH

KINDS = ("standard", "pgd10_train", "pgd20_eval", "augment_224")
KIND_HELP = {
    "standard": "standard training step (clean CE)",
    "pgd10_train": "PGD-10 training step (eps 8/255, step 2/255, CE on the PGD examples)",
    "pgd20_eval": "PGD-20 evaluation (clean + attack + robust forward per batch)",
    "augment_224": "paper 224-px train augmentation only, no model (RandomResizedCrop(224)+flip)",
}
SYNTHETIC_NOTE = ("synthetic uint8 CIFAR-shaped images (random 32x32x3, random labels): "
                  "images/s does not depend on image content")
LR = 0.01  # both recipes; momentum 0.9 and weight decay 5e-4 as the paper's scripts
DATASET = "cifar10"  # its statistics and flip rule; the pixels are synthetic


@dataclass(frozen=True)
class Profile:
    arch: str
    protocol: str  # 'paper' (224 px) or 'native' (32 px)
    batch: int
    steps: int
    warmup: int
    sparsity: float  # a real (non-dense) mask, so both recipes pay their masking cost
    threads: int | None  # torch intra-op threads; None: torch's default


PROFILES = {
    # ResNet-18 at 32 px: the same kinds of layers and per-step overheads as ResNet-50, in minutes on 2 cores.
    # One thread, as a sweep's CPU worker (resources.torch_threads): on a shared machine two spinning
    # OpenMP threads ran the same step 13x slower (measured 2026-11-25).
    "cpu": Profile("resnet18", "native", 64, 6, 1, 0.8, 1),
    # The paper's setting: ResNet-50 at 224 px, the adversarial scripts' batch 128. Warm-up 5 > the
    # reference workers' 4 prefetched batches, so an augmentation-bound reference shows it in the timed steps.
    "gpu": Profile("resnet50", "paper", 128, 20, 5, 0.8, None),
}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_mib(dev: torch.device) -> float:
    """GPU: max_memory_allocated since the row began. CPU: the process's peak RSS so far (cannot be reset)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@dataclass
class Row:
    kind: str
    recipe: str  # 'reference' or 'raydw'
    images: int
    seconds: float
    flops_per_image: float | None = None
    peak_mem_mib: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds



def augment_steps(prof: Profile) -> tuple[int, int]:
    """(warm-up, timed) batches of the augmentation rows: with nothing to compute, the consumer drains the
    workers' prefetched batches in the warm-up, so the timed batches measure what the workers produce."""
    return PREFETCH + 1, max(prof.steps, 8)
