"""The one place a Ray Tune Tuner is built, and its one progress callback.

A sweep's stages and a tuning group's Optuna trials both run here: trials come from a Searcher (the sweep's
staged searcher, or OptunaSearch), each runs its job's trial function in the driver's small resource bundle
(TRAIN_DRIVER), and the Progress callback prints one line per finished trial with an estimate of the time left.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import time
from typing import Callable

from ray import tune
from ray.tune.logger import JsonLoggerCallback

from raydw.run import trials
from raydw.run import cluster
from raydw.run.cluster import driver_resources
from raydw.run.jobs import CellJob, ImpJob, PackJob, PretrainJob, ProbeJob
from raydw.store import Store, StoreError

# What each job type runs as its Tune trial.
TRIALS: dict[type, Callable] = {CellJob: trials.cell_trial, PackJob: trials.pack_trial, PretrainJob: trials.pretrain_trial,
                                ImpJob: trials.imp_trial, ProbeJob: trials.probe_trial}


def run_name(sweep: str, stage: str = "") -> str:
    """A Tune experiment's folder name: the sweep, the stage, the start time."""
    return f"{sweep}{'-' + stage if stage else ''}-{dt.datetime.now():%Y%m%d-%H%M%S}"


def fit(name: str, store: Store, concurrency: int, callbacks: list, search_alg, num_samples: int = -1,
        entry: Callable[[dict], None] | None = None, param_space: dict | None = None) -> None:
    """Run trials from `search_alg` (each config holds its job under "job") until it says it is finished."""
    # Of Tune's own loggers only the JSON one (its ResultGrid at the end reads result.json, and warns for each trial
    # without one): the CSV one copies it, and the TensorBoard one logged, per trial, "Removed the following
    # hyperparameter values ... {'job': CellJob(...)}", a screenful each. The store holds every epoch, and a tracker
    # in the spec sends them where the user looks. Read when the Tuner starts.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    callbacks = [JsonLoggerCallback(), *callbacks]
    tuner = tune.Tuner(
        tune.with_resources(entry or job_entry, driver_resources()), param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=num_samples, max_concurrent_trials=concurrency,
                                    reuse_actors=True, trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=name, storage_path=store.tune_path, verbose=1 if cluster.VERBOSE else 0,
                                  callbacks=callbacks),
    )
    try:
        tuner.fit()
    except (EOFError, OSError) as e:  # Tune's ResultGrid reads its state back from the store: a full one ends there
        try:
            store.check_writable()
        except StoreError as full:
            raise StoreError(f"{full}: the store filled up (or turned read-only) during the sweep; every row already "
                             "stored is kept whole: free space and rerun the same command to resume") from None
        raise e


def job_entry(config: dict) -> None:
    """A sweep's or a preflight's trial (a tuning trial reports its score instead, raydw.run.tuning). Tune gets its one
    result here, once the job's Train run has ended (a failed pre-training or IMP run raised before; an IMP run's
    workers return only after its last round is stored): the progress lines read the stored rows, and an IMP job's
    line this result. Forwarding each report of the run instead (TuneReportCallback) started a queue actor per run
    (~1.5 CPU-s) and its one-slot queue could leave a trial that never ends (docs/findings.md); a trial with no result
    at all had Tune print a "Trial ... completed. Last result:" line of its own."""
    job = config["job"]
    TRIALS[type(job)](job)
    tune.report({"final": 1})


def candidate(config: dict) -> CellJob:
    """A tuning trial's job: the group's dense cell job with the recipe Optuna sampled into the config."""
    cell = config["group"].trial_cell({k: config[k] for k in config["fields"]})
    return config["job"].for_cell(cell)


def trial_jobs(config: dict) -> list[CellJob]:
    """The cell jobs one trial runs, in order (the trackers' view of a trial): one for a cell or tuning trial,
    several for a pack, none for pre-training and IMP jobs."""
    if "group" in config:
        return [candidate(config)]
    job = config.get("job")
    if isinstance(job, PackJob):
        return list(job.cells)
    return [job] if isinstance(job, CellJob) else []


def _num(v) -> float:
    return math.nan if v is None else float(v)


def say(msg: str) -> None:
    print(msg, flush=True)


