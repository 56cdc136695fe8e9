"""What the store holds, read once (StoreView), and what a cell waits for in it (Needs): the facts the plan decides
from and the scheduler polls. Only the planner's modules read the store to decide what runs
(tests/test_architecture.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from raydw.store import Store
from raydw.tickets.registry import mask_key

MASK_COLUMNS = ["mask_id", "pretrained_id", "method", "params", "round", "target_sparsity", "sparsity"]


# -- what the store holds ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreView:
    """What a plan depends on, from one read of each table it needs. Empty for a store not created yet."""

    pretrained: dict[str, str | None] = field(default_factory=dict)  # pretrained_id -> kind (standard/fast/pgd)
    masks: dict[tuple, dict] = field(default_factory=dict)  # registry.mask_key -> masks row (id, level, sparsity)
    imp_rounds: dict[tuple[str, str], dict[int, dict]] = field(default_factory=dict)  # (pid, params_json) -> round -> row
    status: dict[str, str] = field(default_factory=dict)  # cell_id -> status of its trials row (main and tune rows)
    recipes: dict[str, dict] = field(default_factory=dict)  # tune_id -> tuned recipe
    recipe_rows: dict[str, dict] = field(default_factory=dict)  # tune_id -> its recipes row's value and trial count
    tune_trials: dict[str, int] = field(default_factory=dict)  # tune_id -> tuning trials stored
    tune_done: dict[str, int] = field(default_factory=dict)  # tune_id -> of which done (a recipe can be chosen)

    @classmethod
    def read(cls, store: Store | None, tables: tuple[str, ...] = ("pretrained", "masks", "trials", "recipes")) -> "StoreView":
        """One read of `tables` (what a caller needs: the scheduler polls only what its waiting jobs wait on)."""
        if store is None or (store.local and not Path(store.root).exists()):
            return cls()
        pre, masks, imp, status, recipes, recipe_rows, tune, tune_done = {}, {}, {}, {}, {}, {}, {}, {}
        if "pretrained" in tables:  # a model is there when its row's file is (its kind is read where the row reads)
            t = store.read_table("pretrained", columns=["pretrained_id", "kind"])
            kinds = dict(zip(t.column("pretrained_id").to_pylist(), t.column("kind").to_pylist()))
            pre = {pid: kinds.get(pid) for pid in store.names("pretrained")}
        if "masks" in tables:
            for r in store.read_table("masks", columns=MASK_COLUMNS).to_pylist():
                if r["target_sparsity"] is not None:  # a row without a level is found by its round alone (IMP)
                    masks[mask_key(r["pretrained_id"], r["method"], json.loads(r["params"]), r["target_sparsity"])] = r
                if r["method"] == "imp":
                    imp.setdefault((r["pretrained_id"], r["params"]), {})[r["round"]] = r
        if "trials" in tables:
            t = store.read_table("trials", columns=["cell_id", "status", "phase", "tune_id"])
            for cid, s, ph, tid in zip(*(t.column(c).to_pylist() for c in ("cell_id", "status", "phase", "tune_id"))):
                status[cid] = s
                if ph == "tune":
                    tune[tid] = tune.get(tid, 0) + 1
                    tune_done[tid] = tune_done.get(tid, 0) + (s == "done")
        if "recipes" in tables:
            rows = store.read_table("recipes", columns=["tune_id", "recipe", "value", "trials"]).to_pylist()
            recipes = {r["tune_id"]: json.loads(r["recipe"]) for r in rows}
            recipe_rows = {r["tune_id"]: r for r in rows}
        return cls(pre, masks, imp, status, recipes, recipe_rows, tune, tune_done)

    def imp_round(self, need: "ImpNeed") -> dict | None:
        return self.imp_rounds.get((need.pretrained_id, need.params), {}).get(need.round)


# -- what a cell waits for ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImpNeed:
    """An IMP round's mask, by its provenance (the IMP job stores it under these columns)."""

    pretrained_id: str
    params: str  # registry params_json
    round: int


@dataclass(frozen=True)
class Needs:
    """What must be in the store before a job can be built and run."""

    pretrained: str | None = None
    imp: ImpNeed | None = None
    cell: str | None = None  # a cell that must be done first: the dense baseline that early stopping compares with

    def met(self, view: StoreView) -> bool:
        return ((self.pretrained is None or self.pretrained in view.pretrained)
                and (self.imp is None or view.imp_round(self.imp) is not None)
                and (self.cell is None or view.status.get(self.cell) == "done"))

    def why(self, view: StoreView) -> str:
        """The first unmet input, as a reason a job was never run."""
        if self.pretrained is not None and self.pretrained not in view.pretrained:
            return f"pre-trained model {self.pretrained} was not stored (its pre-training failed?)"
        if self.imp is not None and view.imp_round(self.imp) is None:
            return f"IMP round {self.imp.round} was not stored (its IMP job failed?)"
        if self.cell is not None and view.status.get(self.cell) != "done":
            return f"its dense baseline {self.cell} did not finish"
        return "not released"
