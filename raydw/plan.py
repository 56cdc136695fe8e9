"""What a sweep spec asks of a store: every cell and its state, the one definition of what is left to run.

Used by the sweep, the dry run, `raydw status`, the input checks and analysis, so they cannot disagree. Torch- and
Ray-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raydw.cells import Cell, expand
from raydw.spec import SweepSpec
from raydw.store import Store


@dataclass(frozen=True)
class Plan:
    cells: list[Cell]  # the spec's cells, with the store's tuned recipes applied (`tune:` on)
    status: dict[str, str]  # cell_id -> the status of its stored trials row, for spec cells that have one
    final: frozenset[str]  # the statuses that end a cell: done, and stopped while early stopping is on
    recipes: dict[str, dict]  # tune_id -> the stored tuned recipe

    @property
    def done(self) -> set[str]:
        """Cells that do not run again: a final row (a stopped cell reruns in full once early stopping is off)."""
        return {cid for cid, s in self.status.items() if s in self.final}

    @property
    def waiting(self) -> set[str]:
        """Cells of a tuned group without a recipe yet ("tune first"): they never run untuned."""
        return {c.cell_id for c in self.cells if c.tune_id is not None and c.recipe_id is None}

    @property
    def todo(self) -> list[Cell]:
        """What the next `raydw sweep` runs: not done, not waiting (missing, failed, and stopped ones not final)."""
        done, waiting = self.done, self.waiting
        return [c for c in self.cells if c.cell_id not in done and c.cell_id not in waiting]

    @property
    def missing(self) -> int:
        """Cells without any row yet (waiting ones included)."""
        return sum(1 for c in self.cells if c.cell_id not in self.status)


def final_statuses(spec: SweepSpec) -> frozenset[str]:
    return frozenset({"done", "stopped"} if spec.early_stop.enabled else {"done"})


def plan(spec: SweepSpec, store: Store | None = None, recipes: dict[str, dict] | None = None) -> Plan:
    """The spec's cells against `store` (None, or a local store not created yet: nothing done). `recipes`: the
    tuned recipes, where the caller has just read them (else read here, `tune:` on)."""
    exists = store is not None and (not store.local or Path(store.root).exists())
    if recipes is None:
        recipes = store.recipes() if exists and spec.tune.enabled else {}
    cells = expand(spec, recipes)
    status: dict[str, str] = {}
    if exists:
        ids = {c.cell_id for c in cells}
        t = store.read_table("trials", columns=["cell_id", "status"])
        status = {c: s for c, s in zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()) if c in ids}
    return Plan(cells, status, final_statuses(spec), recipes)
