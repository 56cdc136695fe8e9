"""The interval of Delta = ticket - dense: each cell's per-example outcomes, their accuracies under shared image
resamples, and the seed part (a family's pooled spread, or the comparison's own seeds). docs/findings.md defines
them; raydw.findings.uncertainty holds the statistics. Torch-free."""
from __future__ import annotations

import numpy as np
import pandas as pd

from raydw import outcomes
from raydw.findings.frame import NO_BITS
from raydw.findings.uncertainty import (Bootstrap, SeedVariance, delta_stats, interval, pool_seed_variance,
                                        resampled_accuracy, seed_stats)


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


def outcome_series(df: pd.DataFrame, wanted: list[tuple], checkpoint: str) -> tuple[dict, dict]:
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


def accuracies(series: dict[str, dict], boot: Bootstrap) -> dict:
    """(row, value) -> (its test accuracy, its accuracies under the dataset's shared image resamples)."""
    acc: dict = {}
    for ds, bits in series.items():
        res = resampled_accuracy(bits, boot, ds)
        acc.update({k: (float(b.mean()), res[k]) for k, b in bits.items()})
    return acc


def intervals(df: pd.DataFrame, wanted: list[tuple], checkpoint: str, boot: Bootstrap,
               seed_variance: str = "pooled") -> tuple[dict, dict, dict]:
    """wanted: (key, dataset, value, ticket rows, dense rows) -> ({key: (lo, hi)}, or {key: why not} where a cell lacks
    usable outcomes (rows written before they were stored: NO_BITS); {key: se, df and the seed part's source};
    {family: SeedVariance})."""
    series, result = outcome_series(df, wanted, checkpoint)
    acc = accuracies(series, boot)
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


def family_table(fams: dict[tuple, SeedVariance]) -> pd.DataFrame:
    """One row per family: its pooled seed SD (accuracy units), df, replicated cells, Bartlett's p, pooled or not."""
    rows = [{"dataset": ds, "regime": reg, "data_fraction": f, "value": val, "seed_sd": fv.sd, "df": fv.df,
             "cells": fv.cells, "bartlett_p": fv.p, "pooled": fv.pooled} for (ds, reg, f, val), fv in fams.items()]
    return pd.DataFrame(rows, columns=["dataset", "regime", "data_fraction", "value", "seed_sd", "df", "cells",
                                       "bartlett_p", "pooled"])
