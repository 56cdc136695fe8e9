"""From trials to findings: per-ticket matching flags, double-win verdicts and extreme double-win sparsity.

Reads the trials table (a store URI or a DataFrame); the exact definitions are in docs/findings.md. Torch-free.
The public entry of the findings: one comparison's parts are in findings/pair.py, the intervals of Delta in
findings/intervals.py, the extreme sparsity's table in findings/sparsity.py (their public names are kept here).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from raydw.findings.frame import (AnalysisError, CHECKPOINTS, DEFAULT_MARGIN, METRICS, NO_BITS, READINGS, RULES, SEED_VARIANCE, SETTING, STATES, VERDICT_STATES, trials_frame)  # noqa: F401 - part of raydw.analysis
from raydw.findings.intervals import NO_SEED_PART, accuracies, covers_seeds, family_table, intervals, outcome_series  # noqa: F401 - part of raydw.analysis
from raydw.findings.pair import combine_states, compare, metric_state, summaries, where_text  # noqa: F401 - part of raydw.analysis
from raydw.findings.sparsity import KEYS, extreme_table
from raydw.findings.uncertainty import Bootstrap, mean_interval


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
        tv, dv, ok, why = compare(t, d, metric[:2], tol, where_text(regime, frac))
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
    cis, info, fams = intervals(df, wanted, checkpoint, boot, seed_variance)
    for i, row in enumerate(rows):
        for metric in METRICS:
            row.update({f"{c}_{metric}": x for c, x in info.get((i, metric), _NO_INFO).items()})
            ci = cis.get((i, metric))
            lo, hi = ci if isinstance(ci, tuple) else (np.nan, np.nan)
            st, why = metric_state(row[f"matching_{metric}"], rule, row[f"delta_{metric}"], ci, margin)
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
                     families=family_table(fams).to_dict("records"))  # records: attrs are compared by concat
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


def _warn_std(out: pd.DataFrame, tol: float) -> None:
    if tol > 0 and out["reason"].str.contains("needs the dense std").any():
        warnings.warn(f"tol={tol:g} needs >= 2 dense seeds per setting (the protocol asks for >= 3); "
                      "settings with one dense seed have NA verdicts, see the 'reason' column", stacklevel=3)


# -- extreme sparsity -------------------------------------------------------------------------------
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
    out = extreme_table(v)
    attrs = {**v.attrs, "reading": reading} if _is_verdicts(uri_or_df) else {**v.attrs}
    out.insert(len(KEYS), "rule", attrs.get("rule", rule))
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
    series, why = outcome_series(df, wanted, checkpoint)
    acc = accuracies(series, boot)
    out: dict[tuple, dict] = {}
    for (key, value), _, _, rows, _ in wanted:
        if (key, value) in why or not rows:
            continue
        lo, hi = mean_interval([acc[(r, value)] for r in rows], boot.level)
        out.setdefault(key, {})[f"{value}_lo"], out[key][f"{value}_hi"] = lo, hi
    cols = [*SETTING, "sa_lo", "sa_hi", "ra_lo", "ra_hi"]
    return pd.DataFrame([{**dict(zip(SETTING, k)), **v} for k, v in out.items()], columns=cols)
