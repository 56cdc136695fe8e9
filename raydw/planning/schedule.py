"""Which job of a sweep runs next: jobs are released as soon as their inputs exist, the longest chains first.

Ray-free: raydw.run.pipeline.StagedSearcher hands what `Scheduler.next` releases to Ray Tune, one trial each, and
tells it when a trial ends. Pre-training recipes run first; an IMP job starts when its pre-trained model is stored;
a cell starts when its pre-trained model and its mask are stored, so IMP round k's transfer cells run while round
k+1 is being found (ray-notes section 11). What has appeared is read with the plan's own StoreView.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from raydw.planning.plan import Needs, Plan, StoreView
from raydw.store import Store

POLL_S = 0.5  # how often the store is asked again while jobs wait for inputs
FINISHED = "FINISHED"  # nothing is running and nothing waiting can become ready


@dataclass
class Task:
    """A job waiting to be released: what it needs first, and how to build it (when released, its inputs exist)."""

    kind: str  # pretrain | imp | cell
    key: str
    label: str
    build: Callable[[StoreView], object]  # JobBuilder's method for this job, given what the store holds now
    needs: Needs = field(default_factory=Needs)
    gated: bool = False  # released only when the gate allows it: the extreme search asks for its level, or a seed round
    why_blocked: str = field(default="", compare=False)


def sweep_tasks(plan: Plan, builder, gated: bool = False) -> list[Task]:
    """Every job the next sweep runs, from its plan: the recipes to train, the IMP jobs with rounds to find, and the
    cells to run, each with what it waits for. `builder`: the sweep's raydw.run.jobs.JobBuilder. `gated`: ticket
    cells wait for the extreme search to ask for their level. With adaptive seeds the cells that may follow are
    tasks too, gated: the SeedGate (raydw.planning.seedgate) releases them a round at a time."""
    tasks = [Task("pretrain", p.pretrained_id, f"pre-train {p.spec.name}", lambda v, p=p: builder.pretrain(p.spec))
             for p in plan.pretrain_jobs()]
    tasks += [Task("imp", f"imp-{i.pretrained_id}-{i.tickets.method}", f"IMP {i.pretraining.name}",
                   lambda v, i=i: builder.imp(i), Needs(pretrained=i.pretrained_id)) for i in plan.imp_jobs()]
    later = {c.cell_id for c in plan.more}  # adaptive seeds: cells a later round may ask for wait for the SeedGate
    tasks += [Task("cell", c.cell_id, c.label(), lambda v, c=c, n=plan.needs(c): builder.cell(c, v, dense_cell_id=n.cell),
                   plan.needs(c), gated=(gated and c.ticket_method != "dense") or c.cell_id in later)
              for c in (*plan.todo, *plan.more)]
    return tasks


def _priority(task: Task) -> int:
    """Which ready job takes a free slot first (a stable sort: plan order otherwise). Pre-training and IMP jobs head
    the longest chains; then a found IMP round's cells, so they run while the next round is being found (the point
    of pipelining) rather than queue behind cells that could run any time, such as random or imported tickets."""
    if task.kind in ("pretrain", "imp"):
        return 0
    return 1 if task.needs.imp else 2


class Scheduler:
    """Releases ready jobs one at a time, or ready cells `cells_per_run` at a time (a pack runs them in one Train run).

    `gate`: raydw.run.adaptive.LevelGate (`search: extreme`), which releases ticket levels as the search asks, and/or
    raydw.planning.seedgate.SeedGate (adaptive seeds), which releases a seed round at a time (raydw.planning.seedgate.Gates: both)."""

    def __init__(self, tasks: list[Task], store: Store, gate=None, cells_per_run: int = 1):
        self.pending = sorted(tasks, key=_priority)
        self.store, self.gate, self.cells_per_run = store, gate, cells_per_run
        self.running = 0
        self.handed = 0  # cells released so far
        self.view = StoreView()
        self._seen_at = -POLL_S
        self._read = False
        self._waiting = True  # some pending job's input (or gate) is not there yet, as of the last read
        self._failed: list[Task] = []

    def next(self) -> list[tuple[Task, object]] | str | None:
        """The next job(s) to run with their built jobs; FINISHED; or None (wait: something running may make a
        waiting job ready).

        While some job waits for an input (or a gate), the store is read again after every ended trial, so a job
        whose input just appeared takes the next slot by its priority (an IMP round ahead of cells ready all along).
        Once nothing waits, it is read again only when nothing is ready with what was last read: inputs only appear
        during a sweep, and re-reading after every ended trial cost ~0.3 s per cell handed out at 10x the paper's
        grid (benchmarks/plan_scale.py)."""
        if not self._read or self._waiting:
            self._refresh()
        out = self._release()
        if not out and self._refresh():
            out = self._release()
        if out:
            self.running += 1
            self.handed += sum(t.kind == "cell" for t, _ in out)
            return out
        if not self.running:  # nothing in flight can make a waiting job ready any more
            for task in self.pending:
                task.why_blocked = task.why_blocked or task.needs.why(self.view)
            return FINISHED
        return None

    def _release(self) -> list[tuple[Task, object]]:
        out: list[tuple[Task, object]] = []
        for task in list(self.pending):
            if (out and task.kind != "cell") or not self._ready(task):
                continue
            self.pending.remove(task)
            try:
                built = task.build(self.view)
            except Exception as e:  # noqa: BLE001 - an input that cannot be built blocks this job only
                task.why_blocked = f"{type(e).__name__}: {e}"
                self._failed.append(task)
                continue
            out.append((task, built))
            if task.kind != "cell" or len(out) == self.cells_per_run:
                break
        return out

    def ended(self) -> None:
        """A released job's trial ended: look at the store again at the next call."""
        self.running = max(0, self.running - 1)
        self._seen_at = -POLL_S

    def _refresh(self) -> bool:
        """Read the store again (and update the gate), at most every POLL_S unless a trial ended; True if read."""
        if time.monotonic() - self._seen_at < POLL_S:
            return False
        self._seen_at, self._read = time.monotonic(), True
        needs = [t.needs for t in self.pending]
        tables = (("pretrained",) if any(n.pretrained for n in needs) else ()) \
            + (("masks",) if any(n.imp for n in needs) else ()) + (("trials",) if any(n.cell for n in needs) else ())
        self.view = StoreView.read(self.store, tables)
        if self.gate is not None:
            self.gate.update()
        self._waiting = self.gate is not None or not all(t.needs.met(self.view) for t in self.pending)
        return True

    def _ready(self, task: Task) -> bool:
        if task.gated and not self.gate.allows(task.key):
            return False
        return task.needs.met(self.view)

    def not_started(self) -> str:
        """The stages whose jobs have not started, for a time-left estimate made from cells alone ("" if none)."""
        n = {k: sum(t.kind == k for t in self.pending) for k in ("pretrain", "imp")}
        parts = [f"{n['pretrain']} pre-training(s)"] * bool(n["pretrain"]) + [f"{n['imp']} IMP job(s)"] * bool(n["imp"])
        return f"; {' and '.join(parts)} not started yet, not in the estimate" if parts else ""

    def skipped(self) -> list[Task]:
        """Cells the extreme search or the seed design did not ask for."""
        return [t for t in self.pending if t.gated and not self.gate.allows(t.key)]

    def blocked(self) -> list[Task]:
        skipped = {id(t) for t in self.skipped()} if self.gate is not None else set()
        return [*self._failed, *(t for t in self.pending if id(t) not in skipped)]
