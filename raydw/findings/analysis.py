"""From trials to findings: per-ticket matching flags, double-win verdicts and extreme double-win sparsity.

Reads the trials table (a store URI or a DataFrame); the exact definitions are in docs/findings.md. Torch-free.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from raydw import outcomes
from raydw.findings.frame import (AnalysisError, CHECKPOINTS, DEFAULT_MARGIN, METRICS, NO_BITS, READINGS, RULES, SEED_VARIANCE, SETTING, STATES, VERDICT_STATES, trials_frame)  # noqa: F401 - part of raydw.analysis
from raydw.findings.uncertainty import (Bootstrap, SeedVariance, delta_stats, interval, mean_interval, pool_seed_variance,
                               resampled_accuracy, seed_stats)


_TIE_SLACK = 1e-12  # a ticket equal to its dense baseline up to float noise matches under the strict rule


def verdict_settings(spec) -> dict:
    """The spec's `verdicts:` section as analysis.verdicts arguments (tol only for rule tol)."""
    v = spec.verdicts.model_dump()
    if v["rule"] != "tol":
        v["tol"] = 0.0
    return v


def _check_args(rule: str, tol: float, checkpoint: str, reading: str = "full", margin: float = DEFAULT_MARGIN) -> None:
    if rule == "loose":
        raise AnalysisError("'loose' names which metrics make a double-win now, not a rule: use reading='loose' "
                            "(--reading loose); rule is the comparison, one of " + str(list(RULES)))
    if rule not in RULES:
        raise AnalysisError(f"rule {rule!r} is not one of {list(RULES)}")
    if reading not in READINGS:
        raise AnalysisError(f"reading {reading!r} is not one of {list(READINGS)}")
    if checkpoint not in CHECKPOINTS:
        raise AnalysisError(f"checkpoint {checkpoint!r} is not one of {list(CHECKPOINTS)}")
    if not np.isfinite(tol) or tol < 0:
        raise AnalysisError(f"tol {tol!r} must be a finite number >= 0 (in dense standard deviations)")
    if not np.isfinite(margin) or not 0 < margin <= 100:
        raise AnalysisError(f"margin {margin!r} must be in (0, 100] accuracy points")


def pick_regime(df: pd.DataFrame, kind: str, name: str | None = None) -> str | None:
    """The one regime name of this kind in the table (or the one asked for); None if the kind is absent."""
    names = sorted(df.loc[df["regime_kind"] == kind, "regime"].dropna().unique())
    if name is not None:
        if name not in names:
            raise AnalysisError(f"{kind} regime {name!r} not in the trials; {kind} regimes present: {names}")
        return name
    if len(names) > 1:
        # Two adversarial regimes (say eps 4/255 and 8/255) are two studies; mixing them would be silent nonsense.
        raise AnalysisError(f"several {kind} regimes {names}: choose one (std_regime= / adv_regime=)")
    return names[0] if names else None


# -- per-setting summaries --------------------------------------------------------------------------
def _first_line(err) -> str:
    text = "" if err is None or (isinstance(err, float) and np.isnan(err)) else str(err).strip()
    return text.splitlines()[0] if text else "(no error recorded)"


def _summary(cells: pd.DataFrame, sa_col: str, ra_col: str) -> dict:
    """Seeds of one setting: mean/std/n of SA and RA over done cells, or why the setting has no value."""
    bad = cells[cells["status"] != "done"]
    problem = None
    if len(bad):
        # Any failed or stopped seed withholds the value: a mean over a different seed set is another estimate.
        row = bad.iloc[0]
        problem = f"cell {row['status']}: {_first_line(row.get('error'))}" if row["status"] in ("failed", "stopped") else f"cell {row['status']}"
    done = cells[cells["status"] == "done"]
    out = {"problem": problem, "n": len(done), "sparsity": done["sparsity"].mean() if "sparsity" in done else np.nan,
           "rows": done.index.tolist()}  # the done cells, one per seed: their per-example outcomes back the interval
    for name, col in (("sa", sa_col), ("ra", ra_col)):
        vals = done[col].astype(float) if col in done else pd.Series(dtype=float)
        out[name] = vals.mean() if len(vals) and vals.notna().all() else np.nan
        out[f"{name}_sd"] = vals.std(ddof=1) if len(vals) >= 2 and vals.notna().all() else np.nan
    return out


