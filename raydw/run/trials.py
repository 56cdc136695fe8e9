"""Ray Tune trial functions (the Train-V2 pattern): each trial drives one Ray Train run (a TorchTrainer, `Trainer`).

The Train run is named by the cell's content id, not Tune's trial id, so a rerun of the sweep restores the
run and continues a half-done cell from its last epoch checkpoint (ray-notes section 10). The trial writes
the cell's `trials` row, `done` or `failed` with the error, whatever happened in the workers.
"""
from __future__ import annotations

import functools
import importlib
import time

import ray.train as train
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from raydw.run import preflight_rows
from raydw.run.rows import CellResult, cell_row, error_text
from raydw.run.jobs import CellJob, ImpJob, Job, PackJob, PretrainJob, ProbeJob
from raydw.run.rendezvous import BoundTorchConfig
from raydw.store import Store

# The Train workers' loops, by name: imported on the workers, where the training code and torch are needed, and not
# in the trial that starts the run (torch alone was ~1.4 CPU-s and ~470 MB of resident memory, much of it torch's library pages, in every trial; docs/performance.md).
LOOPS = {"cell": "raydw.run.worker:cell_worker", "pack": "raydw.run.worker:pack_worker",
         "probe": "raydw.run.worker:probe_worker", "pretrain": "raydw.run.sourceworkers:pretrain_worker",
         "imp": "raydw.run.sourceworkers:imp_worker"}


def loop(target: str, config: dict) -> None:
    """Runs on every Train worker: the loop `module:function` (a LOOPS value) with the run's config ({"job": job})."""
    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(config)


@functools.cache
def state_api_served() -> bool:
    """Whether this Ray can serve its state API: Ray starts the dashboard's API server only where its
    `ray[default]` packages import (Ray's own test, once per process). raydw's `ray[tune,train]` install has none
    of them; cluster.yaml installs `ray[default]` on its nodes."""
    from ray._private.utils import get_dashboard_dependency_error

    return get_dashboard_dependency_error() is None


class Trainer(DataParallelTrainer):
    """Ray's TorchTrainer as raydw runs it: a DataParallelTrainer with BoundTorchConfig as its backend (what TorchTrainer
    is, with Ray's TorchConfig; TorchTrainer's module imports torch, which the trial never needs: ~1.4 CPU-s and
    ~470 MB of resident memory, much of it torch's library pages, in every trial), and without two of Ray Train 2.60's per-run helper actors where they can do nothing;
    each is a Python process that imports Ray, ~1.5-2 CPU-s of every Train run (docs/performance.md, "Machinery"):
    - the DatasetsCallback's DatasetManager: raydw passes no Ray Datasets (nothing calls get_dataset_shard);
    - the detached PlacementGroupCleaner, where Ray cannot serve its state API: its monitor asks that API every
      second whether the controller lives, fails (ServerUnavailable), retries, and so can never remove a dead
      controller's placement group (raydw.run.orphans does, when a sweep joins a cluster). Where the API can be
      served, it stays. It also sometimes held a run's end for 12 s (its monitor thread's stop timeout).
    (Asking the API itself is no test: on a Ray started without its dashboard, one call waited 40 s and failed.)
    `_create_default_callbacks` is private to Ray 2.60 (pyproject pins ray==2.60.0); tests/test_sweep_ray.py checks
    that a sweep starts neither actor here, so a Ray that renames the method fails that test."""

    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        idle = (DatasetsCallback,) if state_api_served() else (DatasetsCallback, PlacementGroupCleanerCallback)
        return [c for c in super()._create_default_callbacks() if not isinstance(c, idle)]


