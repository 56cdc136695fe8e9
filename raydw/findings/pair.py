"""One (ticket, dense) comparison: the per-setting summaries over seeds, one metric's values and matching flag, its
state under the rule, and the double-win state of a reading's metrics (docs/findings.md). Torch-free."""
from __future__ import annotations

import numpy as np
import pandas as pd

from raydw.findings.frame import SETTING

_TIE_SLACK = 1e-12  # a ticket equal to its dense baseline up to float noise matches under the strict rule


def _first_line(err) -> str:
    text = "" if err is None or (isinstance(err, float) and np.isnan(err)) else str(err).strip()
    return text.splitlines()[0] if text else "(no error recorded)"


def _summary(cells: pd.DataFrame, sa_col: str, ra_col: str) -> dict:
    """Seeds of one setting: mean/std/n of SA and RA over done cells, or why the setting has no value."""
    # numpy on the group's columns: the pandas filters and reductions this was written with were most of a verdict's
    # time (the same arithmetic: mean = sum / n, std = sqrt of the ddof-1 variance, as pandas computes them).
    is_done = cells["status"].to_numpy() == "done"
    problem = None
    if not is_done.all():
        # Any failed or stopped seed withholds the value: a mean over a different seed set is another estimate.
        row = cells.iloc[int(np.flatnonzero(~is_done)[0])]
        problem = f"cell {row['status']}: {_first_line(row.get('error'))}" if row["status"] in ("failed", "stopped") else f"cell {row['status']}"
    n = int(is_done.sum())
    sparsity = cells["sparsity"].to_numpy(dtype=float, na_value=np.nan)[is_done] if "sparsity" in cells else None
    out = {"problem": problem, "n": n,
           "sparsity": np.nan if sparsity is None or not n else _nanmean(sparsity),
           "rows": cells.index[is_done].tolist()}  # the done cells, one per seed: their per-example outcomes back the interval
    for name, col in (("sa", sa_col), ("ra", ra_col)):
        vals = cells[col].to_numpy(dtype=float, na_value=np.nan)[is_done] if col in cells else np.empty(0)
        whole = len(vals) and not np.isnan(vals).any()
        out[name] = vals.mean() if whole else np.nan
        out[f"{name}_sd"] = vals.std(ddof=1) if whole and len(vals) >= 2 else np.nan
    return out


def _nanmean(v: np.ndarray) -> float:
    """pandas' mean: NaN skipped, NaN if nothing is left."""
    v = v[~np.isnan(v)]
    return v.mean() if len(v) else np.nan


def summaries(df: pd.DataFrame, sa_col: str, ra_col: str) -> dict[tuple, dict]:
    """{(pretraining, dataset, regime, data_fraction, ticket_method, level): summary} over seeds."""
    return {k: _summary(g, sa_col, ra_col) for k, g in df.groupby(SETTING, dropna=False, sort=False)}

# -- one comparison ---------------------------------------------------------------------------------
def where_text(regime: str | None, frac: float) -> str:
    return f"{regime or '(no regime)'} f={frac:g}"


def compare(ticket: dict | None, dense: dict | None, metric: str, tol: float, where: str) -> tuple:
    """(ticket value, dense value, matching as True/False/NA, reason) for one metric of one setting; tol > 0: within
    tol dense standard deviations."""
    if dense is None:
        return np.nan, np.nan, pd.NA, f"dense baseline missing: {where}"
    if dense["problem"]:
        return np.nan, np.nan, pd.NA, f"dense baseline {dense['problem']} ({where})"
    if ticket is None:
        return np.nan, dense[metric], pd.NA, f"ticket cell missing: {where}"
    if ticket["problem"] and ticket["problem"].startswith("cell stopped"):
        # Early stopping only stops a ticket that trails the dense model by more than its margin: a loss, said why.
        return np.nan, dense[metric], False, f"{ticket['problem']} ({where}): counted as not matching"
    if ticket["problem"]:
        return np.nan, dense[metric], pd.NA, f"{ticket['problem']} ({where})"
    t, d = ticket[metric], dense[metric]
    if np.isnan(t) or np.isnan(d):
        who = "ticket" if np.isnan(t) else "dense"
        return t, d, pd.NA, f"{metric.upper()} not recorded for the {who} cell ({where})"
    slack = 0.0
    if tol > 0:
        if dense["n"] < 2:
            return t, d, pd.NA, f"tol={tol:g} needs the dense std, but {where} has {dense['n']} dense seed"
        slack = tol * dense[f"{metric}_sd"]
    return t, d, bool(t >= d - slack - _TIE_SLACK), ""


def metric_state(ok, rule: str, delta: float, ci, margin: float) -> tuple[str, str]:
    """(state, extra reason) of one metric under the rule. Equivalence decides from the interval of Delta."""
    if rule != "equivalence" or ok is False and np.isnan(delta):  # strict / tol, or a stopped (lost) ticket
        return ("missing" if pd.isna(ok) else "match" if ok else "no match"), ""
    if pd.isna(ok):
        return "missing", ""
    if isinstance(ci, str):
        return "missing", ci
    lo, hi = ci
    m = margin / 100
    return ("match" if lo > -m else "no match" if hi < -m else "inconclusive"), ""


def combine_states(states: list[str]) -> str:
    """Double-win: every metric matches; not double-win: one does not; else missing (a cell lacks), else inconclusive."""
    if "no match" in states:
        return "no match"
    if all(s == "match" for s in states):
        return "match"
    return "missing" if "missing" in states else "inconclusive"