def summaries(df: pd.DataFrame, sa_col: str, ra_col: str) -> dict[tuple, dict]:
    """{(pretraining, dataset, regime, data_fraction, ticket_method, level): summary} over seeds."""
    return {k: _summary(g, sa_col, ra_col) for k, g in df.groupby(SETTING, dropna=False, sort=False)}


# -- one comparison ---------------------------------------------------------------------------------
def _where(regime: str | None, frac: float) -> str:
    return f"{regime or '(no regime)'} f={frac:g}"


def _compare(ticket: dict | None, dense: dict | None, metric: str, tol: float, where: str) -> tuple:
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


# -- per-example outcomes behind a value --------------------------------------------------------------
def _bits_columns(checkpoint: str, value: str) -> list[str]:
    """The trials columns holding the outcomes behind `sa` or `ra`, the first one present wins (RA without
    validation RA is read at the SA-best epoch, as the `ra` column is)."""
    outcome, ckpt = outcomes.VALUE_BITS[checkpoint][value]
    cols = [outcomes.column(outcome, ckpt)]
    if value == "ra" and ckpt == "ra_best":
        cols.append(outcomes.column(outcome, "sa_best"))
    return cols


def _cell_bits(df: pd.DataFrame, i: int, cols: list[str]) -> np.ndarray | str | None:
    """The cell's outcomes behind a value; None if it stored none; a reason if what it stored is inconsistent."""
    n = df.at[i, "test_n"] if "test_n" in df else None
    if n is None or pd.isna(n):
        return None
    for c in cols:
        b = df.at[i, c] if c in df else None
        if isinstance(b, (bytes, bytearray)):
            if len(b) != (int(n) + 7) // 8:  # unpacking would pad with zeros: wrong images counted as wrong answers
                return f"cell {df.at[i, 'cell_id']}: {len(b)} bytes of outcomes for test_n {int(n)}"
            return outcomes.unpack(b, int(n))
    return None


def _outcome_series(df: pd.DataFrame, wanted: list[tuple], checkpoint: str) -> tuple[dict, dict]:
    """(dataset -> {(row, value): bits}, key -> why no interval) for the comparisons in `wanted`. Cells whose test set
    differs in size from the rest of their dataset's (another test set, or a damaged row) are named, never resampled."""
    series: dict[str, dict] = {}
    why: dict = {}
    for key, ds, value, t_rows, d_rows in wanted:
        got = {r: _cell_bits(df, r, _bits_columns(checkpoint, value)) for r in (*t_rows, *d_rows)}
        bad = [b for b in got.values() if isinstance(b, str)]
        if bad or any(b is None for b in got.values()):
            why[key] = f"per-example data unusable ({bad[0]})" if bad else NO_BITS
            continue
        series.setdefault(ds, {}).update({(r, value): b for r, b in got.items()})
    for ds, bits in series.items():
        sizes = pd.Series({k: len(b) for k, b in bits.items()})
        common = sizes.mode().iloc[0]
        odd = sizes[sizes != common]
        if len(odd):
            (r, _), n = next(iter(odd.items()))
            msg = (f"per-example data unusable (cell {df.at[r, 'cell_id']} has {n} test outcomes, the other {ds} cells "
                   f"{common}: not the same test set)")
            odd_rows = {r for r, _ in odd.index}
            for key, kds, value, t_rows, d_rows in wanted:
                if kds == ds and key not in why and odd_rows & {*t_rows, *d_rows}:
                    why[key] = msg
            series[ds] = {k: b for k, b in bits.items() if len(b) == common}
    return series, why


def _accuracies(series: dict[str, dict], boot: Bootstrap) -> dict:
    """(row, value) -> (its test accuracy, its accuracies under the dataset's shared image resamples)."""
    acc: dict = {}
    for ds, bits in series.items():
        res = resampled_accuracy(bits, boot, ds)
        acc.update({k: (float(b.mean()), res[k]) for k, b in bits.items()})
    return acc


