"""Ray Train worker loops: what each Train worker runs for a downstream cell or a pre-training recipe.

Rank 0 writes the per-epoch rows to the store and reports a checkpoint per epoch; every rank reports the
same number of times (Ray Train synchronizes on report). A resumed worker gets its last checkpoint from
`ray.train.get_checkpoint()` and continues at the next epoch.
"""
from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np
import ray
import ray.train as train
import torch
from ray.train.torch import get_device
from torch.nn.parallel import DistributedDataParallel as DDP

from raydw import outcomes
from raydw.data import catalog
from raydw.models.build import Normalized, build_net
from raydw.provenance import device_name
from raydw.pruning.imp import imp
from raydw.pruning.mask import Mask
from raydw.run.jobs import CellJob, EarlyStop, ImpJob, PackJob, PretrainJob, ProbeJob, batch_size
from raydw.run.rows import CellResult, cell_row
from raydw.spec import ImpSpec
from raydw.store import Store, config_json
from raydw.tickets.lookup import stored_imp_rounds
from raydw.tickets.make import mask_row
from raydw.train.imp_rounds import fit_round, spec_regime
from raydw.train import probe as probing
from raydw.train.loop import Diverged, evaluate, fit
from raydw.train.probe import Probe
from raydw.train.setup import (cell_model, load_data, load_pretrained, recipe_eval_attack, recipe_regime, save_pretrained,
                               source_data)


def _setup(job) -> tuple:
    torch.set_num_threads(job.resources.torch_threads)
    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    return rank, world, device


def _resume_state() -> dict | None:
    ckpt = train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)


def _autocast(amp: str, device) -> bool:
    """resources.amp: bf16 autocast on CUDA unless the spec asks for fp32; CPUs always run fp32."""
    return device.type == "cuda" and amp == "bf16"


def _outcome_bits(examples: dict) -> tuple[dict[str, bytes], int | None]:
    """The per-example test outcomes, packed, by column (bits_<outcome>_<checkpoint>), and the test images behind them."""
    bits, n = {}, None
    for ckpt, ex in examples.items():
        for name, correct in ex.items():
            if correct is not None:
                bits[outcomes.column(name, ckpt)] = outcomes.pack(correct)
                n = len(correct)
    return bits, n


