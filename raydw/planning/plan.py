"""The plan of a sweep: every stage's work, typed, computed once from (spec, store). The one place that reads the
store to decide what runs.

`Plan.of(spec, store)` reads the store once (`StoreView`) and lists, per stage, what is there and what is left:
pre-trainings to train or register, IMP rounds to find, masks to make, groups to tune, cells to run, and what each
cell waits for (`needs`). The sweep, its dry run, the input check, the cost plan, the preflight, `raydw status`, the
end-of-sweep summary and the staged scheduler all read a Plan, so they cannot disagree. While a sweep runs, the
scheduler asks `StoreView.read` again (the same definition) which inputs have appeared. Torch- and Ray-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from raydw.cells import Cell, TuneGroup, expand, pretrained_id, tune_groups
from raydw.planning.seedplan import SeedRounds, seed_rounds
from raydw.spec import PretrainingSpec, SweepSpec, TicketSpec, load_spec
from raydw.store import Store
from raydw.tickets import registry
from raydw.tickets.registry import mask_key, params_json

from raydw.planning.view import MASK_COLUMNS, ImpNeed, Needs, StoreView  # noqa: F401 - the plan's facts, imported from here too


# -- each stage's items -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainItem:
    spec: PretrainingSpec
    pretrained_id: str
    state: Literal["stored", "train", "register"]  # register: a `weights:` file, recorded by the driver
    needed: bool  # a cell to run or a group to tune uses it


@dataclass(frozen=True)
class ImpItem:
    """One IMP job: every round of one (pre-training, IMP ticket spec), each stored the moment it exists."""

    pretraining: PretrainingSpec
    pretrained_id: str
    tickets: TicketSpec
    params: dict  # the masks' store key (registry: Iterative.params)
    rounds: int  # rounds the ticket spec needs
    stored: frozenset[int]  # rounds in the store
    needed: bool  # a cell to run uses this pre-training

    @property
    def to_make(self) -> list[int]:
        return [k for k in range(1, self.rounds + 1) if k not in self.stored]

    @property
    def trained_rounds_left(self) -> int:
        """Rounds still to train: round 1 is magnitude pruning (no training), the job resumes after its last round."""
        return max(0, self.rounds - max(1, max(self.stored, default=0)))


@dataclass(frozen=True)
class MaskItem:
    """An omp / random / import mask, made by the driver when its first cell is built (its model stored)."""

    pretrained_id: str
    ticket_index: int
    method: str
    params: str  # params_json
    target: float
    stored: bool


@dataclass(frozen=True)
class TuneItem:
    group: TuneGroup
    recipe: dict | None  # the stored recipe, None: to tune
    trials: int  # tuning trials stored
    budget: int  # tune.num_samples
    done: int = 0  # of which done

    @property
    def state(self) -> Literal["tuned", "to tune", "spent"]:
        """spent: its whole budget stored and every trial failed: its cells do not run. With the budget stored and a
        done trial but no recipe (a sweep stopped between the last trial and the recipe), it is still "to tune":
        tuning runs no trial and writes the recipe from the stored ones."""
        if self.recipe is not None:
            return "tuned"
        return "spent" if self.trials >= self.budget and not self.done else "to tune"


CellState = Literal["done", "stopped", "failed", "missing", "waiting"]


def final_statuses(spec: SweepSpec) -> frozenset[str]:
    """The statuses that end a cell: done, and stopped while early stopping is on (off: a stopped cell reruns)."""
    return frozenset({"done", "stopped"} if spec.early_stop.enabled else {"done"})


def dense_of(cells: list[Cell]) -> dict[str, str]:
    """ticket cell_id -> the cell_id of its dense baseline (same pre-training, dataset, regime, fraction, seed)."""
    key = lambda c: (c.pretrained_id, c.dataset, c.regime, c.data_fraction, c.seed)  # noqa: E731
    dense = {key(c): c.cell_id for c in cells if c.ticket_method == "dense"}
    return {c.cell_id: dense[key(c)] for c in cells if c.ticket_method != "dense" and key(c) in dense}


# -- the plan --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    view: StoreView
    cells: list[Cell]  # the spec's cells, with the store's tuned recipes applied (`tune:` on)
    tuning: list[TuneItem]
    final: frozenset[str]
    seeds: SeedRounds | None = None  # `seeds: {adaptive: ...}`: the rounds of the design against the store (raydw.planning.seedplan)

    @classmethod
    def of(cls, spec: SweepSpec, store: Store | None = None, view: StoreView | None = None) -> "Plan":
        """The spec against `store` (None, or a local store not created yet: nothing done). `view`: a StoreView the
        caller has just read (else read here)."""
        view = StoreView.read(store) if view is None else view
        groups = tune_groups(spec)
        tuning = [TuneItem(g, view.recipes.get(g.tune_id), view.tune_trials.get(g.tune_id, 0), spec.tune.num_samples,
                           view.tune_done.get(g.tune_id, 0)) for g in groups]
        cells = expand(spec, view.recipes if spec.tune.enabled else {})
        seeds = None
        if spec.adaptive_seeds() is not None:  # the design asks for a round at a time (it reads the stored outcomes)
            runnable = [c for c in cells if c.tune_id is None or c.recipe_id is not None]
            seeds = seed_rounds(spec, runnable, store, view.status)
        return cls(spec, view, cells, tuning, final_statuses(spec), seeds)

    # cells -------------------------------------------------------------------------------------------------------
    @cached_property
    def status(self) -> dict[str, str]:
        """cell_id -> the status of its stored trials row, for spec cells that have one."""
        return {c.cell_id: self.view.status[c.cell_id] for c in self.cells if c.cell_id in self.view.status}

    @property
    def recipes(self) -> dict[str, dict]:
        return self.view.recipes

    @cached_property
    def done(self) -> set[str]:
        """Cells that do not run again: a final row (a stopped cell reruns in full once early stopping is off)."""
        return {cid for cid, s in self.status.items() if s in self.final}

    @cached_property
    def waiting(self) -> set[str]:
        """Cells of a tuned group without a recipe yet ("tune first"): they never run untuned."""
        return {c.cell_id for c in self.cells if c.tune_id is not None and c.recipe_id is None}

    @cached_property
    def todo(self) -> list[Cell]:
        """What the next `raydw sweep` runs: not done, not waiting (missing, failed, and stopped ones not final); with
        adaptive seeds, only the cells the design asks for now (the current round's)."""
        done, waiting = self.done, self.waiting
        asked = self.seeds.asked if self.seeds is not None else None
        return [c for c in self.cells if c.cell_id not in done and c.cell_id not in waiting
                and (asked is None or c.cell_id in asked)]

    @cached_property
    def more(self) -> list[Cell]:
        """Adaptive seeds: cells a later round may ask for while verdicts stay open (at most up to `max` seeds)."""
        return [] if self.seeds is None else [c for c in self.cells if c.cell_id in self.seeds.more]

    @cached_property
    def not_needed(self) -> set[str]:
        """Adaptive seeds: cells without a row that no open comparison can ask for (their verdicts are decided or
        stopped at the maximum): final, as a cell the extreme search did not need."""
        return set() if self.seeds is None else set(self.seeds.not_needed)

    @property
    def missing(self) -> int:
        """Cells without any row yet (waiting ones included)."""
        return sum(1 for c in self.cells if c.cell_id not in self.status)

    def state(self, c: Cell) -> CellState:
        """waiting (no tuned recipe), missing (no row), else the stored status (done, failed or stopped)."""
        if c.cell_id in self.waiting:
            return "waiting"
        return self.status.get(c.cell_id, "missing")

    def counts(self) -> dict[str, int]:
        """Cells per state (stopped counted apart from failed; `other`: a status word of a newer writer)."""
        out = {k: 0 for k in ("done", "stopped", "failed", "missing", "waiting", "other")}
        for c in self.cells:
            s = self.state(c)
            out[s if s in out else "other"] += 1
        return out

    # what the cells to run need --------------------------------------------------------------------------------
    @cached_property
    def early_stop(self) -> dict[str, str]:
        """ticket cell_id -> its dense baseline, where early stopping compares them (the dense cell runs first)."""
        return dense_of([c for c in self.cells if c.cell_id not in self.waiting]) if self.spec.early_stop.enabled else {}

    def imp_need(self, c: Cell) -> ImpNeed | None:
        if c.ticket_method != "imp":
            return None
        params = registry.get("imp").params(self.spec.tickets[c.ticket_index], c.pretraining)
        return ImpNeed(c.pretrained_id, params_json(params), c.ticket_round)

    def needs(self, c: Cell) -> Needs:
        return Needs(c.pretrained_id, self.imp_need(c), self.early_stop.get(c.cell_id))

    # source-task stages ----------------------------------------------------------------------------------------
    @cached_property
    def pretrainings(self) -> list[PretrainItem]:
        used = {c.pretrained_id for c in self.todo} | {t.group.base.pretrained_id for t in self.tuning if t.state == "to tune"}
        out = []
        for p in self.spec.pretrainings:
            pid = pretrained_id(p)
            state = "stored" if pid in self.view.pretrained else "register" if p.weights is not None else "train"
            out.append(PretrainItem(p, pid, state, pid in used))
        return out

    @cached_property
    def imp(self) -> list[ImpItem]:
        """Every IMP job of the spec, once per (pre-training, masks' params): two ticket specs asking for the same
        masks share one job."""
        used = {c.pretrained_id for c in self.todo}
        out, seen = [], set()
        for t in (t for t in self.spec.tickets if t.method == "imp"):
            for p in self.spec.pretrainings:
                pid, params = pretrained_id(p), registry.get("imp").params(t, p.name)
                key = (pid, params_json(params))
                if key in seen:
                    continue
                seen.add(key)
                stored = frozenset(self.view.imp_rounds.get(key, {}))
                out.append(ImpItem(p, pid, t, params, registry.imp_rounds_needed(t), stored, pid in used))
        return out

    @cached_property
    def masks(self) -> list[MaskItem]:
        """Every omp / random / import mask of the spec, stored or to make."""
        out = []
        for ti, t in enumerate(self.spec.tickets):
            method = registry.get(t.method)
            if method.needs_job:
                continue
            for p in self.spec.pretrainings:
                if t.method == "import" and p.name not in t.files:
                    continue
                pid, params = pretrained_id(p), method.params(t, p.name)
                for rnd, target in t.levels():
                    if rnd == 0 or target == 0.0:
                        continue
                    out.append(MaskItem(pid, ti, t.method, params_json(params), target,
                                        mask_key(pid, t.method, params, target) in self.view.masks))
        return out

    def imp_jobs(self) -> list[ImpItem]:
        """IMP jobs the next sweep runs: rounds missing, for a pre-training some cell to run uses."""
        return [i for i in self.imp if i.needed and i.to_make]

    def pretrain_jobs(self, pids: set[str] | None = None) -> list[PretrainItem]:
        """Recipes to train before the cells (or the tuning of `pids`) that use them."""
        return [p for p in self.pretrainings if p.state == "train" and (p.needed if pids is None else p.pretrained_id in pids)]

    def to_register(self, pids: set[str] | None = None) -> list[PretrainItem]:
        """`weights:` files not recorded yet, which the driver records before anything runs."""
        return [p for p in self.pretrainings if p.state == "register" and (p.needed if pids is None else p.pretrained_id in pids)]

    def to_tune(self) -> list[TuneItem]:
        return [t for t in self.tuning if t.state == "to tune"]

    def todo_datasets(self) -> set[str]:
        return {c.dataset for c in self.todo}

    def headline(self) -> str:
        waiting = f", {len(self.waiting)} without a tuned recipe (not run)" if self.waiting else ""
        return f"sweep {self.spec.name}: {len(self.cells)} cells, {len(self.done)} already done, {self.to_run_text()}{waiting}"

    def to_run_text(self) -> str:
        """'N to run', and with adaptive seeds how many may follow and how many are not needed."""
        if self.seeds is None:
            return f"{len(self.todo)} to run"
        return (f"{len(self.todo)} to run now, up to {len(self.more)} more while verdicts stay open, "
                f"{len(self.not_needed)} not needed (decided)")


def plan(spec: SweepSpec, store: Store | None = None, recipes: dict[str, dict] | None = None) -> Plan:
    """Plan.of, kept for callers of the first version (`recipes` is read from the store now)."""
    return Plan.of(spec, store)


def imp_item(spec: SweepSpec, t: TicketSpec, p: PretrainingSpec, view: StoreView) -> ImpItem:
    """The IMP item of one (ticket spec, pre-training) against `view` (the preflight probes one of them)."""
    pid, params = pretrained_id(p), registry.get("imp").params(t, p.name)
    stored = frozenset(view.imp_rounds.get((pid, params_json(params)), {}))
    return ImpItem(p, pid, t, params, registry.imp_rounds_needed(t), stored, True)



def spec_cells(uri: str, spec) -> set[str]:
    """The cell ids a sweep spec (a SweepSpec or a path) plans against this store: `cells=` for one sweep's findings.
    Here, not in raydw.findings.analysis: the plan reads the verdicts (adaptive seeds), so the analysis must not import it."""
    spec = load_spec(spec) if not hasattr(spec, "pretrainings") else spec
    return {c.cell_id for c in plan(spec, Store(str(uri))).cells}  # tuned groups' ids, as raydw sweep plans them