def _intervals(df: pd.DataFrame, wanted: list[tuple], checkpoint: str, boot: Bootstrap,
               seed_variance: str = "pooled") -> tuple[dict, dict, dict]:
    """wanted: (key, dataset, value, ticket rows, dense rows) -> ({key: (lo, hi)}, or {key: why not} where a cell lacks
    usable outcomes (rows written before they were stored: NO_BITS); {key: se, df and the seed part's source};
    {family: SeedVariance})."""
    series, result = _outcome_series(df, wanted, checkpoint)
    acc = _accuracies(series, boot)
    fams = _families(df, wanted, series, result) if seed_variance == "pooled" else {}
    info: dict = {}
    for key, ds, value, t_rows, d_rows in wanted:
        if key in result:
            continue
        fam = fams.get(_family(df, ds, value, t_rows))
        stats = delta_stats([acc[(r, value)] for r in t_rows], [acc[(r, value)] for r in d_rows], fam, fam)
        result[key] = interval(stats, boot.level)
        info[key] = {"se": stats[1], "df": stats[2], **_seed_source(fam, (len(t_rows), len(d_rows)), seed_variance == "pooled")}
    return result, info, fams


def _family(df: pd.DataFrame, ds: str, value: str, rows: list) -> tuple:
    """The family a setting's seed spread is pooled in: (dataset, regime, data fraction, sa / ra), every pre-training,
    ticket level and the dense model alike (docs/findings.md says why sparsity is not a covariate)."""
    r = rows[0]
    return ds, df.at[r, "regime"], float(df.at[r, "data_fraction"]), value


def _families(df: pd.DataFrame, wanted: list[tuple], series: dict, skip: dict) -> dict[tuple, SeedVariance]:
    """Every family's pooled seed variance, from each replicated setting (>= 2 seeds with outcomes) in `wanted`."""
    settings: dict = {}
    for key, ds, value, t_rows, d_rows in wanted:
        if key in skip:
            continue
        for rows in (t_rows, d_rows):
            if len(rows) >= 2:
                settings[(tuple(rows), value)] = (_family(df, ds, value, rows), ds)
    cells: dict = {}
    for (rows, value), (fam, ds) in settings.items():
        cells.setdefault(fam, []).append(seed_stats([series[ds][(r, value)] for r in rows]))
    return {fam: pool_seed_variance(c) for fam, c in cells.items()}


# How a seed_source starts where a side of Delta has no seed part (one seed, no family to stand in): such an interval
# covers the test images only (docs/findings.md measured 4.7-14.8 % false matches for a nominal 2.5 %).
NO_SEED_PART = ("none: 1 seed", "own seeds; none for the 1-seed side")


def covers_seeds(seed_source: str) -> bool:
    """Whether an interval with this seed_source carries seed variation on both sides of Delta."""
    return isinstance(seed_source, str) and bool(seed_source) and not seed_source.startswith(NO_SEED_PART)


def _seed_source(fam: SeedVariance | None, seeds: tuple[int, int], pooled: bool) -> dict:
    """The seed part's SD (accuracy units), its df and where it came from, for the verdicts' columns."""
    if fam is not None and fam.pooled and fam.df > 0:
        return {"seed_sd": fam.sd, "seed_df": fam.df, "seed_source": f"family of {fam.cells} replicated cells"}
    src = NO_SEED_PART[0] if max(seeds) < 2 else "own seeds" if min(seeds) >= 2 else NO_SEED_PART[1]
    if pooled and min(seeds) < 2:  # why the family could not stand in
        src += (f" (the family's spreads differ: Bartlett p={fam.p:.3g})" if fam is not None and fam.df > 0
                else " (nothing replicated in its family)")
    return {"seed_sd": np.nan, "seed_df": np.nan, "seed_source": src}


def _state(ok, rule: str, delta: float, ci, margin: float) -> tuple[str, str]:
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


