"""A preflight path's outcome: its row in the scratch store's preflight table, and the restore of its checkpoint."""
from __future__ import annotations

import datetime as dt
import math
import os

from raydw.run import rows
from raydw.run.jobs import CellJob, ImpJob, ProbeJob
from raydw.store import Store


def restore(pj: ProbeJob, store: Store, checkpoint) -> None:
    """Load the run's last persisted checkpoint (from the run's storage, as a resumed worker would) into a model
    built afresh for the path, strictly: a checkpoint that does not restore fails the path."""
    import torch  # here, not at the top: the trial that writes a path's row imports this module (raydw.run.trials)

    from raydw.models.build import Normalized, build_net
    from raydw.train.setup import cell_model, load_pretrained

    if checkpoint is None:
        raise RuntimeError("the Train run persisted no checkpoint")
    with checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
    job = pj.job
    if isinstance(job, CellJob):
        model = cell_model(store, job.cell, job.mask_id)[0]
        weights = state["model"]
    elif isinstance(job, ImpJob):
        row, net = load_pretrained(store, job.pretrained_id)
        model, weights = Normalized(net, tuple(row["mean"]), tuple(row["std"])), state["fit"]["model"]
    else:
        from raydw.data import catalog

        info = catalog.get(job.recipe.dataset)
        model = Normalized(build_net(job.recipe.arch, info.num_classes, info.channels), info.mean, info.std)
        weights = state["model"]
    model.load_state_dict(weights, strict=True)


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def row(pj: ProbeJob, m: dict, restored: bool, wall_s: float) -> dict:
    job = pj.job
    cell = job.cell if isinstance(job, CellJob) else None
    status = "ok" if m.get("final") == 1 and m.get("status", "done") == "done" and restored else "failed"
    error = "" if status == "ok" else (rows.cause(str(m.get("error") or "")) or "no error recorded")
    return {"path_id": pj.path_id, "sweep": job.run.sweep, "kind": _kind(job), "label": pj.label,
            "pretraining": cell.pretraining if cell else job.name, "dataset": cell.dataset if cell else None,
            "regime": cell.regime if cell else None, "ticket_method": cell.ticket_method if cell else None,
            "cell_id": cell.cell_id if cell else None, "status": status, "error": error,
            "s_per_step": _num(m.get("probe_s_per_step")), "s_per_eval_image": _num(m.get("probe_s_per_eval_image")),
            "batch": m.get("probe_batch"), "steps": m.get("probe_steps"), "peak_bytes": m.get("probe_peak_bytes"),
            "memory": m.get("probe_memory"), "device": m.get("device"), "workers": pj.resources.workers_per_cell,
            "restored": restored, "wall_s": wall_s, "finished_at": dt.datetime.now(dt.timezone.utc)}


def _kind(job) -> str:
    return "cell" if isinstance(job, CellJob) else "imp" if isinstance(job, ImpJob) else "pretrain"
