"""Grid expansion: a SweepSpec becomes a list of Cells, each named by a content hash of its resolved config.

The hash covers what determines a cell's numbers (pre-training, ticket, dataset and protocol, the regime as
resolved for that dataset, data fraction, evaluation attack, seed) and nothing about where or how it runs
(storage, resources, sweep name), so two sweeps that ask for the same cell share it. Fields equal to their
defaults are left out of the hash (open_lth's rule), so adding a defaulted field keeps old ids valid.
Axes are not a blind product: the dense level is one cell per setting whatever the ticket method, and a
regime's data fractions belong to that regime. With `tune:` on, a group's tuned recipe (docs/tuning.md) is
applied to the regime of every cell of the group before its id is computed. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from raydw.spec import EvalSpec, PretrainingSpec, RegimeSpec, SweepSpec
from raydw.tickets import registry

HASH_VERSION = 1


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def pretraining_identity(p: PretrainingSpec) -> dict:
    if p.recipe is not None:
        return {"name": p.name, "recipe": p.recipe.model_dump(mode="json", exclude_defaults=True)}
    out = {"name": p.name, "weights": p.weights}
    if p.arch:
        out["arch"] = p.arch
    return out


def pretrained_id(p: PretrainingSpec) -> str:
    """Content id of a pre-trained model: recipe hash, or the weights' name/path (its sha256 is recorded on load)."""
    ident = pretraining_identity(p)
    ident.pop("name")  # the same recipe under two labels is one model
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]


def pretraining_arch(p: PretrainingSpec) -> str:
    if p.arch:
        return p.arch
    if p.recipe is not None:
        return p.recipe.arch
    from raydw.models.catalog import get_pretrained

    return get_pretrained(p.weights).arch


@dataclass(frozen=True)
class Cell:
    cell_id: str
    pretraining: str
    pretrained_id: str
    arch: str
    ticket_method: str  # "dense" for level 0
    ticket_round: int | None
    target_sparsity: float
    prunable: str
    dataset: str
    protocol: str
    normalization: str
    regime: str
    regime_kind: str
    data_fraction: float
    fraction_method: str
    seed: int
    ticket_index: int  # which entry of the spec's `tickets` list (not part of the id)
    canonical: dict = field(repr=False, compare=False)
    # The regime as resolved for this dataset and the evaluation (attack, schedule, final attack), typed: both are
    # part of the id through `canonical`, and carried here so a cell's trial needs nothing from beside it to train
    # and evaluate as its id says. Specs are frozen, so cells of one setting share one object (expansion stays fast).
    regime_spec: RegimeSpec = field(repr=False, compare=False)
    eval_spec: EvalSpec = field(repr=False, compare=False)
    # Tuning (docs/tuning.md), none of it part of the id beyond what `canonical` holds:
    phase: str = "main"  # "tune" for a tuning trial of a dense recipe
    tune_id: str | None = None  # the tuning group this cell belongs to (None: its regime is not tuned)
    recipe_id: str | None = None  # the tuned recipe it runs with (tuning trials: the candidate's)

    def label(self) -> str:
        lvl = "dense" if self.ticket_method == "dense" else f"{self.ticket_method} s={self.target_sparsity:.3f}"
        tag = " [tune trial]" if self.phase == "tune" else ""
        return f"{self.pretraining} {lvl} {self.dataset} {self.regime} f={self.data_fraction:g} seed={self.seed}{tag}"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def row_fields(self) -> dict:
        """The cell's own columns of its trials row."""
        return {k: getattr(self, k) for k in ROW_FIELDS}


# What a trials row says about its cell (the rest of the row is the run's outcome and provenance).
ROW_FIELDS = ("cell_id", "pretraining", "pretrained_id", "arch", "ticket_method", "ticket_round", "target_sparsity",
              "prunable", "dataset", "protocol", "normalization", "regime", "regime_kind", "data_fraction",
              "fraction_method", "seed", "phase", "tune_id", "recipe_id")