# -- verdicts ---------------------------------------------------------------------------------------
def _tickets(df: pd.DataFrame, regimes: dict) -> pd.DataFrame:
    """One row per (pretraining, dataset, ticket method, level, verdict fraction) to decide."""
    tickets = df[df["ticket_method"] != "dense"]
    levels = tickets.groupby(["ticket_method", "level"], as_index=False)["ticket_round"].max()
    # Levels and fractions are shared by every pretraining and dataset of a sweep, so one seen anywhere but
    # absent for a pretraining is a missing cell, not one never asked for. Verdict fractions are the
    # adversarial regime's; standard fine-tuning is compared at 100 % data unless it ran at that fraction too.
    kind = "adversarial" if regimes["adversarial"] is not None else "standard"
    fracs = df.loc[df["regime"] == regimes[kind], ["dataset", "data_fraction"]].drop_duplicates()
    pairs = df[["pretraining", "dataset"]].drop_duplicates()
    out = pairs.merge(fracs, on="dataset").merge(levels, how="cross")
    return out.sort_values(["pretraining", "dataset", "ticket_method", "data_fraction", "level"],
                           ascending=[True, True, True, False, True], ignore_index=True)


def _std_fractions(df: pd.DataFrame, std_regime: str | None) -> dict[tuple, list[float]]:
    """(pretraining, dataset) -> the standard regime's stored fractions (once per table: one filter per row is quadratic)."""
    have = df[df["regime"] == std_regime]
    return {k: sorted(g["data_fraction"].unique()) for k, g in have.groupby(["pretraining", "dataset"])}


def _std_fraction(fracs: dict, pretraining: str, dataset: str, frac: float) -> float:
    """The paper fine-tunes standard at 100 % only: use the same fraction if a standard cell has it, else 1.0."""
    same = [f for f in fracs.get((pretraining, dataset), []) if np.isclose(f, frac)]
    return float(same[0]) if same else 1.0  # the stored value, so the summary lookup hits exactly


def _verdict_row(i: int, key: dict, std_fracs: dict, sums: dict, regimes: dict, tol: float, wanted: list) -> dict:
    p, ds, f, m, lvl = key["pretraining"], key["dataset"], key["data_fraction"], key["ticket_method"], key["level"]
    f_std = _std_fraction(std_fracs, p, ds, f)
    place = {"sa_std": (regimes["standard"], f_std), "sa_adv": (regimes["adversarial"], f), "ra_adv": (regimes["adversarial"], f)}
    row = {**key, "std_fraction": f_std}
    reasons, info, seeds = [], {}, []
    for metric, (regime, frac) in place.items():
        t = sums.get((p, ds, regime, frac, m, lvl))
        d = sums.get((p, ds, regime, frac, "dense", 0.0))
        tv, dv, ok, why = _compare(t, d, metric[:2], tol, _where(regime, frac))
        if regime is None:  # not "dense baseline missing: (no regime)": the sweep has no such regime at all
            why = f"no {'standard' if metric == 'sa_std' else 'adversarial'} regime in the trials (a double-win needs both)"
        row.update({f"ticket_{metric}": tv, f"dense_{metric}": dv, f"matching_{metric}": ok,
                    f"delta_{metric}": tv - dv if not (np.isnan(tv) or np.isnan(dv)) else np.nan})
        if not pd.isna(ok) and t is not None and t["rows"] and not t["problem"]:  # a stopped ticket's value is withheld
            wanted.append(((i, metric), ds, metric[:2], t["rows"], d["rows"]))
            seeds.append(min(t["n"], d["n"]))
        if why and why not in reasons:
            reasons.append(why)
        info = info or (t or {})
    row["sparsity"] = info.get("sparsity", np.nan)  # measured; NaN when no ticket cell of this level ran
    row["dense_seeds_std"] = (sums.get((p, ds, place["sa_std"][0], f_std, "dense", 0.0)) or {}).get("n", 0)
    row["dense_seeds_adv"] = (sums.get((p, ds, place["sa_adv"][0], f, "dense", 0.0)) or {}).get("n", 0)
    row["seeds"] = min(seeds) if seeds else 0
    row["reason"] = reasons
    return row


