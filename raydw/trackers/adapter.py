"""The one place that knows the shape of a Ray Tune trial's config: which cells a trial runs, and where.

raydw's trials carry their job as a dict today (raydw.run.sweep._job_entry, raydw.run.tuning._trial_entry); when
that shape changes, only this function changes. Everything else in raydw.trackers sees `Tracked` values.
"""
from __future__ import annotations

from dataclasses import dataclass

from raydw.cells import Cell, TuneGroup


@dataclass(frozen=True)
class Tracked:
    """One cell a trial runs: a tracker run each. `group` is its tuning group's label for tuning trials."""

    cell: Cell
    phase: str  # "main" | "tune"
    tune_id: str | None
    sweep: str
    storage: str  # the results store its epoch and trials rows are written to
    group: str | None = None


def tracked(config: dict) -> list[Tracked]:
    """The cells of one trial, in the order it runs them: one for a cell or tuning trial, several for a pack, none
    for pre-training and IMP jobs (they are not cells)."""
    if "group" in config and "fields" in config:  # a tuning trial: the group's dense cell with the sampled recipe
        gd = config["group"]
        g = TuneGroup(gd["tune_id"], gd["metric"], Cell.from_dict(gd["base"]))
        cell = g.trial_cell({k: config[k] for k in config["fields"]})
        job = config["job"]
        return [Tracked(cell, cell.phase, cell.tune_id, job["sweep"], job["storage"], g.label())]
    kind, job = config.get("kind"), config.get("job") or {}
    if kind == "cell":
        jobs = [job]
    elif kind == "pack":
        jobs = job["cells"]
    else:
        return []
    out = []
    for j in jobs:
        c = Cell.from_dict(j["cell"])
        out.append(Tracked(c, c.phase, c.tune_id, j["sweep"], j["storage"]))
    return out