def _trainer(kind: str, job: Job) -> Trainer:
    """One Train run of `job`: its workers get the job whole, bound into the loop ({"job": job}).

    Not as `train_loop_config`: Ray keeps that in the run's context, which the Train controller unpickles, so every
    controller imported raydw's job module and with it torch (~1.4 s of a ~4 CPU-s controller, seen with
    PYTHONPROFILEIMPORTTIME in its worker log); the bound loop travels through Ray's object store to the workers only."""
    res = job.resources
    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker > 0:
        per_worker["GPU"] = res.gpus_per_worker
    return Trainer(
        functools.partial(loop, LOOPS[kind], {"job": job}),
        # The rendezvous on the node's Ray address only (loopback on a local Ray); its backend picks NCCL on GPUs,
        # else gloo, as TorchTrainer does.
        backend_config=BoundTorchConfig(),
        scaling_config=train.ScalingConfig(num_workers=res.workers_per_cell, use_gpu=res.gpus_per_worker > 0,
                                           resources_per_worker=per_worker),
        run_config=train.RunConfig(
            name=job.train_name,
            storage_path=Store(job.run.storage).train_path,
            failure_config=train.FailureConfig(max_failures=res.max_failures),
            # One checkpoint per run: a ResNet-50 state with momentum and two best copies is ~400 MB.
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
        ),
    )


def cell_trial(job: CellJob) -> None:
    """One cell's Train run and its trials row. Its epoch reports stay in Ray Train (the result's metrics are the last
    one): nothing in a sweep reads them from Tune (progress lines, trackers and early stopping read the store; a
    tuning trial reports its one score itself, raydw.run.tuning), and forwarding them (TuneReportCallback) cost a
    queue actor per cell (~1.5 CPU-s of ~18 per tiny cell's Train run, docs/performance.md) and opened the one-slot race of
    docs/findings.md ("hung after its 36th line")."""
    store = Store(job.run.storage)
    t0 = time.time()
    try:
        m = _trainer("cell", job).fit().metrics or {}
        result = CellResult.from_report(m) if m.get("final") == 1 else CellResult.failed(
            "the Train run ended without its final report")
    except Exception as e:  # noqa: BLE001 - any failure becomes the cell's recorded status
        result = CellResult.failed(f"{type(e).__name__}: {e}")
    store.write_row("trials", cell_row(job, result, time.time() - t0))


def pack_trial(job: PackJob) -> None:
    """Several cells, one after another, in one Train run (`resources.cells_per_run`): the run's start-up is paid
    once. The workers write each cell's trials row as it finishes; a cell the run did not finish is recorded
    failed here, with the run's error."""
    store = Store(job.run.storage)
    try:
        _trainer("pack", job).fit()  # no TuneReportCallback, as for a single cell
        why = "the packed Train run ended before this cell finished"
    except Exception as e:  # noqa: BLE001 - recorded on every cell the run did not finish
        why = f"{type(e).__name__}: {e}"
    for j in job.cells:
        if store.get("trials", j.cell.cell_id) is None:
            store.write_row("trials", cell_row(j, CellResult.failed(why), 0.0))


def pretrain_trial(job: PretrainJob) -> None:
    _trainer("pretrain", job).fit()
    if Store(job.run.storage).get("pretrained", job.pretrained_id) is None:
        raise RuntimeError(f"pre-training {job.name} finished without storing its weights")


def imp_trial(job: ImpJob) -> None:
    _trainer("imp", job).fit()


def probe_trial(pj: ProbeJob) -> None:
    """A preflight path: its job's Train run shrunk to a few steps, then its last checkpoint restored into a freshly
    built model (strict), and its row in the scratch store: the cell's trials row for a cell, and a preflight row."""
    store = Store(pj.run.storage)
    t0 = time.time()
    restored = False
    try:
        result = _trainer("probe", pj).fit()  # its lines read the rows below, not Tune's results
        m = dict(result.metrics or {})
        if m.get("final") != 1:
            raise RuntimeError("the Train run ended without its final report")
        if m.get("status", "done") == "done":
            preflight_rows.restore(pj, store, result.checkpoint)
            restored = True
    except Exception as e:  # noqa: BLE001 - a failed path is the preflight's finding, named on its row
        m = {"status": "failed", "error": error_text(f"{type(e).__name__}: {e}")}
    if isinstance(pj.job, CellJob) and m.get("final") == 1:
        store.write_row("trials", cell_row(pj.job, CellResult.from_report(m), time.time() - t0))
    store.write_row("preflight", preflight_rows.row(pj, m, restored, time.time() - t0))