def verdicts(uri_or_df, rule: str = "strict", tol: float = 0.0, checkpoint: str = "paper",
             std_regime: str | None = None, adv_regime: str | None = None, cells=None, reading: str = "full",
             margin: float = DEFAULT_MARGIN, level: float = 0.95, resamples: int = 2000, seed: int = 0,
             seed_variance: str = "pooled") -> pd.DataFrame:
    """Per ticket level and data fraction: Delta = ticket - dense with its interval, the three metrics' states and
    the double-win verdict (docs/findings.md).

    rule: "strict" (ticket >= dense, the paper's), "tol" (>= dense - tol x dense std over seeds) or "equivalence"
    (match when the interval's lower bound is above -margin accuracy points, no match when its upper bound is
    below it, else inconclusive). reading: "full" (SA std, SA adv and RA adv must match) or "loose" (SA std and RA
    adv). The interval (level, resamples, seed): test images by a paired bootstrap, seeds by their spread
    (raydw.findings.uncertainty), shown under every rule; `reason` says why a state is missing. seed_variance: "pooled" (the
    spread of the metric's family, single-seed comparisons included, where the family's spreads are compatible) or
    "per_comparison" (each comparison's own seeds).
    `cells`: only these cell ids (`raydw.planning.plan.spec_cells(uri, spec)`: one sweep's cells).
    """
    if rule == "strict" and tol > 0:  # tol=K without a rule, as before rules had names: the tol rule
        rule = "tol"
    if rule == "tol" and tol == 0:
        tol = 1.0  # the rule's usual form: within one dense standard deviation
    _check_args(rule, tol, checkpoint, reading, margin)
    if seed_variance not in SEED_VARIANCE:
        raise AnalysisError(f"seed_variance {seed_variance!r} is not one of {list(SEED_VARIANCE)}")
    try:
        boot = Bootstrap(resamples, level, seed)
    except ValueError as e:
        raise AnalysisError(str(e)) from None
    df = trials_frame(uri_or_df, cells)
    regimes = {"standard": pick_regime(df, "standard", std_regime), "adversarial": pick_regime(df, "adversarial", adv_regime)}
    df = df[df["regime"].isin([r for r in regimes.values() if r is not None])]
    sums = summaries(df, *CHECKPOINTS[checkpoint])
    wanted: list = []
    cmp_tol = tol if rule == "tol" else 0.0
    std_fracs = _std_fractions(df, regimes["standard"])
    rows = [_verdict_row(i, k, std_fracs, sums, regimes, cmp_tol, wanted) for i, k in enumerate(_tickets(df, regimes).to_dict("records"))]
    cis, info, fams = _intervals(df, wanted, checkpoint, boot, seed_variance)
    for i, row in enumerate(rows):
        for metric in METRICS:
            row.update({f"{c}_{metric}": x for c, x in info.get((i, metric), _NO_INFO).items()})
            ci = cis.get((i, metric))
            lo, hi = ci if isinstance(ci, tuple) else (np.nan, np.nan)
            st, why = _state(row[f"matching_{metric}"], rule, row[f"delta_{metric}"], ci, margin)
            row.update({f"lo_{metric}": lo, f"hi_{metric}": hi, f"state_{metric}": st,
                        f"matching_{metric}": {"match": True, "no match": False}.get(st, pd.NA)})
            if why and why not in row["reason"]:
                row["reason"].append(why)
        row["reason"] = "; ".join(row["reason"])
    out = pd.DataFrame(rows, columns=_VERDICT_COLUMNS)
    for m in METRICS:
        out[f"matching_{m}"] = out[f"matching_{m}"].astype("boolean")
    for name, metrics in READINGS.items():
        out[f"verdict_{name}"] = [VERDICT_STATES[combine_states([r[f"state_{m}"] for m in metrics])] for r in rows]
        out[f"double_win_{name}"] = out[f"verdict_{name}"].map({"double-win": True, "not double-win": False}).astype("boolean")
    out["verdict"] = out[f"verdict_{reading}"]
    out["stopped"] = np.where(out["verdict"].isin(["double-win", "not double-win"]), "decided",
                              np.where(out["verdict"] == "inconclusive", "fixed seeds", ""))
    out["double_win"] = out[f"double_win_{reading}"]
    out["ticket_round"] = out["ticket_round"].astype("Int64")
    out = out.rename(columns={"level": "target_sparsity"})
    out.attrs.update(rule=rule, tol=tol, checkpoint=checkpoint, regimes=regimes, reading=reading, margin=margin,
                     level=level, resamples=resamples, seed=seed, seed_variance=seed_variance,
                     families=_family_table(fams).to_dict("records"))  # records: attrs are compared by concat
    _warn_std(out, tol)
    return out[_ORDER]


