"""Stage pipelining inside one Tuner: a Tune Searcher that releases each job as soon as its inputs exist.

Pre-training recipes run first; an IMP job starts when its pre-trained model is stored; a cell starts when
its pre-trained model and its mask are stored, so IMP round k's transfer cells run while round k+1 is being
found (ray-notes section 11). The same mechanism can later choose cells adaptively.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ray.tune.search import Searcher

from raydw.run.jobs import CellJob, Job, PackJob
from raydw.store import Store
from raydw.tickets.registry import params_json

POLL_S = 0.5  # how often the store is asked again while jobs wait for inputs


@dataclass
class Task:
    """A job waiting to be released: what it needs first, and how to build it (when released, its mask exists)."""

    kind: str  # pretrain | imp | cell
    key: str
    label: str
    build: Callable[[], Job]  # JobBuilder's method for this job
    needs_pretrained: str | None = None
    needs_imp: tuple | None = None  # (pretrained_id, mask params, round)
    needs_cell: str | None = None  # a cell that must be done first (the dense baseline, for early stopping)
    gated: bool = False  # released only when the adaptive search asks for its level
    why_blocked: str = field(default="", compare=False)


class StagedSearcher(Searcher):
    def __init__(self, tasks: list[Task], store: Store, gate=None, cells_per_run: int = 1):
        super().__init__()
        self.gate = gate  # raydw.run.adaptive.LevelGate for `search: extreme`
        self.cells_per_run = cells_per_run  # > 1: ready cells are packed into one Train run (a "pack" trial)
        self.pending = list(tasks)
        self.running: dict[str, list[Task]] = {}
        self.store = store
        self._seen_at = 0.0
        self._pretrained: set[str] = set()
        self._imp: dict[tuple, set[int]] = {}
        self._failed: list[Task] = []
        self._done: set[str] = set()

    # Tune's Searcher API -------------------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        self._refresh()
        pack: list[tuple[Task, CellJob]] = []
        for task in sorted(self.pending, key=_priority):
            if not self._ready(task) or (pack and task.kind != "cell"):
                continue
            self.pending.remove(task)
            try:
                built = task.build()
            except Exception as e:  # noqa: BLE001 - an input that cannot be built blocks this job only
                task.why_blocked = f"{type(e).__name__}: {e}"
                self._failed.append(task)
                continue
            if task.kind != "cell" or self.cells_per_run == 1:
                self.running[trial_id] = [task]
                return {"job": built}
            pack.append((task, built))
            if len(pack) == self.cells_per_run:
                break
        if pack:
            self.running[trial_id] = [j for j, _ in pack]
            return {"job": PackJob(tuple(b for _, b in pack))}
        if not self.running:  # nothing in flight can make a waiting job ready any more
            for task in self.pending:
                task.why_blocked = task.why_blocked or self._why(task)
            return Searcher.FINISHED
        return None

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a rerun rebuilds every job's state from the store (rerun is resume)."""

    def restore(self, checkpoint_path: str) -> None:
        """See save()."""

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.running.pop(trial_id, None)
        self._seen_at = 0.0  # something finished: look at the store again at the next suggest

    # readiness -------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        if time.monotonic() - self._seen_at < POLL_S:
            return
        self._seen_at = time.monotonic()
        self._pretrained = set(self.store.names("pretrained"))
        if self.gate is not None:
            self.gate.update()
        if any(j.needs_cell for j in self.pending):
            self._done = self.store.done_cells()
        if any(j.needs_imp for j in self.pending):
            t = self.store.read_table("masks", columns=["pretrained_id", "method", "params", "round"]).to_pylist()
            self._imp = {}
            for r in t:
                if r["method"] == "imp":
                    self._imp.setdefault((r["pretrained_id"], r["params"]), set()).add(r["round"])

    def _ready(self, job: Task) -> bool:
        if job.needs_pretrained and job.needs_pretrained not in self._pretrained:
            return False
        if job.needs_cell and job.needs_cell not in self._done:
            return False
        if job.gated and not self.gate.allows(job.key):
            return False
        if job.needs_imp:
            return job.needs_imp[2] in self._imp.get(_imp_key(job.needs_imp), set())
        return True

    def skipped(self) -> list[Task]:
        """Cells the adaptive search did not need."""
        return [j for j in self.pending if j.gated and not self.gate.allows(j.key)]

    def blocked(self) -> list[Task]:
        skipped = {id(j) for j in self.skipped()} if self.gate is not None else set()
        return [*self._failed, *(j for j in self.pending if id(j) not in skipped)]

    def _why(self, job: Task) -> str:
        if job.needs_pretrained and job.needs_pretrained not in self._pretrained:
            return f"pre-trained model {job.needs_pretrained} was not stored (its pre-training failed?)"
        if job.needs_imp:
            return f"IMP round {job.needs_imp[2]} was not stored (its IMP job failed?)"
        if job.needs_cell:
            return f"its dense baseline {job.needs_cell} did not finish"
        return "not released"


def _priority(task: Task) -> int:
    """Which ready job takes a free slot first (a stable sort: plan order otherwise). Pre-training and IMP jobs head
    the longest chains; then a found IMP round's cells, so they run while the next round is being found (the point
    of pipelining) rather than queue behind cells that could run any time, such as random or imported tickets."""
    if task.kind in ("pretrain", "imp"):
        return 0
    return 1 if task.needs_imp else 2


def _imp_key(need: tuple) -> tuple:
    return (need[0], params_json(need[1]))
