"""From trials to findings: per-ticket matching flags, double-win verdicts and extreme double-win sparsity.

Reads the trials table (a store URI or a DataFrame); the exact definitions are in docs/findings.md. Torch-free.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

RULES = ("strict", "loose")
CHECKPOINTS = {"paper": ("sa", "ra"), "last": ("sa_last", "ra_last")}
METRICS = ("sa_std", "sa_adv", "ra_adv")  # (metric, regime kind) pairs the paper's double-win is made of
RULE_METRICS = {"strict": METRICS, "loose": ("sa_std", "ra_adv")}
# Means over seeds can differ from an equal value in the last bit; a tie must still count as matching.
_TIE_SLACK = 1e-12
_LEVEL_DIGITS = 9  # target sparsities like 1-0.8**k are compared after rounding, not bit for bit


class AnalysisError(ValueError):
    """A bad argument or a trials table that cannot be analysed; the message names the value and the choices."""


# -- input ------------------------------------------------------------------------------------------
def trials_frame(uri_or_df, cells=None) -> pd.DataFrame:
    """The trials table as a DataFrame, with a `level` key (rounded target sparsity) added.

    `cells` (cell ids, e.g. `spec_cells(uri, spec)`) keeps only those rows: one sweep's cells in a store that
    also holds other runs. Two rows of one setting and seed are refused (see _check_one_run_per_seed)."""
    if isinstance(uri_or_df, pd.DataFrame):
        df = uri_or_df.copy()
    else:
        from raydw.results import load

        df = load(str(uri_or_df), "trials")
    if cells is not None:
        df = df[df["cell_id"].isin(set(cells))].reset_index(drop=True)
    need = {"pretraining", "ticket_method", "dataset", "regime", "regime_kind", "data_fraction", "status"}
    if missing := sorted(need - set(df.columns)):
        raise AnalysisError(f"trials table lacks columns {missing}")
    for col in ("ticket_round", "target_sparsity", "sparsity", "error", "sa", "ra", "sa_last", "ra_last"):
        if col not in df:  # a hand-built frame may leave out what it does not use
            df[col] = np.nan
    target = df["target_sparsity"]
    target = target.where(target.notna(), df.get("sparsity"))
    df["level"] = target.astype(float).round(_LEVEL_DIGITS)
    df.loc[df["ticket_method"] == "dense", "level"] = 0.0
    df["data_fraction"] = df["data_fraction"].astype(float)
    _check_one_run_per_seed(df)
    return df


SETTING = ["pretraining", "dataset", "regime", "data_fraction", "ticket_method", "level"]
# What tells two runs of one setting apart when their config JSON is missing (hand-built frames).
_RUN_COLUMNS = ["sweep", "recipe_id", "pretrained_id", "mask_id", "protocol", "normalization", "fraction_method",
                "index_set_id", "phase"]


def _check_one_run_per_seed(df: pd.DataFrame) -> None:
    """Seeds are averaged per setting, so two rows of one setting with the same seed are two different experiments
    (an edited spec rerun into the same store, a tuned and an untuned grid, two IMP variants): averaging them would
    publish a mean of unlike runs as a mean over seeds. Refuse, naming the cells, what differs, and the way out."""
    if "seed" not in df.columns or "cell_id" not in df.columns or df.empty:
        return
    keys = [*SETTING, "seed"]
    dup = df[df.duplicated(keys, keep=False)]
    if dup.empty:
        return
    groups = dup.groupby(keys, dropna=False, sort=False)
    _, same = next(iter(groups))
    first, n_settings = same.iloc[0], groups.ngroups
    raise AnalysisError(
        f"the trials hold {len(same)} different runs of one setting and seed ({first['pretraining']}, {first['dataset']}, "
        f"{first['regime']}, fraction {first['data_fraction']:g}, {first['ticket_method']} at level {first['level']:g}, "
        f"seed {first['seed']}): cells {sorted(same['cell_id'])}, which differ in {_differences(same)}"
        + (f" ({n_settings} settings are affected)" if n_settings > 1 else "")
        + ". They are different experiments, not seeds, and would be averaged as seeds. Analyse one sweep's cells: "
        "`raydw verdicts URI --spec SPEC` / `raydw report URI --out DIR --spec SPEC`, or in Python "
        "`verdicts(uri, cells=spec_cells(uri, spec))`; or give each experiment its own storage.")


def _differences(rows: pd.DataFrame, limit: int = 6) -> str:
    """The config fields (dotted paths) whose values differ between rows; the run columns if there is no config."""
    import json

    def flat(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from flat(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], json.dumps(obj, sort_keys=True)

    fields = []
    if "config" in rows and rows["config"].notna().all():
        configs = [dict(flat(json.loads(c))) for c in rows["config"]]
        fields = sorted(k for k in set().union(*configs) if len({c.get(k) for c in configs}) > 1)
    if not fields:  # no config recorded, or the same one
        fields = [c for c in _RUN_COLUMNS if c in rows and rows[c].astype(str).nunique() > 1]
    if not fields:
        return "nothing recorded (same config, different cell ids)"
    return ", ".join(fields[:limit]) + (f" and {len(fields) - limit} more fields" if len(fields) > limit else "")


def spec_cells(uri: str, spec) -> set[str]:
    """The cell ids a sweep spec (a SweepSpec or a path) plans against this store: `cells=` for one sweep's findings."""
    from raydw.cells import expand
    from raydw.spec import load_spec
    from raydw.store import Store

    spec = load_spec(spec) if not hasattr(spec, "pretrainings") else spec
    recipes = Store(str(uri)).recipes() if spec.tune.enabled else {}  # tuned groups' ids, as raydw sweep plans them
    return {c.cell_id for c in expand(spec, recipes)}