_PER_METRIC = ("ticket", "dense", "delta", "lo", "hi", "matching", "state")
_SEED_INFO = ("se", "df", "seed_sd", "seed_df", "seed_source")  # per metric: Delta's standard error, its df, the seed part
_NO_INFO = {"se": np.nan, "df": np.nan, "seed_sd": np.nan, "seed_df": np.nan, "seed_source": ""}
_VERDICT_COLUMNS = ["pretraining", "dataset", "data_fraction", "std_fraction", "ticket_method", "level", "ticket_round",
                    "sparsity", *[f"{w}_{m}" for m in METRICS for w in _PER_METRIC],
                    "dense_seeds_std", "dense_seeds_adv", "seeds", "reason", *[f"{w}_{m}" for m in METRICS for w in _SEED_INFO]]
_ORDER = ["pretraining", "dataset", "data_fraction", "ticket_method", "ticket_round", "target_sparsity", "sparsity",
          "verdict", "double_win", "verdict_full", "verdict_loose", "double_win_full", "double_win_loose",
          *[f"{w}_{m}" for m in METRICS for w in ("state", "matching", "delta", "lo", "hi")],
          "std_fraction", *[f"{w}_{m}" for m in METRICS for w in ("ticket", "dense")],
          "seeds", "dense_seeds_std", "dense_seeds_adv", "reason", "stopped", *[f"{w}_{m}" for m in METRICS for w in _SEED_INFO]]


def _family_table(fams: dict[tuple, SeedVariance]) -> pd.DataFrame:
    """One row per family: its pooled seed SD (accuracy units), df, replicated cells, Bartlett's p, pooled or not."""
    rows = [{"dataset": ds, "regime": reg, "data_fraction": f, "value": val, "seed_sd": fv.sd, "df": fv.df,
             "cells": fv.cells, "bartlett_p": fv.p, "pooled": fv.pooled} for (ds, reg, f, val), fv in fams.items()]
    return pd.DataFrame(rows, columns=["dataset", "regime", "data_fraction", "value", "seed_sd", "df", "cells",
                                       "bartlett_p", "pooled"])


def _warn_std(out: pd.DataFrame, tol: float) -> None:
    if tol > 0 and out["reason"].str.contains("needs the dense std").any():
        warnings.warn(f"tol={tol:g} needs >= 2 dense seeds per setting (the protocol asks for >= 3); "
                      "settings with one dense seed have NA verdicts, see the 'reason' column", stacklevel=3)


# -- extreme sparsity -------------------------------------------------------------------------------
def _fmt_level(r: dict) -> str:
    k = r["ticket_round"]
    return f"s={r['target_sparsity']:.3f}" + ("" if pd.isna(k) else f" (k={int(k)})")


def _extreme_row(key: tuple, levels: pd.DataFrame) -> dict:
    """Largest double-win level, and the fixed-sequence answer: levels in order of sparsity, stopping at the first
    that is not conclusively double-win (under equivalence this controls the family-wise error at the one-sided
    level without a correction: each level is tested only if every sparser-is-later level before it passed)."""
    recs = levels.sort_values("target_sparsity").to_dict("records")
    states = [r["verdict"] for r in recs]
    wins = [r for r, st in zip(recs, states) if st == "double-win"]
    contig, stop, behind = None, "every tested level is double-win", []
    for r, st in zip(recs, states):
        if st == "double-win":
            contig = r
            behind.append(r["seeds"])
            continue
        why = r["reason"] if st == "missing" else ""
        stop = f"{_fmt_level(r)} {st}" + (f": {why}" if why else "")
        break
    best = wins[-1] if wins else None
    return {**dict(zip(["pretraining", "dataset", "data_fraction", "ticket_method"], key)),
            "max_sparsity_dw": best["target_sparsity"] if best else np.nan,
            "max_round_dw": best["ticket_round"] if best else pd.NA,
            "max_contig_sparsity_dw": contig["target_sparsity"] if contig else np.nan,
            "max_contig_round_dw": contig["ticket_round"] if contig else pd.NA,
            "levels_tested": sum(st in ("double-win", "not double-win", "inconclusive") for st in states),
            "levels_dw": len(wins),
            "levels_inconclusive": states.count("inconclusive"),
            "levels_missing": ", ".join(_fmt_level(r) for r, st in zip(recs, states) if st == "missing"),
            "contig_stops_at": stop,
            "seeds": min(behind) if behind else 0}