class Progress(tune.Callback):
    """One line per finished trial; `lines(trial)` says what it finished: (label, text) per cell, or a plain line.

    The pace is the cells finished since the end of the first trial that finished cells, over the time since then
    (pre-training and start-up are not per cell). That first trial's own cells are not in the pace: with packed
    cells they all end in the same instant, and counting them made the estimate several times too short."""

    def __init__(self, total: int | Callable[[], int], lines: Callable, done: int = 0, prefix: str = "", tag: str = "",
                 not_started: Callable[[], str] = str):
        """`not_started()`: the stages not started yet (the scheduler's), said beside the estimate, which is made
        from finished cells and so cannot include them (a newcomer saw "~1.0 min left" with a pre-training and 36
        cells to go)."""
        # total: a number, or a function where later rounds add cells (adaptive seeds, the extreme search)
        self._total = total if callable(total) else (lambda: total)
        self.lines, self.n, self.prefix, self.tag = lines, done, prefix, tag
        self.not_started = not_started
        self.t0: float | None = None  # when the first trial with cells ended
        self.base = done  # cells finished by then

    def on_trial_complete(self, iteration, trials, trial, **info):
        cells = 0
        for item in self.lines(trial):
            if isinstance(item, str):
                say(item)
                continue
            label, text = item
            self.n += 1
            cells += 1
            ran, total = self.n - self.base, self._total()
            left = (time.time() - self.t0) / ran * (total - self.n) if self.t0 is not None and ran > 0 else None
            say(f"{self.prefix}[{self.tag}{self.n}/{total}] {label}: {text}"
                + (f", ~{left / 60:.1f} min left{self.not_started()}" if left is not None and self.n < total else ""))
        if cells and self.t0 is None:
            self.t0, self.base = time.time(), self.n

    def on_trial_error(self, iteration, trials, trial, **info):
        self.on_trial_complete(iteration, trials, trial)


def cell_text(row: dict, took: float | None) -> str:
    """A finished cell's outcome as its progress line says it, from its stored row."""
    if row.get("status") == "done":
        ra = row.get("ra")  # RA at the RA-best epoch, or at the SA-best one where RA is not validated (rows.cell_row)
        what = f"SA {_num(row.get('sa_at_sa_best')):.3f} RA {_num(ra):.3f}"
    elif row.get("status") == "stopped":
        what = f"stopped early: {str(row.get('error'))[:120]}"
    else:
        what = f"FAILED: {str(row.get('error') or 'no error recorded').splitlines()[0][:160]}"
    return what + (f" ({took:.0f} s)" if took else "")


def no_row(trial) -> dict:
    """A finished trial left no trials row: its writer failed (a full disk, say). The trial's own error says why."""
    why = "no trials row was stored"
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001 - only for the message
        err = None
    lines = [ln.strip() for ln in str(err or "").splitlines() if ln.strip()]
    if lines:
        why += f" ({lines[-1][:200]})"
    return {"status": "failed", "error": why}


def sweep_lines(trial) -> list:
    """The sweep's progress: a line per pre-training and IMP job, a counted line per cell (packed ones each)."""
    job, r = trial.config["job"], trial.last_result or {}
    if isinstance(job, PretrainJob):  # from its stored row, as a cell's line is (no row: the trial failed)
        r = Store(job.run.storage).get("pretrained", job.pretrained_id) or {}
        return [f"pre-trained {job.name}: source-task clean {_num(r.get('clean_acc')):.3f}, robust {_num(r.get('robust_acc')):.3f}"]
    if isinstance(job, ImpJob):
        return [f"IMP {job.name}: {'all rounds stored' if r.get('final') else 'FAILED (see the Ray logs)'}"]
    store = Store(job.run.storage)
    if isinstance(job, PackJob):  # one line per packed cell, from the rows its workers stored
        out = []
        for j in job.cells:
            row = store.get("trials", j.cell.cell_id) or no_row(trial)
            out.append((j.cell.label(), cell_text(row, row.get("wall_s"))))
        return out
    # The cell's stored row says how it ended (a failed cell's error starts with its cause).
    row = store.get("trials", job.cell.cell_id) or no_row(trial)
    return [(job.cell.label(), cell_text(row, row.get("wall_s")))]