def cell_id(canonical: dict) -> str:
    return hashlib.sha256(canonical_json(canonical).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TuneGroup:
    """One (pre-training, dataset, regime, data fraction) whose dense recipe is tuned; `base` is its untuned dense
    cell at the spec's first seed (the seed every tuning trial uses)."""

    tune_id: str
    metric: str  # val_sa | val_ra
    base: Cell

    def label(self) -> str:
        b = self.base
        return f"{b.pretraining} {b.dataset} {b.regime} f={b.data_fraction:g}"

    def trial_cell(self, recipe: dict) -> Cell:
        """The dense cell of this group run with a candidate recipe, as a tuning trial (its own id, phase 'tune')."""
        rec = normalize_recipe(recipe)
        r = apply_recipe(self.base.regime_spec, rec)
        canon = {**self.base.canonical, "regime": {"name": self.base.regime, **_regime_identity(r)},
                 "tune_trial": {"tune_id": self.tune_id, "recipe": rec}}
        return replace(self.base, cell_id=cell_id(canon), canonical=canon, regime_spec=r,
                       phase="tune", tune_id=self.tune_id, recipe_id=recipe_id(rec))


def normalize_recipe(recipe: dict) -> dict:
    """A recipe as stored and hashed: epochs a whole number, the rest floats, keys in a fixed set."""
    from raydw.spec import TUNE_FIELDS

    bad = sorted(set(recipe) - set(TUNE_FIELDS))
    if bad:
        raise ValueError(f"unknown recipe fields {bad}; known: {list(TUNE_FIELDS)}")
    return {k: (int(v) if k == "epochs" else float(v)) for k, v in sorted(recipe.items())}


def recipe_id(recipe: dict) -> str:
    return hashlib.sha256(canonical_json(normalize_recipe(recipe)).encode()).hexdigest()[:16]


def apply_recipe(regime: RegimeSpec, recipe: dict) -> RegimeSpec:
    """The regime with a tuned recipe's values in place (lr, weight_decay, attack_step_size, epochs)."""
    rec = normalize_recipe(recipe)
    d = regime.model_dump()
    if "lr" in rec:
        d["optimizer"]["lr"] = rec["lr"]
    if "weight_decay" in rec:
        d["optimizer"]["weight_decay"] = rec["weight_decay"]
    if "attack_step_size" in rec:
        if d.get("attack") is None:
            raise ValueError("attack_step_size given for a regime without an attack (kind standard)")
        d["attack"]["step_size"] = rec["attack_step_size"]
    if "epochs" in rec:
        d["epochs"] = rec["epochs"]
    return RegimeSpec.model_validate(d)


def _regime_identity(r: RegimeSpec) -> dict:
    return r.model_dump(mode="json", exclude_defaults=True, exclude={"data_fractions"})


def _tune_id(spec: SweepSpec, group_canonical: dict, kind: str) -> str:
    """The tuning group's id: its untuned dense cell (first seed) and everything about the search that changes the
    chosen recipe (space, budget, sampler seed, metric); a new space or budget tunes again."""
    t = spec.tune
    ident = {"v": HASH_VERSION, "group": group_canonical, "space": t.space.model_dump(mode="json", exclude_none=True),
             "num_samples": t.num_samples, "seed": t.seed, "startup_trials": t.n_startup(), "metric": t.metric_for(kind),
             "sampler": "tpe"}
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]


def expand(spec: SweepSpec, recipes: dict[str, dict] | None = None) -> list[Cell]:
    """Every cell of the spec. With `tune:` on, `recipes` (tune_id -> recipe, from the store's `recipes` table) is
    applied to the cells of each tuned group; a tuned group without a recipe yet keeps its regime as written and
    its cells have `tune_id` set and `recipe_id` None (they wait for tuning)."""
    return _expand(spec, recipes or {})[0]


def tune_groups(spec: SweepSpec) -> list[TuneGroup]:
    """The groups `tune:` tunes, in grid order (empty when tuning is off)."""
    return list(_expand(spec, {})[1].values()) if spec.tune.enabled else []


