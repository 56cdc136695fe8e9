"""Stage pipelining inside one Tuner: a Tune Searcher that hands Ray Tune what raydw.planning.schedule releases.

The decisions (what is ready, what goes first, which cells share a Train run) are raydw.planning.schedule.Scheduler's,
Ray-free and tested without Ray; this adapter turns each release into a trial config and each ended trial into
a call back.
"""
from __future__ import annotations

from ray.tune.search import Searcher

from raydw.run.jobs import PackJob
from raydw.planning.schedule import FINISHED, Scheduler, Task


class StagedSearcher(Searcher):
    def __init__(self, tasks: list[Task], store, gate=None, cells_per_run: int = 1):
        super().__init__()
        self.scheduler = Scheduler(tasks, store, gate, cells_per_run)
        self.cells_per_run = cells_per_run

    # Tune's Searcher API -------------------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        got = self.scheduler.next()
        if got == FINISHED:
            return Searcher.FINISHED
        if got is None:
            return None
        if len(got) == 1 and (got[0][0].kind != "cell" or self.cells_per_run == 1):
            return {"job": got[0][1]}
        return {"job": PackJob(tuple(job for _, job in got))}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a rerun rebuilds every job's state from the store (rerun is resume)."""

    def restore(self, checkpoint_path: str) -> None:
        """See save()."""

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.scheduler.ended()

    def not_started(self) -> str:
        return self.scheduler.not_started()

    def handed(self) -> int:
        """Cells handed to Ray Tune so far."""
        return self.scheduler.handed

    def skipped(self) -> list[Task]:
        return self.scheduler.skipped()

    def blocked(self) -> list[Task]:
        return self.scheduler.blocked()
