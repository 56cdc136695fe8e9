"""Ray Train worker loops of downstream cells: what each Train worker runs for one cell, a packed run of cells, or a
preflight probe of any job (pre-training and IMP: run/sourceworkers.py; reports and checkpoints: run/trainio.py).

Rank 0 writes the per-epoch rows to the store and reports a checkpoint per epoch; every rank reports the
same number of times (Ray Train synchronizes on report). A resumed worker gets its last checkpoint from
`ray.train.get_checkpoint()` and continues at the next epoch.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from raydw import outcomes
from raydw.data import catalog
from raydw.provenance import device_name
from raydw.run.earlystop import EarlyStopped, early_stop_check, stopped_fields
from raydw.run.jobs import CellJob, ImpJob, PackJob, PretrainJob, ProbeJob, batch_size
from raydw.run.rows import CellResult, cell_row
from raydw.run.sourceworkers import run_imp, run_pretrain
from raydw.run.trainio import Reporter, ddp_wrap, node_label, report, resume_state, setup, use_autocast
from raydw.store import Store
from raydw.train import probe as probing
from raydw.train.loop import Diverged, fit
from raydw.train.probe import Probe
from raydw.train.setup import cell_model, load_data


def _outcome_bits(examples: dict) -> tuple[dict[str, bytes], int | None]:
    """The per-example test outcomes, packed, by column (bits_<outcome>_<checkpoint>), and the test images behind them."""
    bits, n = {}, None
    for ckpt, ex in examples.items():
        for name, correct in ex.items():
            if correct is not None:
                bits[outcomes.column(name, ckpt)] = outcomes.pack(correct)
                n = len(correct)
    return bits, n


def cell_worker(config: dict) -> None:
    job: CellJob = config["job"]
    rank, world, device = setup(job)
    _cell(job, rank, world, device, resume_state())


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
        report(rank, resume["final"], resume if rank == 0 else None)
        return CellResult.from_report(resume["final"])
    reporter = Reporter(rank, {"cell_id": cell.cell_id, "resumed_from": 0 if resume is None else resume["epoch"] + 1},
                         store, cell.cell_id, early_stop_check(store, job.early_stop))
    model, mask, _ = cell_model(store, cell, job.mask_id)
    model = model.to(device).to(memory_format=torch.channels_last)
    bound = mask.bind(model.net) if mask is not None else None
    idx = np.asarray(store.get("index_sets", job.index_set_id)["indices"], dtype=np.int64)
    data = load_data(cell.dataset, job.run.data_root, cell.protocol, idx, device, rank, world)
    if probe is not None:
        data = probe.data(data, regime.batch_size, world)
        probing.start(device)
    autocast = use_autocast(job.resources.amp, device)
    ran = dict(device=device_name(device), node=node_label(), workers=world, amp="bf16" if autocast else "fp32",
               train_images=data.train_images, final_attack=None if ev.final_attack == "none" else ev.final_attack)
    figures = {}  # a probe's measurements, reported beside the result for the preflight's row
    strong = None
    if ev.final_attack != "none":
        from raydw import final_attacks  # torchattacks, an optional extra: only when eval.final_attack asks for it

        strong = final_attacks.bound(ev.final_attack, model, eval_attack.eps, catalog.get(cell.dataset).num_classes, cell.seed)
    t_fit = time.perf_counter()
    try:
        out = fit(model, bound, data, regime, eval_attack, cell.seed, on_epoch=reporter, resume=resume,
                  autocast=autocast, ddp=ddp_wrap(model, world, device),
                  val_schedule=ev.val_schedule() if probe is None else None, final_attack=strong)
    except Diverged as e:  # deterministic: record it as the cell's failure instead of letting Train retry it
        result = CellResult(status="failed", error=str(e), **ran)
    except EarlyStopped as e:
        result = CellResult(status="stopped", error=str(e), fit_s=time.perf_counter() - t_fit, **ran,
                            **stopped_fields(store, cell.cell_id, e.epoch))
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
    rank, world, device = setup(pack)
    cells = pack.cells
    ids = [j.cell.cell_id for j in cells]
    resume = resume_state()
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
    # No closing report of the pack's own: right behind the last cell's final one, it was a second report while Tune
    # still handled the first, the pattern in which Ray 2.60's TuneReportCallback can leave a trial that never
    # completes (docs/findings.md, "hung after its 36th line"). The last cell's final report ends the run.


def probe_worker(config: dict) -> None:
    """A preflight path (raydw.run.preflight): its job's own worker code, shrunk by the probe. Running out of device
    memory is said with the batch and what to change."""
    pj: ProbeJob = config["job"]
    job = pj.job
    rank, world, device = setup(pj)
    run = {CellJob: _cell, ImpJob: run_imp, PretrainJob: run_pretrain}[type(job)]
    try:
        run(job, rank, world, device, None, pj.probe)
    except torch.cuda.OutOfMemoryError as e:
        raise RuntimeError(probing.out_of_memory(e, pj.probe.batch or batch_size(job), pj.label)) from None
