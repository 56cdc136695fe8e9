"""Grid expansion: a SweepSpec becomes a list of Cells, each named by a content hash of its resolved config.

The hash covers what determines a cell's numbers (pre-training, ticket, dataset and protocol, the regime as
resolved for that dataset, data fraction, evaluation attack, seed) and nothing about where or how it runs
(storage, resources, sweep name), so two sweeps that ask for the same cell share it. Fields equal to their
defaults are left out of the hash (open_lth's rule), so adding a defaulted field keeps old ids valid.
Axes are not a blind product: the dense level is one cell per setting whatever the ticket method, and a
regime's data fractions belong to that regime. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from raydw.spec import PretrainingSpec, RegimeSpec, SweepSpec

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
    regime_spec: dict = field(repr=False, compare=False)  # the resolved RegimeSpec for this dataset

    def regime_obj(self) -> RegimeSpec:
        return RegimeSpec.model_validate(self.regime_spec)

    def label(self) -> str:
        lvl = "dense" if self.ticket_method == "dense" else f"{self.ticket_method} s={self.target_sparsity:.3f}"
        return f"{self.pretraining} {lvl} {self.dataset} {self.regime} f={self.data_fraction:g} seed={self.seed}"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @staticmethod
    def from_dict(d: dict) -> "Cell":
        return Cell(**d)


def cell_id(canonical: dict) -> str:
    return hashlib.sha256(canonical_json(canonical).encode()).hexdigest()[:16]


def _method_identity(t, pretraining: str) -> dict:
    """What else determines a mask: IMP's re-training recipe, a random mask's seed, an imported file."""
    if t.method == "imp":
        imp = t.imp.model_dump(mode="json", exclude_defaults=True, exclude={"per_pretraining", "root"}) if t.imp else {}
        return {"imp": {**imp, "regime": (t.imp.regime_for(pretraining) if t.imp else "standard")}}
    if t.method == "random":
        return {"seed": t.seed, **({"layerwise": True} if t.layerwise else {})}
    if t.method == "import":
        return {"file": t.files.get(pretraining)}
    return {}


def expand(spec: SweepSpec) -> list[Cell]:
    cells: list[Cell] = []
    seen: set[str] = set()
    eval_attack = spec.eval.attack.model_dump(mode="json", exclude_defaults=True)
    if spec.eval.schedule != "paper":  # the paper's schedule keeps the original form, so its ids never moved
        eval_attack = spec.eval.model_dump(mode="json", exclude_defaults=True)
    for p, (ti, t) in ((p, ti_t) for p in spec.pretrainings for ti_t in enumerate(spec.tickets)):
        pid, arch = pretrained_id(p), pretraining_arch(p)
        for rnd, target in t.levels():
            dense = rnd == 0 or target == 0.0
            ticket = {"method": "dense"} if dense else {
                "method": t.method, "sparsity": round(target, 12), "prunable": t.prunable,
                **({"round": rnd, "rate": t.rate} if rnd is not None else {}),
                **_method_identity(t, p.name),
            }
            for ds in spec.data.datasets:
                for rname, regime in spec.regimes.items():
                    r = regime.for_dataset(ds)
                    for frac in r.data_fractions:
                        for seed in spec.seeds:
                            canon = {
                                "v": HASH_VERSION,
                                "pretraining": pretraining_identity(p),
                                "ticket": ticket,
                                "data": {"dataset": ds, "protocol": spec.data.protocol,
                                         "normalization": spec.data.normalization,
                                         "fraction": frac, "fraction_method": spec.data.fraction_method},
                                "regime": {"name": rname, **r.model_dump(mode="json", exclude_defaults=True, exclude={"data_fractions"})},
                                "eval": eval_attack,
                                "seed": seed,
                            }
                            cid = cell_id(canon)
                            if cid in seen:
                                continue
                            seen.add(cid)
                            cells.append(Cell(
                                cell_id=cid, pretraining=p.name, pretrained_id=pid, arch=arch,
                                ticket_method="dense" if dense else t.method, ticket_round=0 if dense else rnd,
                                target_sparsity=0.0 if dense else target, prunable=t.prunable,
                                dataset=ds, protocol=spec.data.protocol, normalization=spec.data.normalization,
                                regime=rname, regime_kind=r.kind, data_fraction=frac,
                                fraction_method=spec.data.fraction_method, seed=seed, ticket_index=ti, canonical=canon,
                                regime_spec=r.model_dump(mode="json"),
                            ))
    return cells
