"""What a tracker run of one cell says: its name, tags, parameters, group, and which row fields are its metrics.

Shared by the three trackers so that MLflow, W&B and TensorBoard show the same names for the same things.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from raydw.trackers.adapter import Tracked

# Per-epoch metrics: the epochs table's numeric columns (docs/results-schema.md), logged at step = epoch.
EPOCH_METRICS = ("lr", "train_loss", "train_acc", "val_sa", "val_ra", "epoch_s", "eval_s")
# Final metrics from the cell's trials row: tracker name -> column. test_sa / test_ra are the cell's SA and RA
# (SA at the SA-best epoch, RA at the RA-best one: the paper's early stopping).
FINAL_METRICS = {"test_sa": "sa", "test_ra": "ra", "test_ra_final": "ra_final", "test_sa_last": "sa_last",
                 "test_ra_last": "ra_last", "val_sa_best": "val_sa_best", "val_ra_best": "val_ra_best",
                 "best_epoch_sa": "best_epoch_sa", "best_epoch_ra": "best_epoch_ra", "wall_s": "wall_s"}


@dataclass(frozen=True)
class RunInfo:
    cell_id: str
    name: str  # the cell's label, as raydw's progress lines print it
    sweep: str
    phase: str
    tune_id: str | None
    group: str | None  # tuning trials: "tune <group label>"; None for the sweep's cells
    tags: dict[str, str]
    params: dict[str, str]


def run_info(t: Tracked) -> RunInfo:
    c = t.cell
    tags = {"cell_id": c.cell_id, "sweep": t.sweep, "pretraining": c.pretraining, "ticket_method": c.ticket_method,
            "sparsity": f"{c.target_sparsity:.6g}", "dataset": c.dataset, "regime": c.regime,
            "data_fraction": f"{c.data_fraction:g}", "seed": str(c.seed), "phase": c.phase}
    if c.tune_id:
        tags["tune_id"] = c.tune_id
    if c.recipe_id:
        tags["recipe_id"] = c.recipe_id
    return RunInfo(c.cell_id, c.label(), t.sweep, t.phase, t.tune_id, f"tune {t.group}" if t.group else None, tags,
                   flatten(resolved_config(t)))


def resolved_config(t: Tracked) -> dict:
    """The cell's config as it runs: its canonical identity (the hashed part) with the regime fully resolved for its
    dataset (every field, defaults included), so a tracker's parameter table can be compared across cells."""
    c = t.cell
    out = {k: v for k, v in c.canonical.items() if k != "v"}
    out["regime"] = {"name": c.regime, **{k: v for k, v in c.regime_spec.model_dump(mode="json").items() if k != "per_dataset"}}
    out["arch"] = c.arch
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys; lists and scalars as JSON text (what MLflow's and TensorBoard's params take)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        elif v is not None:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def numbers(row: dict, names) -> dict[str, float]:
    """The finite numbers among `names` of a row (None and NaN are not points: validation may be skipped)."""
    out = {}
    for n in names:
        v = row.get(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[n] = float(v)
    return out


def final_metrics(row: dict) -> dict[str, float]:
    vals = numbers(row, FINAL_METRICS.values())
    return {k: vals[col] for k, col in FINAL_METRICS.items() if col in vals}
