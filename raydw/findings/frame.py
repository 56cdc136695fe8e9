"""The trials a finding reads, and its vocabulary: the rules, metrics and states verdicts use, and the checks that
leave impossible or mixed rows out with the reason (a cell's sa outside [0, 1] or disagreeing with its own bits)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from raydw.ids import LEVEL_DIGITS


RULES = ("strict", "tol", "equivalence")  # how a ticket's value is compared with its dense baseline's


# Where the seed part of an interval comes from: the family's pooled spread (docs/findings.md, "Seed variance pooled
# by family"), or each comparison's own seeds (the intervals before pooling; one seed: no seed part).
SEED_VARIANCE = ("pooled", "per_comparison")


CHECKPOINTS = {"paper": ("sa", "ra"), "last": ("sa_last", "ra_last")}


METRICS = ("sa_std", "sa_adv", "ra_adv")  # (metric, regime kind) pairs the paper's double-win is made of


READINGS = {"full": METRICS, "loose": ("sa_std", "ra_adv")}  # which metrics make a double-win


STATES = ("match", "no match", "inconclusive", "missing")


VERDICT_STATES = {"match": "double-win", "no match": "not double-win", "inconclusive": "inconclusive", "missing": "missing"}


DEFAULT_MARGIN = 1.0  # accuracy points (docs/findings.md, "Choosing the margin")


# Means over seeds can differ from an equal value in the last bit; a tie must still count as matching.


NO_BITS = "no per-example data"


class AnalysisError(ValueError):
    """A bad argument or a trials table that cannot be analysed; the message names the value and the choices."""


# -- input ------------------------------------------------------------------------------------------
def trials_frame(uri_or_df, cells=None) -> pd.DataFrame:
    """The trials table as a DataFrame, with a `level` key (rounded target sparsity) added.

    `cells` (cell ids, e.g. `raydw.planning.plan.spec_cells(uri, spec)`) keeps only those rows: one sweep's cells in a store that
    also holds other runs. Two rows of one setting and seed are refused (see _check_one_run_per_seed)."""
    if isinstance(uri_or_df, pd.DataFrame):
        df = uri_or_df.reset_index(drop=True)  # rows are looked up by position label: a concatenated frame repeats them
    else:
        from raydw.findings.results import load

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
    df["level"] = target.astype(float).round(LEVEL_DIGITS)  # raydw.ids: levels are compared after rounding
    df.loc[df["ticket_method"] == "dense", "level"] = 0.0
    df["data_fraction"] = df["data_fraction"].astype(float)
    if {"ra_at_ra_best", "ra_at_sa_best"} <= set(df.columns):  # rows written before `ra` fell back for standard cells
        old = df["ra"].isna() & df["ra_at_ra_best"].isna() & (df["status"] == "done")
        df.loc[old, "ra"] = df.loc[old, "ra_at_sa_best"]
    df = _without_impossible(df)
    _check_one_run_per_seed(df)
    return df


# Accuracies a done row states (fractions of the test set) and the stored bits each one was computed from.
_RATES = ("sa", "ra", "sa_last", "ra_last", "sa_at_sa_best", "ra_at_sa_best", "sa_at_ra_best", "ra_at_ra_best",
          "ra_final", "ra_final_at_sa_best", "ra_final_at_ra_best", "ra_final_last")


# Each rate -> the bits it was computed from, first stored one: the headline `sa` / `ra` (what every Delta is made of)
# included, `ra` and `ra_final` at the RA-best checkpoint, or at the SA-best one where the regime validates no RA.
_FROM_BITS = {"sa": ("bits_clean_sa_best",), "ra": ("bits_robust_ra_best", "bits_robust_sa_best"),
              "sa_at_sa_best": ("bits_clean_sa_best",), "ra_at_ra_best": ("bits_robust_ra_best",),
              "sa_last": ("bits_clean_last",), "ra_last": ("bits_robust_last",), "sa_at_ra_best": ("bits_clean_ra_best",),
              "ra_at_sa_best": ("bits_robust_sa_best",), "ra_final": ("bits_final_ra_best", "bits_final_sa_best"),
              "ra_final_at_sa_best": ("bits_final_sa_best",), "ra_final_at_ra_best": ("bits_final_ra_best",),
              "ra_final_last": ("bits_final_last",)}


def _impossible(df: pd.DataFrame) -> dict:
    """{index: why} of done rows whose numbers cannot be true: an accuracy outside [0, 1], or one that disagrees with
    the row's own per-example bits (the fraction of set bits among test_n images, to half an image)."""
    from raydw.outcomes import unpack

    done = df["status"].eq("done") if "status" in df else pd.Series(False, index=df.index)
    why: dict = {}
    for c in (c for c in _RATES if c in df):
        v = pd.to_numeric(df[c], errors="coerce")
        for i in df.index[done & v.notna() & ((v < 0) | (v > 1))]:
            why.setdefault(i, f"{c} = {float(v[i]):g} is not an accuracy in [0, 1]")
    if "test_n" not in df:
        return why
    n_all = pd.to_numeric(df["test_n"], errors="coerce")
    labels, ns, held = df.index, n_all.to_numpy(), {}  # columns as plain lists: a df.at per row and column was slow
    for c, sources in ((c, [b for b in s if b in df]) for c, s in _FROM_BITS.items() if c in df):
        values = df[c].to_numpy()
        for b in sources:
            if b not in held:  # each column once, though several columns read the same bits
                held[b] = df[b].tolist()
        for pos in np.flatnonzero((done & df[c].notna() & (n_all > 0)).to_numpy()):
            i = labels[pos]
            bits = next((b for b in sources if held[b][pos] is not None and not _missing(held[b][pos])), None)
            if i in why or bits is None:
                continue
            n, v = int(ns[pos]), float(values[pos])
            try:
                rate = float(unpack(held[bits][pos], n).mean())
            except (ValueError, TypeError):
                why[i] = f"{bits} holds fewer than test_n = {n} bits"
                continue
            if abs(rate - v) > 0.5 / n + 1e-9:
                why[i] = f"{c} = {v:g} but its per-example bits ({bits}) give {rate:g}"
    return why


def _missing(v) -> bool:
    """A null cell of a bits column (None or a float NaN), as opposed to stored bytes."""
    return isinstance(v, float) and v != v


def _without_impossible(df: pd.DataFrame) -> pd.DataFrame:
    """Done rows whose numbers cannot be true (a hand-edited or damaged row) are named on stderr and left out of
    every interval and verdict; `df.attrs["left_out"]` keeps {cell_id: reason}."""
    import sys

    why = _impossible(df)
    if not why:
        return df
    cells = df["cell_id"] if "cell_id" in df else pd.Series(df.index.astype(str), index=df.index)
    for i, w in why.items():
        print(f"warning: trials row {cells[i]} left out of the analysis: {w}", file=sys.stderr, flush=True)
    out = df.drop(index=list(why)).reset_index(drop=True)
    out.attrs["left_out"] = {str(cells[i]): w for i, w in why.items()}
    return out


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
        "`verdicts(uri, cells=raydw.planning.plan.spec_cells(uri, spec))`; or give each experiment its own storage.")


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