def _check_args(rule: str, tol: float, checkpoint: str) -> None:
    if rule not in RULES:
        raise AnalysisError(f"rule {rule!r} is not one of {list(RULES)}")
    if checkpoint not in CHECKPOINTS:
        raise AnalysisError(f"checkpoint {checkpoint!r} is not one of {list(CHECKPOINTS)}")
    if not np.isfinite(tol) or tol < 0:
        raise AnalysisError(f"tol {tol!r} must be a finite number >= 0 (in dense standard deviations)")


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
    out = {"problem": problem, "n": len(done), "sparsity": done["sparsity"].mean() if "sparsity" in done else np.nan}
    for name, col in (("sa", sa_col), ("ra", ra_col)):
        vals = done[col].astype(float) if col in done else pd.Series(dtype=float)
        out[name] = vals.mean() if len(vals) and vals.notna().all() else np.nan
        out[f"{name}_sd"] = vals.std(ddof=1) if len(vals) >= 2 and vals.notna().all() else np.nan
    return out


def summaries(df: pd.DataFrame, sa_col: str, ra_col: str) -> dict[tuple, dict]:
    """{(pretraining, dataset, regime, data_fraction, ticket_method, level): summary} over seeds."""
    keys = ["pretraining", "dataset", "regime", "data_fraction", "ticket_method", "level"]
    return {k: _summary(g, sa_col, ra_col) for k, g in df.groupby(keys, dropna=False, sort=False)}


# -- one comparison ---------------------------------------------------------------------------------
def _where(regime: str | None, frac: float) -> str:
    return f"{regime or '(no regime)'} f={frac:g}"


def _compare(ticket: dict | None, dense: dict | None, metric: str, tol: float, where: str) -> tuple:
    """(ticket value, dense value, matching as True/False/NA, reason) for one metric of one setting."""
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


def _std_fraction(df: pd.DataFrame, std_regime: str | None, pretraining: str, dataset: str, frac: float) -> float:
    """The paper fine-tunes standard at 100 % only: use the same fraction if a standard cell has it, else 1.0."""
    have = df[(df["regime"] == std_regime) & (df["pretraining"] == pretraining) & (df["dataset"] == dataset)]
    same = have.loc[np.isclose(have["data_fraction"], frac), "data_fraction"]
    return float(same.iloc[0]) if len(same) else 1.0  # the stored value, so the summary lookup hits exactly


