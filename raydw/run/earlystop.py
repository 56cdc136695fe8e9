"""Early stopping of a ticket cell: the on_epoch check against its dense baseline's stored epoch rows, and what a
stopped cell's trials row can still say."""
from __future__ import annotations

import math

from raydw.run.jobs import EarlyStop
from raydw.store import Store


class EarlyStopped(RuntimeError):
    """This ticket trails its dense baseline by more than the spec's margin: stop and record why."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


def stopped_fields(store: Store, cell_id: str, last_epoch: int) -> dict:
    """What a stopped cell's trials row can still say, from its stored epoch rows (this and earlier segments)."""
    rows = [store.get("epochs", f"{cell_id}.e{k:04d}") for k in range(last_epoch + 1)]
    rows = [r for r in rows if r is not None]
    out: dict = {"epochs": len(rows)}
    for m in ("sa", "ra"):
        vals = [(r[f"val_{m}"], r["epoch"]) for r in rows if r.get(f"val_{m}") is not None and not math.isnan(r[f"val_{m}"])]
        if vals:
            best = max(vals, key=lambda v: (v[0], -v[1]))  # the first epoch with the best value, as the loop picks
            out[f"val_{m}_best"], out[f"best_epoch_{m}"] = best
    return out


def early_stop_check(store: Store, plan: EarlyStop | None):
    """on_epoch hook: compare this epoch's validation with the dense cell's at the same epoch (from the store)."""
    if not plan:
        return lambda record: None

    def check(record: dict) -> None:
        if record["epoch"] < plan.grace:
            return
        dense = store.get("epochs", f"{plan.dense_cell_id}.e{record['epoch']:04d}")
        if dense is None:
            return
        for m in plan.metrics:
            mine, ref = record.get(f"val_{m}"), dense.get(f"val_{m}")
            if mine is None or ref is None or math.isnan(mine) or math.isnan(ref):
                continue
            if mine < ref - plan.margin:
                raise EarlyStopped(f"stopped at epoch {record['epoch']}: validation {m.upper()} {mine:.4f} trails the dense "
                                   f"model's {ref:.4f} by more than the margin {plan.margin}", record["epoch"])

    return check