def extreme(uri_or_df, rule: str = "strict", tol: float = 0.0, checkpoint: str = "paper", cells=None,
            reading: str = "full", **kwargs) -> pd.DataFrame:
    """Per (pretraining, dataset, data_fraction, ticket_method): the extreme double-win sparsities (protocol section 7).

    Takes a trials table (URI or DataFrame; `cells`, margin, level, ... as in verdicts) or an already computed
    verdicts DataFrame (its rule is kept; `reading` picks which verdict). `seeds`: the fewest seeds behind any
    level up to the fixed-sequence answer; `rule`: the rule the verdicts were decided by.
    """
    if _is_verdicts(uri_or_df):
        v = uri_or_df
        if reading not in READINGS:
            raise AnalysisError(f"reading {reading!r} is not one of {list(READINGS)}")
    else:
        v = verdicts(uri_or_df, rule=rule, tol=tol, checkpoint=checkpoint, cells=cells, reading=reading, **kwargs)
    v = v.assign(verdict=v[f"verdict_{reading}"])
    keys = ["pretraining", "dataset", "data_fraction", "ticket_method"]
    rows = [_extreme_row(k, g) for k, g in v.groupby(keys, sort=False)]
    out = pd.DataFrame(rows, columns=[*keys, "max_sparsity_dw", "max_round_dw", "max_contig_sparsity_dw", "max_contig_round_dw",
                                      "levels_tested", "levels_dw", "levels_inconclusive", "levels_missing",
                                      "contig_stops_at", "seeds"])
    for c in ("max_round_dw", "max_contig_round_dw"):
        out[c] = out[c].astype("Int64")
    attrs = {**v.attrs, "reading": reading} if _is_verdicts(uri_or_df) else {**v.attrs}
    out.insert(len(keys), "rule", attrs.get("rule", rule))
    out.attrs.update(attrs)
    return out


def _is_verdicts(obj) -> bool:
    return isinstance(obj, pd.DataFrame) and "verdict_full" in obj.columns


# -- intervals of single settings (the report's error bars) -------------------------------------------
def setting_intervals(df: pd.DataFrame, checkpoint: str = "paper", boot: Bootstrap | None = None) -> pd.DataFrame:
    """Per setting (SETTING columns) with usable per-example outcomes: sa_lo, sa_hi, ra_lo, ra_hi, the interval of its
    mean accuracy over seeds (the same two parts as the verdicts' intervals). `df`: a trials_frame."""
    boot = boot or Bootstrap()
    sums = summaries(df[df["status"] == "done"], *CHECKPOINTS[checkpoint])
    wanted = [((key, value), key[1], value, s["rows"], []) for key, s in sums.items() for value in ("sa", "ra")]
    series, why = _outcome_series(df, wanted, checkpoint)
    acc = _accuracies(series, boot)
    out: dict[tuple, dict] = {}
    for (key, value), _, _, rows, _ in wanted:
        if (key, value) in why or not rows:
            continue
        lo, hi = mean_interval([acc[(r, value)] for r in rows], boot.level)
        out.setdefault(key, {})[f"{value}_lo"], out[key][f"{value}_hi"] = lo, hi
    cols = [*SETTING, "sa_lo", "sa_hi", "ra_lo", "ra_hi"]
    return pd.DataFrame([{**dict(zip(SETTING, k)), **v} for k, v in out.items()], columns=cols)