def _verdict_row(key: dict, df: pd.DataFrame, sums: dict, regimes: dict, tol: float) -> dict:
    p, ds, f, m, lvl = key["pretraining"], key["dataset"], key["data_fraction"], key["ticket_method"], key["level"]
    f_std = _std_fraction(df, regimes["standard"], p, ds, f)
    place = {"sa_std": (regimes["standard"], f_std), "sa_adv": (regimes["adversarial"], f), "ra_adv": (regimes["adversarial"], f)}
    row = {**key, "std_fraction": f_std}
    reasons, info = [], {}
    for metric, (regime, frac) in place.items():
        t = sums.get((p, ds, regime, frac, m, lvl))
        d = sums.get((p, ds, regime, frac, "dense", 0.0))
        tv, dv, ok, why = _compare(t, d, metric[:2], tol, _where(regime, frac))
        row.update({f"ticket_{metric}": tv, f"dense_{metric}": dv, f"matching_{metric}": ok})
        if why and why not in reasons:
            reasons.append(why)
        info = info or (t or {})
    row["sparsity"] = info.get("sparsity", np.nan)  # measured; NaN when no ticket cell of this level ran
    row["dense_seeds_std"] = (sums.get((p, ds, place["sa_std"][0], f_std, "dense", 0.0)) or {}).get("n", 0)
    row["dense_seeds_adv"] = (sums.get((p, ds, place["sa_adv"][0], f, "dense", 0.0)) or {}).get("n", 0)
    row["reason"] = "; ".join(reasons)
    return row


def _double_win(out: pd.DataFrame, rule: str) -> pd.Series:
    """Kleene AND: a known failing metric makes the verdict False; otherwise any NA makes it NA."""
    flags = [out[f"matching_{m}"].astype("boolean") for m in RULE_METRICS[rule]]
    result = flags[0]
    for f in flags[1:]:
        result = result & f
    return result


def verdicts(uri_or_df, rule: str = "strict", tol: float = 0.0, checkpoint: str = "paper",
             std_regime: str | None = None, adv_regime: str | None = None, cells=None) -> pd.DataFrame:
    """Per ticket level and data fraction: the three matching flags and the strict / loose double-win verdicts.

    `double_win` is the verdict under `rule`; `reason` says why a flag is NA (missing / failed cells, no std).
    `cells`: only these cell ids (`spec_cells(uri, spec)`: one sweep's cells).
    """
    _check_args(rule, tol, checkpoint)
    df = trials_frame(uri_or_df, cells)
    regimes = {"standard": pick_regime(df, "standard", std_regime), "adversarial": pick_regime(df, "adversarial", adv_regime)}
    df = df[df["regime"].isin([r for r in regimes.values() if r is not None])]
    sums = summaries(df, *CHECKPOINTS[checkpoint])
    rows = [_verdict_row(k, df, sums, regimes, tol) for k in _tickets(df, regimes).to_dict("records")]
    out = pd.DataFrame(rows, columns=_VERDICT_COLUMNS)
    for m in METRICS:
        out[f"matching_{m}"] = out[f"matching_{m}"].astype("boolean")
    out["double_win_strict"] = _double_win(out, "strict")
    out["double_win_loose"] = _double_win(out, "loose")
    out["double_win"] = out[f"double_win_{rule}"]
    out["ticket_round"] = out["ticket_round"].astype("Int64")
    out = out.rename(columns={"level": "target_sparsity"})
    out.attrs.update(rule=rule, tol=tol, checkpoint=checkpoint, regimes=regimes)
    _warn_std(out, tol)
    return out[_ORDER]


_VERDICT_COLUMNS = ["pretraining", "dataset", "data_fraction", "std_fraction", "ticket_method", "level", "ticket_round",
                    "sparsity", *[f"{w}_{m}" for m in METRICS for w in ("ticket", "dense", "matching")],
                    "dense_seeds_std", "dense_seeds_adv", "reason"]
