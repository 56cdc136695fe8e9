"""A preflight probe of one training path (raydw sweep --preflight): the real loop, shrunk to a few steps. Ray-free.

The path runs exactly as its sweep job would (model, weights, mask, data files, protocol, attacks, loop, report,
checkpoint), with three things changed and nothing else: two epochs of `steps` batches (the first is the warm-up,
the second is timed), one validation batch and one test batch. Validation always includes the evaluation attack,
so every path measures what one evaluated image costs.
"""
from __future__ import annotations

import math
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raydw.provenance import device_name
from raydw.spec import RegimeSpec

if TYPE_CHECKING:
    from raydw.data.device import Data
# torch (and raydw.data.device, which imports it) inside the functions that run on the workers: the driver builds a
# preflight's jobs with a Probe, and a driver that finds every model and mask stored never needs torch.

EPOCHS = 2  # epoch 0 warms up (allocations, kernels, the data pipeline); epoch 1 is the one measured


@dataclass(frozen=True)
class Probe:
    steps: int  # training steps per epoch
    batch: int | None  # the per-step batch (all workers together); None: the path's own batch size
    rounds: int = 2  # IMP: rounds found (round 1 prunes the pre-trained weights, round 2 re-trains once)

    def regime(self, r: RegimeSpec) -> RegimeSpec:
        """The path's regime shrunk to the probe: same optimizer, attack and precision, EPOCHS epochs, validated
        (SA and RA with the evaluation attack) only in the timed epoch."""
        return r.model_copy(update={"epochs": EPOCHS, "batch_size": self.batch or r.batch_size, "val_start_epoch": 1,
                                    "validate_ra": True, "pre_validation": "skip"})

    def data(self, d: Data, batch: int, world: int) -> Data:
        """`steps` training batches and one batch each of validation and test images, of this rank's shards."""
        from raydw.data.device import Data

        per_rank = max(1, batch // world)
        return Data(train=_head(d.train, self.steps * per_rank), val=_head(d.val, per_rank), test=_head(d.test, per_rank),
                    transform=d.transform, train_images=self.steps * per_rank * world)


def _head(split, n: int):
    from torch.utils.data import Subset

    from raydw.data.device import Split

    if isinstance(split, Split):
        return Split(split.x[:n], split.y[:n])
    # a streamed ImageFolder split (raydw.data.imagefolder.FolderSplit): the same loader over its first n images
    from raydw.data.imagefolder import FolderSplit

    return FolderSplit(Subset(split.ds, range(min(n, len(split.ds)))), split.train, split.device, split.rank,
                       split.world, split.workers)


def start(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def figures(history: list[dict], probe: Probe, batch: int, eval_images: int, device) -> dict:
    """What the timed epoch measured: seconds per training step and per evaluated image (clean + evaluation
    attack), the batch they were measured at, and the peak memory (the device's on CUDA, the process's RSS on CPU)."""
    import torch

    timed = history[-1] if history else {}
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "GPU"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "RSS"
    per_image = timed.get("eval_s", math.nan) / eval_images if eval_images else math.nan
    return {"probe_s_per_step": timed.get("epoch_s", math.nan) / probe.steps, "probe_s_per_eval_image": per_image,
            "probe_batch": batch, "probe_steps": probe.steps, "probe_peak_bytes": int(peak), "probe_memory": kind,
            "device": device_name(device)}


def out_of_memory(e: BaseException, batch: int, what: str) -> str:
    """A CUDA out-of-memory error as a failed path's message: the batch, what was asked, what to change."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (f"out of device memory at batch {batch} ({what}): {first} -- lower the batch size (--batch B to probe a "
            "smaller one, then the spec's batch_size), spread the batch over more workers (resources.workers_per_cell), "
            "or train in bf16 (resources.amp)")