def _expand(spec: SweepSpec, recipes: dict[str, dict]) -> tuple[list[Cell], dict[tuple, TuneGroup]]:
    cells: list[Cell] = []
    seen: set[str] = set()
    groups: dict[tuple, TuneGroup] = {}
    tuned = set(spec.tune.tuned_regimes(spec.regimes)) if spec.tune.enabled else set()
    eval_attack = spec.eval.attack.model_dump(mode="json", exclude_defaults=True)
    if spec.eval.schedule != "paper" or spec.eval.final_attack != "none":
        # The paper's schedule without a final attack keeps the original form, so its ids never moved.
        eval_attack = spec.eval.model_dump(mode="json", exclude_defaults=True)
    # One RegimeSpec object per (regime, dataset), and one per tuned group with its recipe applied: every cell of
    # that setting holds the same frozen object (47,000 cells share a handful).
    resolved = {(rname, ds): regime.for_dataset(ds) for ds in spec.data.datasets for rname, regime in spec.regimes.items()}
    tuned_regimes: dict[str, RegimeSpec] = {}
    for p, (ti, t) in ((p, ti_t) for p in spec.pretrainings for ti_t in enumerate(spec.tickets)):
        pid, arch = pretrained_id(p), pretraining_arch(p)

        def make(ticket: dict, dense: bool, rnd, target, ds: str, rname: str, r: RegimeSpec, frac: float, seed: int,
                 extra: dict | None = None, **tags) -> Cell:
            canon = {
                "v": HASH_VERSION,
                "pretraining": pretraining_identity(p),
                "ticket": ticket,
                "data": {"dataset": ds, "protocol": spec.data.protocol,
                         "normalization": spec.data.normalization,
                         "fraction": frac, "fraction_method": spec.data.fraction_method},
                "regime": {"name": rname, **_regime_identity(r)},
                "eval": eval_attack,
                "seed": seed,
                **(extra or {}),
            }
            return Cell(
                cell_id=cell_id(canon), pretraining=p.name, pretrained_id=pid, arch=arch,
                ticket_method="dense" if dense else t.method, ticket_round=0 if dense else rnd,
                target_sparsity=0.0 if dense else target, prunable=t.prunable,
                dataset=ds, protocol=spec.data.protocol, normalization=spec.data.normalization,
                regime=rname, regime_kind=r.kind, data_fraction=frac,
                fraction_method=spec.data.fraction_method, seed=seed, ticket_index=ti, canonical=canon,
                regime_spec=r, eval_spec=spec.eval, **tags,
            )

        for rnd, target in t.levels():
            dense = rnd == 0 or target == 0.0
            ticket = {"method": "dense"} if dense else {
                "method": t.method, "sparsity": round(target, 12), "prunable": t.prunable,
                **({"round": rnd, "rate": t.rate} if rnd is not None else {}),
                **registry.get(t.method).identity(t, p.name),  # what else determines the mask
            }
            for ds in spec.data.datasets:
                for rname in spec.regimes:
                    r = resolved[rname, ds]
                    for frac in r.data_fractions:
                        rr, extra, tags = r, None, {}
                        if rname in tuned:
                            gkey = (p.name, ds, rname, frac)
                            if gkey not in groups:  # the untuned dense cell at the first seed defines the group
                                base = make({"method": "dense"}, True, 0, 0.0, ds, rname, r, frac, spec.seed_values()[0])
                                groups[gkey] = TuneGroup(_tune_id(spec, base.canonical, r.kind), spec.tune.metric_for(r.kind), base)
                            g = groups[gkey]
                            tags = {"tune_id": g.tune_id}
                            if g.tune_id in recipes:
                                rec = normalize_recipe(recipes[g.tune_id])
                                if g.tune_id not in tuned_regimes:
                                    tuned_regimes[g.tune_id] = apply_recipe(r, rec)
                                rr = tuned_regimes[g.tune_id]
                                extra = {"tuned": {"tune_id": g.tune_id, "recipe_id": recipe_id(rec)}}
                                tags["recipe_id"] = recipe_id(rec)
                        for seed in spec.seed_values():
                            c = make(ticket, dense, rnd, target, ds, rname, rr, frac, seed, extra, **tags)
                            if c.cell_id in seen:
                                continue
                            seen.add(c.cell_id)
                            cells.append(c)
    return cells, groups