def _clean(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _report(rank: int, metrics: dict, state: dict | None) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (Train V2 keeps the metrics of the latest one)."""
    if rank == 0 and state is not None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))
            train.report(_clean(metrics), checkpoint=train.Checkpoint.from_directory(d))
    else:
        train.report(_clean(metrics))


class EarlyStopped(RuntimeError):
    """This ticket trails its dense baseline by more than the spec's margin: stop and record why."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


def _stopped_fields(store: Store, cell_id: str, last_epoch: int) -> dict:
    """What a stopped cell's trials row can still say, from its stored epoch rows (this and earlier segments)."""
    rows = [store.get("epochs", f"{cell_id}.e{k:04d}") for k in range(last_epoch + 1)]
    rows = [r for r in rows if r is not None]
    out: dict = {"epochs": len(rows)}
    for m in ("sa", "ra"):
        vals = [(r[f"val_{m}"], r["epoch"]) for r in rows if r.get(f"val_{m}") is not None and not math.isnan(r[f"val_{m}"])]
        if vals:
            best = max(vals, key=lambda v: (v[0], -v[1]))  # the first epoch with the best value, as the loop picks
            out[f"val_{m}_best"], out[f"best_epoch_{m}"] = best
    return out


def _early_stop_check(store: Store, plan: EarlyStop | None):
    """on_epoch hook: compare this epoch's validation with the dense cell's at the same epoch (from the store)."""
    if not plan:
        return lambda record: None

    def check(record: dict) -> None:
        if record["epoch"] < plan.grace:
            return
        dense = store.get("epochs", f"{plan.dense_cell_id}.e{record['epoch']:04d}")
        if dense is None:
            return
        for m in plan.metrics:
            mine, ref = record.get(f"val_{m}"), dense.get(f"val_{m}")
            if mine is None or ref is None or math.isnan(mine) or math.isnan(ref):
                continue
            if mine < ref - plan.margin:
                raise EarlyStopped(f"stopped at epoch {record['epoch']}: validation {m.upper()} {mine:.4f} trails the dense "
                                   f"model's {ref:.4f} by more than the margin {plan.margin}", record["epoch"])

    return check


class _Reporter:
    """on_epoch for the loop: epoch row to the store (rank 0), metrics + a checkpoint to Ray Train."""

    def __init__(self, rank: int, extra_row: dict, store: Store | None, key: str | None, check=None):
        self.rank, self.extra, self.store, self.key, self.node = rank, extra_row, store, key, _node()
        self.state_fn = None
        self.check = check or (lambda record: None)

    def __call__(self, record: dict, state_fn) -> None:
        self.state_fn = state_fn
        # Checkpoint first, row second: an epoch row in the store then means its checkpoint was persisted, so
        # a killed sweep that shows epoch k resumes at k+1 (once Train's controller has registered it).
        _report(self.rank, record, self._tagged(state_fn()) if self.rank == 0 else None)
        if self.rank == 0 and self.store is not None:
            self.store.write_row("epochs", {**record, **self.extra, "node": self.node}, name=f"{self.key}.e{record['epoch']:04d}")
        self.check(record)  # after the report: a stopped cell keeps its last epoch's checkpoint and row

    def final(self, metrics: dict, resume: dict | None) -> None:
        """The last report carries the final metrics in its checkpoint, so a restored finished run re-reports them."""
        state = self.state_fn() if self.state_fn is not None else dict(resume or {})
        if self.rank == 0:
            state["final"] = _clean(metrics)
        _report(self.rank, metrics, self._tagged(state) if self.rank == 0 else None)

    def _tagged(self, state: dict) -> dict:
        """The checkpoint says which cell it belongs to (a packed run holds several, one after another)."""
        if "cell_id" in self.extra:
            state["cell_id"] = self.extra["cell_id"]
        return state


def _node() -> str:
    try:
        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        return os.uname().nodename


def _wrap(model: torch.nn.Module, world: int, device) -> torch.nn.Module | None:
    if world == 1:
        return None
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def cell_worker(config: dict) -> None:
    job: CellJob = config["job"]
    rank, world, device = _setup(job)
    _cell(job, rank, world, device, _resume_state())


def _cell(job: CellJob, rank: int, world: int, device, resume: dict | None, probe: Probe | None = None) -> CellResult:
    """Fine-tune and evaluate one cell; returns its result (also reported, with a checkpoint marked final).
    `probe` (raydw sweep --preflight): the same path shrunk to a few timed steps, its figures added to the report."""
    store = Store(job.run.storage)
    cell = job.cell
    regime = cell.regime_spec if probe is None else probe.regime(cell.regime_spec)
    ev = cell.eval_spec  # the evaluation the cell's id covers, on the cell itself
    eval_attack = ev.attack
    if resume is not None and "final" in resume:  # the run had finished; only its trials row was missing
        # (or the cell failed deterministically, e.g. diverged before its first epoch: its checkpoint then holds
        # no epoch, and the rerun reports the same failure rather than a KeyError of its own)
        _report(rank, resume["final"], resume if rank == 0 else None)
        return CellResult.from_report(resume["final"])
    reporter = _Reporter(rank, {"cell_id": cell.cell_id, "resumed_from": 0 if resume is None else resume["epoch"] + 1},
                         store, cell.cell_id, _early_stop_check(store, job.early_stop))
    model, mask, _ = cell_model(store, cell, job.mask_id)
    model = model.to(device).to(memory_format=torch.channels_last)
    bound = mask.bind(model.net) if mask is not None else None
    idx = np.asarray(store.get("index_sets", job.index_set_id)["indices"], dtype=np.int64)
    data = load_data(cell.dataset, job.run.data_root, cell.protocol, idx, device, rank, world)
    if probe is not None:
        data = probe.data(data, regime.batch_size, world)
        probing.start(device)
    autocast = _autocast(job.resources.amp, device)
    ran = dict(device=device_name(device), node=_node(), workers=world, amp="bf16" if autocast else "fp32",
               train_images=data.train_images, final_attack=None if ev.final_attack == "none" else ev.final_attack)
    figures = {}  # a probe's measurements, reported beside the result for the preflight's row
    strong = None
    if ev.final_attack != "none":
        from raydw import final_attacks  # torchattacks, an optional extra: only when eval.final_attack asks for it

        strong = final_attacks.bound(ev.final_attack, model, eval_attack.eps, catalog.get(cell.dataset).num_classes, cell.seed)
    t_fit = time.perf_counter()
    try:
        out = fit(model, bound, data, regime, eval_attack, cell.seed, on_epoch=reporter, resume=resume,
                  autocast=autocast, ddp=_wrap(model, world, device),
                  val_schedule=ev.val_schedule() if probe is None else None, final_attack=strong)
    except Diverged as e:  # deterministic: record it as the cell's failure instead of letting Train retry it
        result = CellResult(status="failed", error=str(e), **ran)
    except EarlyStopped as e:
        result = CellResult(status="stopped", error=str(e), fit_s=time.perf_counter() - t_fit, **ran,
                            **_stopped_fields(store, cell.cell_id, e.epoch))
    else:
        bits, test_n = _outcome_bits(out.examples)
        result = CellResult(status="done", error="", **out.test, bits=bits, test_n=test_n, train_s=out.train_s,
                            fit_s=time.perf_counter() - t_fit, epochs=len(out.history),
                            best_epoch_sa=out.best["sa"]["epoch"], best_epoch_ra=out.best["ra"]["epoch"],
                            val_sa_best=out.best["sa"]["value"], val_ra_best=out.best["ra"]["value"], **ran)
        if probe is not None:
            figures = probing.figures(out.history, probe, regime.batch_size, len(data.val) * world, device)
    reporter.final({**result.report(), **figures}, resume)
    return result


def pack_worker(config: dict) -> None:
    """Several cells in one Train run, in order; rank 0 stores each cell's trials row the moment it is final.

    The checkpoint names the cell it belongs to, so a restarted run skips the cells before it, continues that
    cell from its last epoch (or, if its checkpoint is marked final, re-reports it through `_cell` and writes its
    row, which a kill between the final report and the row write would otherwise lose), and goes on with the rest.
    """
    pack: PackJob = config["job"]
    rank, world, device = _setup(pack)
    cells = pack.cells
    ids = [j.cell.cell_id for j in cells]
    resume = _resume_state()
    start = 0
    if resume is not None and resume.get("cell_id") in ids:
        start = ids.index(resume["cell_id"])
    else:
        resume = None
    store = Store(pack.run.storage)
    for i in range(start, len(cells)):
        t0 = time.time()
        result = _cell(cells[i], rank, world, device, resume if i == start else None)
        if rank == 0:
            store.write_row("trials", cell_row(cells[i], result, time.time() - t0))
    _report(rank, {"final": 1, "cells": len(cells)}, None)


def pretrain_worker(config: dict) -> None:
    """Train one recipe on its source task from a seeded random init; rank 0 stores the weights."""
    job: PretrainJob = config["job"]
    _pretrain(job, *_setup(job), _resume_state())


def _pretrain(job: PretrainJob, rank: int, world: int, device, resume: dict | None, probe: Probe | None = None) -> dict:
    store = Store(job.run.storage)
    recipe = job.recipe
    info = catalog.get(recipe.dataset)
    torch.manual_seed(recipe.seed)
    net = build_net(recipe.arch, info.num_classes, info.channels)
    model = Normalized(net, info.mean, info.std).to(device).to(memory_format=torch.channels_last)
    data = load_data(recipe.dataset, job.run.data_root, "native", np.arange(info.pool), device, rank, world)
    regime = recipe_regime(recipe) if probe is None else probe.regime(recipe_regime(recipe))
    if probe is not None:
        data = probe.data(data, regime.batch_size, world)
        probing.start(device)
    t0 = time.time()
    autocast = _autocast(job.resources.amp, device)
    reporter = _Reporter(rank, {}, None, None)
    out = fit(model, None, data, regime, recipe_eval_attack(recipe), recipe.seed,
              on_epoch=reporter, resume=resume, autocast=autocast, ddp=_wrap(model, world, device))
    clean, robust = evaluate(model, data.test, data.transform, recipe_eval_attack(recipe), autocast=autocast)
    if rank == 0:
        row = {"pretrained_id": job.pretrained_id, "name": job.name, "arch": recipe.arch, "kind": recipe.kind,
               "source": "raydw pretrain recipe", "dataset": recipe.dataset, "num_classes": info.num_classes,
               "in_chans": info.channels, "mean": list(info.mean), "std": list(info.std), "clean_acc": clean,
               "robust_acc": robust, "config": config_json(recipe.model_dump(mode="json")), "wall_s": time.time() - t0}
        save_pretrained(store, row, model.net)
    final = {"final": 1, "clean_acc": clean, "robust_acc": robust}
    if probe is None:
        _report(rank, final, None)
    else:  # a probe also reports its last state, which the preflight restores
        final.update(probing.figures(out.history, probe, regime.batch_size, len(data.val) * world, device))
        reporter.final(final, None)
    return final


def imp_worker(config: dict) -> None:
    """IMP for one pre-training on its source task: each round's mask goes to the store the moment it exists.

    Resumable by round (a rerun starts after the last stored round) and within a round (the per-epoch
    checkpoint holds the round and its training state).
    """
    job: ImpJob = config["job"]
    _imp(job, *_setup(job), _resume_state())


def _imp(job: ImpJob, rank: int, world: int, device, ckpt: dict | None, probe: Probe | None = None) -> dict:
    """`probe`: its rounds only (round 1 is pruning alone, each later one re-trains once), each re-training shrunk."""
    store = Store(job.run.storage)
    tickets = job.tickets
    spec = tickets.imp or ImpSpec()
    pid, name, params = job.pretrained_id, job.name, job.params
    prow, net = load_pretrained(store, pid)
    info = catalog.get(spec.dataset)
    if prow["num_classes"] != info.num_classes:
        raise ValueError(f"IMP re-trains {name} on {spec.dataset} ({info.num_classes} classes), but the model's head "
                         f"has {prow['num_classes']}: tickets.imp.dataset must be the pre-training task")
    model = Normalized(net, tuple(prow["mean"]), tuple(prow["std"])).to(device).to(memory_format=torch.channels_last)
    # ImageNet is decoded by DataLoader processes: the worker's CPUs but the one driving the GPU.
    workers = max(0, int(job.resources.cpus_per_worker) - 1)
    data = source_data(spec.dataset, spec.root, device, rank, world, workers)
    regime = spec_regime(spec, name) if probe is None else probe.regime(spec_regime(spec, name))
    if probe is not None:
        data = probe.data(data, regime.batch_size, world)
        probing.start(device)
    stored = stored_imp_rounds(store, pid, params)
    start = None
    if stored:
        k = max(stored)
        row = store.get("masks", stored[k]["mask_id"])
        start = (k, Mask.unpack(row["bits"], row["layout"]))
    mid = (ckpt["round"], ckpt["fit"]) if ckpt and start and ckpt.get("round") == start[0] else None

    def on_round(k: int, mask) -> None:
        if rank == 0 and k not in stored:
            store.write_row("masks", mask_row(mask, name, pid, "imp", params, k, 1 - (1 - tickets.rate) ** k))
        _report(rank, {"round": k, "sparsity": mask.sparsity()}, None)

    history: list[dict] = []
    last = {}

    def on_epoch(k: int, record: dict, state_fn) -> None:
        history.append(record)
        last.update(round=k, fit=state_fn)
        _report(rank, {"round": k, **record}, {"round": k, "fit": state_fn()} if rank == 0 else None)

    train_round = fit_round(model, data, regime, spec.seed, eval_attack=None,
                            autocast=_autocast(job.resources.amp, device), ddp=_wrap(model, world, device), on_epoch=on_epoch, resume=mid)
    imp(model.net, job.rounds if probe is None else probe.rounds, tickets.rate, train_round, tickets.prunable, start=start, on_round=on_round)
    final = {"final": 1}
    state = None
    if probe is not None:  # the last report carries the last re-training state, which the preflight restores
        final.update(probing.figures(history, probe, regime.batch_size, len(data.val) * world, device))
        state = {"round": last["round"], "fit": last["fit"]()} if rank == 0 and last else None
    _report(rank, final, state)
    return final


def probe_worker(config: dict) -> None:
    """A preflight path (raydw.run.preflight): its job's own worker code, shrunk by the probe. Running out of device
    memory is said with the batch and what to change."""
    pj: ProbeJob = config["job"]
    job = pj.job
    rank, world, device = _setup(pj)
    run = {CellJob: _cell, ImpJob: _imp, PretrainJob: _pretrain}[type(job)]
    try:
        run(job, rank, world, device, None, pj.probe)
    except torch.cuda.OutOfMemoryError as e:
        raise RuntimeError(probing.out_of_memory(e, pj.probe.batch or batch_size(job), pj.label)) from None
