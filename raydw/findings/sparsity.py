"""The extreme double-win sparsity of each (pretraining, dataset, data fraction, ticket method), read from a
verdicts table (protocol section 7; docs/findings.md). Torch-free."""
from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["pretraining", "dataset", "data_fraction", "ticket_method"]


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
    return {**dict(zip(KEYS, key)),
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


def extreme_table(v: pd.DataFrame) -> pd.DataFrame:
    """One row per KEYS group of a verdicts table whose `verdict` column holds the reading asked for."""
    rows = [_extreme_row(k, g) for k, g in v.groupby(KEYS, sort=False)]
    out = pd.DataFrame(rows, columns=[*KEYS, "max_sparsity_dw", "max_round_dw", "max_contig_sparsity_dw", "max_contig_round_dw",
                                      "levels_tested", "levels_dw", "levels_inconclusive", "levels_missing",
                                      "contig_stops_at", "seeds"])
    for c in ("max_round_dw", "max_contig_round_dw"):
        out[c] = out[c].astype("Int64")
    return out
