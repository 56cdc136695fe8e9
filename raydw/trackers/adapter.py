"""What a tracker records of one Ray Tune trial: the cells it runs, and where their rows go.

The run layer knows the shape of its trials' configs; it hands `callbacks(..., jobs_of=)` the function that says
which cell jobs a trial runs (raydw.run.tuner.trial_jobs), so this package never imports the run layer (it is
imported by it). Everything else in raydw.trackers sees `Tracked` values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raydw.cells import Cell


@dataclass(frozen=True)
class Tracked:
    """One cell a trial runs: a tracker run each. `group` is its tuning group's label for tuning trials."""

    cell: Cell
    phase: str  # "main" | "tune"
    tune_id: str | None
    sweep: str
    storage: str  # the results store its epoch and trials rows are written to
    group: str | None = None


def tracked(config: dict, jobs_of: Callable[[dict], list]) -> list[Tracked]:
    """The cells of one trial, in the order it runs them: one for a cell or tuning trial, several for a pack, none
    for pre-training and IMP jobs (they are not cells). `jobs_of(config)`: the trial's cell jobs (CellJob)."""
    group = config.get("group")  # a tuning trial's TuneGroup
    return [Tracked(j.cell, j.cell.phase, j.cell.tune_id, j.run.sweep, j.run.storage,
                    group.label() if group is not None else None) for j in jobs_of(config)]
