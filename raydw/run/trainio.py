"""A Train worker's side of Ray Train: its rank, world and device, the checkpoint it resumes from, its reports
(every rank reports the same number of times: Ray Train synchronizes on report), and the per-epoch Reporter that
writes rank 0's epoch row to the store after its checkpoint. Shared by every worker loop (run/worker.py,
run/sourceworkers.py)."""
from __future__ import annotations

import math
import os
import tempfile

import ray
import ray.train as train
import torch
from ray.train.torch import get_device
from torch.nn.parallel import DistributedDataParallel as DDP

from raydw.store import Store


def setup(job) -> tuple:
    torch.set_num_threads(job.resources.torch_threads)
    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    return rank, world, device


def resume_state() -> dict | None:
    ckpt = train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)


def use_autocast(amp: str, device) -> bool:
    """resources.amp: bf16 autocast on CUDA unless the spec asks for fp32; CPUs always run fp32."""
    return device.type == "cuda" and amp == "bf16"


def _clean(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def report(rank: int, metrics: dict, state: dict | None) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (Train V2 keeps the metrics of the latest one)."""
    if rank == 0 and state is not None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))
            train.report(_clean(metrics), checkpoint=train.Checkpoint.from_directory(d))
    else:
        train.report(_clean(metrics))


class Reporter:
    """on_epoch for the loop: epoch row to the store (rank 0), metrics + a checkpoint to Ray Train."""

    def __init__(self, rank: int, extra_row: dict, store: Store | None, key: str | None, check=None):
        self.rank, self.extra, self.store, self.key, self.node = rank, extra_row, store, key, node_label()
        self.state_fn = None
        self.check = check or (lambda record: None)

    def __call__(self, record: dict, state_fn) -> None:
        self.state_fn = state_fn
        # Checkpoint first, row second: an epoch row in the store then means its checkpoint was persisted, so
        # a killed sweep that shows epoch k resumes at k+1 (once Train's controller has registered it).
        report(self.rank, record, self._tagged(state_fn()) if self.rank == 0 else None)
        if self.rank == 0 and self.store is not None:
            self.store.write_row("epochs", {**record, **self.extra, "node": self.node}, name=f"{self.key}.e{record['epoch']:04d}")
        self.check(record)  # after the report: a stopped cell keeps its last epoch's checkpoint and row

    def final(self, metrics: dict, resume: dict | None) -> None:
        """The last report carries the final metrics in its checkpoint, so a restored finished run re-reports them."""
        state = self.state_fn() if self.state_fn is not None else dict(resume or {})
        if self.rank == 0:
            state["final"] = _clean(metrics)
        report(self.rank, metrics, self._tagged(state) if self.rank == 0 else None)

    def _tagged(self, state: dict) -> dict:
        """The checkpoint says which cell it belongs to (a packed run holds several, one after another)."""
        if "cell_id" in self.extra:
            state["cell_id"] = self.extra["cell_id"]
        return state


def node_label() -> str:
    try:
        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        return os.uname().nodename


def ddp_wrap(model: torch.nn.Module, world: int, device) -> torch.nn.Module | None:
    if world == 1:
        return None
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

