"""The verdict table as text (`raydw verdicts`, the end of a sweep): Delta with its interval and state per metric,
the seeds behind it and the family variances used."""
from __future__ import annotations

import pandas as pd

from raydw.findings.analysis import METRICS, extreme


# -- the printed table ------------------------------------------------------------------------------
_SHORT = {"match": "match", "no match": "NO", "inconclusive": "incon.", "missing": "n/a"}


def _metric_text(r: dict, m: str) -> str:
    """Delta in accuracy points with its interval and the state, e.g. '-0.8 [-2.9,+1.1] incon.'."""
    d, lo, hi, st = r[f"delta_{m}"], r[f"lo_{m}"], r[f"hi_{m}"], r[f"state_{m}"]
    if pd.isna(d):
        return _SHORT[st]
    ci = "[no bits]" if pd.isna(lo) else f"[{100 * lo:+.1f},{100 * hi:+.1f}]"
    return f"{100 * d:+.1f} {ci} {_SHORT[st]}"


def _seed_text(r: dict, m: str) -> str:
    """The seed SD behind one metric's interval in points with its df ('1.2/14'); '-' where none was pooled."""
    sd, df = r.get(f"seed_sd_{m}"), r.get(f"seed_df_{m}")
    return "-" if sd is None or pd.isna(sd) else f"{100 * sd:.1f}/{int(df)}"


def _families_text(fams: list[dict] | None) -> list[str]:
    """The pooled seed variance of every family, and whether its spreads were compatible enough to pool."""
    if not fams:
        return []
    lines = ["\npooled seed variance by family (seed SD in points, its df = sum of seeds - 1 over its replicated cells; "
             "Bartlett's p of equal spreads, pooled unless p < 0.05):"]
    for f in fams:
        p = "-" if pd.isna(f["bartlett_p"]) else f"{f['bartlett_p']:.3g}"
        lines.append(f"  {f['dataset']} {f['regime']} f={f['data_fraction']:g} {f['value'].upper()}: SD {100 * f['seed_sd']:.2f}, "
                     f"df {f['df']}, {f['cells']} cells, p {p}: " + ("pooled" if f["pooled"] else "NOT pooled (own seeds)"))
    return lines


def format_verdicts(v: pd.DataFrame) -> str:
    """The verdict table as text: per ticket level, Delta = ticket - dense in points with its interval and state per
    metric, and the verdict; then the extreme sparsities. What `raydw verdicts` and the end of a sweep print."""
    a = v.attrs
    head = (f"verdicts: rule {a.get('rule')}" + (f" (tol {a.get('tol'):g} dense std)" if a.get("rule") == "tol" else "")
            + (f", margin {a.get('margin'):g} points" if a.get("rule") == "equivalence" else "")
            + f", reading {a.get('reading')}, checkpoint {a.get('checkpoint')}; Delta = ticket - dense in accuracy points, "
            f"[{100 * a.get('level', 0.95):.4g} % interval: test images by a paired bootstrap ({a.get('resamples')} resamples), "
            + ("seeds by their family's pooled spread]" if a.get("seed_variance", "pooled") == "pooled"
               else "seeds by each comparison's own spread]"))
    if a.get("looks"):  # an adaptive sweep's table (raydw.findings.sequential.replay)
        head += (f"; adaptive seeds: the error split over {a['looks']} looks (Bonferroni), each state frozen at the look "
                 "that decided it")
    if not len(v):
        return head + "\n(no ticket cells)"
    rows = []
    for r in v.to_dict("records"):
        k = r["ticket_round"]
        rows.append({"pretraining": r["pretraining"], "dataset": r["dataset"], "f": f"{r['data_fraction']:g}",
                     "ticket": f"{r['ticket_method']} " + (f"k={int(k)} " if not pd.isna(k) else "") + f"s={r['target_sparsity']:.3f}",
                     "seeds": r["seeds"], "SA std": _metric_text(r, "sa_std"), "SA adv": _metric_text(r, "sa_adv"),
                     "RA adv": _metric_text(r, "ra_adv"), "verdict": r["verdict"],
                     "seed SD (df)": " ".join(_seed_text(r, m) for m in METRICS), "stopped": r["stopped"]})
    table = pd.DataFrame(rows).to_string(index=False)
    why = [f"  {r['pretraining']} {r['dataset']} f={r['data_fraction']:g} {r['ticket_method']} s={r['target_sparsity']:.3f}: "
           f"{r['reason']}" for r in v.to_dict("records") if r["reason"]]
    e = extreme(v, reading=a.get("reading", "full"))
    ext = e[["pretraining", "dataset", "data_fraction", "ticket_method", "max_contig_sparsity_dw", "max_sparsity_dw",
             "levels_dw", "levels_tested", "seeds", "contig_stops_at"]]
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 90,
                           "display.float_format", "{:.3f}".format):
        ext_text = ext.to_string(index=False)
    return "\n".join([head, table, *(["why n/a:", *why] if why else []), *_families_text(a.get("families")),
                      f"\nextreme double-win sparsity (rule {a.get('rule')}; fixed-sequence: levels in order, stopping at "
                      "the first not double-win; seeds = the fewest behind it):", ext_text])