_ORDER = ["pretraining", "dataset", "data_fraction", "ticket_method", "ticket_round", "target_sparsity", "sparsity",
          "matching_sa_std", "matching_sa_adv", "matching_ra_adv", "double_win_strict", "double_win_loose", "double_win",
          "std_fraction", *[f"{w}_{m}" for m in METRICS for w in ("ticket", "dense")],
          "dense_seeds_std", "dense_seeds_adv", "reason"]


def _warn_std(out: pd.DataFrame, tol: float) -> None:
    if tol > 0 and out["reason"].str.contains("needs the dense std").any():
        warnings.warn(f"tol={tol:g} needs >= 2 dense seeds per setting (the protocol asks for >= 3); "
                      "settings with one dense seed have NA verdicts, see the 'reason' column", stacklevel=3)


# -- extreme sparsity -------------------------------------------------------------------------------
def _fmt_level(r: dict) -> str:
    k = r["ticket_round"]
    return f"s={r['target_sparsity']:.3f}" + ("" if pd.isna(k) else f" (k={int(k)})")


def _state(v) -> str:
    """'yes' / 'no' / 'na' of a nullable verdict (records turn pandas NA into None, so test with isna)."""
    return "na" if pd.isna(v) else "yes" if bool(v) else "no"


def _extreme_row(key: tuple, levels: pd.DataFrame) -> dict:
    """Largest double-win level, and largest with every lower level double-win too, of one curve."""
    recs = levels.sort_values("target_sparsity").to_dict("records")
    states = [_state(r["double_win"]) for r in recs]
    wins = [r for r, st in zip(recs, states) if st == "yes"]
    contig, stop = None, "every tested level is double-win"
    for r, st in zip(recs, states):
        if st == "yes":
            contig = r
            continue
        stop = f"{_fmt_level(r)} " + ("not double-win" if st == "no" else f"missing: {r['reason']}")
        break
    best = wins[-1] if wins else None
    return {**dict(zip(["pretraining", "dataset", "data_fraction", "ticket_method"], key)),
            "max_sparsity_dw": best["target_sparsity"] if best else np.nan,
            "max_round_dw": best["ticket_round"] if best else pd.NA,
            "max_contig_sparsity_dw": contig["target_sparsity"] if contig else np.nan,
            "max_contig_round_dw": contig["ticket_round"] if contig else pd.NA,
            "levels_tested": states.count("yes") + states.count("no"),
            "levels_dw": len(wins),
            "levels_missing": ", ".join(_fmt_level(r) for r, st in zip(recs, states) if st == "na"),
            "contig_stops_at": stop}


def extreme(uri_or_df, rule: str = "strict", tol: float = 0.0, checkpoint: str = "paper", cells=None,
            **regimes) -> pd.DataFrame:
    """Per (pretraining, dataset, data_fraction, ticket_method): the extreme double-win sparsities (protocol section 7).

    Takes a trials table (URI or DataFrame, `cells` as in verdicts) or an already computed verdicts DataFrame.
    """
    v = uri_or_df if _is_verdicts(uri_or_df) else verdicts(uri_or_df, rule=rule, tol=tol, checkpoint=checkpoint,
                                                             cells=cells, **regimes)
    v = v.assign(double_win=v[f"double_win_{rule}"])
    keys = ["pretraining", "dataset", "data_fraction", "ticket_method"]
    rows = [_extreme_row(k, g) for k, g in v.groupby(keys, sort=False)]
    out = pd.DataFrame(rows, columns=[*keys, "max_sparsity_dw", "max_round_dw", "max_contig_sparsity_dw", "max_contig_round_dw",
                                      "levels_tested", "levels_dw", "levels_missing", "contig_stops_at"])
    for c in ("max_round_dw", "max_contig_round_dw"):
        out[c] = out[c].astype("Int64")
    out.attrs.update(rule=rule, tol=tol, checkpoint=checkpoint)
    return out


def _is_verdicts(obj) -> bool:
    return isinstance(obj, pd.DataFrame) and "double_win_strict" in obj.columns
