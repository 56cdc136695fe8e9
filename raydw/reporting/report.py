"""The HTML report of a results store: SA/RA-vs-sparsity plots, data-efficiency plots, verdicts, extreme sparsities, status.

Writes index.html with PNG files beside it (relative links), so the folder can be copied or served as is. Headless.
"""
from __future__ import annotations

import html
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
# The object-oriented Figure renders with Agg without pyplot, so importing this module never switches
# the backend of a user's notebook or GUI session.
from matplotlib import rc_context
from matplotlib.figure import Figure

from raydw.findings import analysis
from raydw.reporting import status
from raydw.store.atomic import write_atomic
from raydw.findings.sequential import verdicts_of

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_STYLES = {"omp": "-", "imp": "-", "random": ":", "import": "-."}
_PREFERRED = ["ST", "FAT", "AT"]  # the paper's order: standard, fast adversarial, adversarial pre-training


# -- data for the plots -----------------------------------------------------------------------------
def _means(df: pd.DataFrame, sa_col: str, ra_col: str, checkpoint: str = "paper", boot=None) -> pd.DataFrame:
    """Done cells averaged over seeds, one row per (pretraining, method, level, dataset, regime, fraction), with the
    interval of each mean (sa_lo ... ra_hi) where the cells stored their per-example outcomes (NaN otherwise)."""
    done = df[df["status"] == "done"]
    keys = ["pretraining", "ticket_method", "level", "dataset", "regime", "regime_kind", "data_fraction"]
    agg = done.groupby(keys, dropna=False).agg(sparsity=("sparsity", "mean"), sa=(sa_col, "mean"), sa_sd=(sa_col, "std"),
                                               ra=(ra_col, "mean"), ra_sd=(ra_col, "std"), seeds=(sa_col, "size"))
    ci = analysis.setting_intervals(df, checkpoint, boot)
    return agg.reset_index().merge(ci, on=[k for k in keys if k != "regime_kind"], how="left")


def _colours(pretrainings) -> dict[str, str]:
    order = [p for p in _PREFERRED if p in set(pretrainings)] + sorted(set(pretrainings) - set(_PREFERRED))
    return {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(order)}


def _bars(g: pd.DataFrame, metric: str) -> np.ndarray:
    """Asymmetric error bars in points: the bootstrap interval where known, else +-1 std over seeds, else none."""
    v, lo, hi, sd = (100 * g[c].astype(float) for c in (metric, f"{metric}_lo", f"{metric}_hi", f"{metric}_sd"))
    below = (v - lo).where(lo.notna(), sd).fillna(0).clip(lower=0)
    above = (hi - v).where(hi.notna(), sd).fillna(0).clip(lower=0)
    return np.vstack([below.to_numpy(), above.to_numpy()])


def _panel(ax, m: pd.DataFrame, metric: str, colours: dict[str, str], title: str) -> None:
    """One metric against sparsity: a curve per (pretraining, ticket method) with interval bars, the dense value
    dashed inside its interval as a band."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("sparsity (%)", fontsize=8)
    ax.set_ylabel(f"{metric.upper()} (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if m.empty or m[metric].isna().all():
        ax.text(0.5, 0.5, f"{metric.upper()} not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    for p, colour in colours.items():
        mp = m[m["pretraining"] == p]
        dense = mp[mp["ticket_method"] == "dense"]
        if len(dense) and dense[metric].notna().any():
            d = dense.iloc[0]
            ax.axhline(100 * d[metric], color=colour, ls="--", lw=1, alpha=0.8)
            if pd.notna(d.get(f"{metric}_lo")):
                ax.axhspan(100 * d[f"{metric}_lo"], 100 * d[f"{metric}_hi"], color=colour, alpha=0.12, lw=0)
        for method, g in mp[mp["ticket_method"] != "dense"].groupby("ticket_method"):
            g = pd.concat([dense, g]).sort_values("level")
            ax.errorbar(100 * g["sparsity"], 100 * g[metric], yerr=_bars(g, metric), color=colour,
                        ls=_STYLES.get(method, "-"), marker="o", ms=3, lw=1.2, capsize=2, label=f"{p} {method}")
    if ax.get_legend_handles_labels()[0]:  # a panel of dense values only has no curve to name (matplotlib warns)
        ax.legend(fontsize=6, loc="best")


# Margins and gaps between panels in inches, for panels titled in 9 pt and labelled in 8 pt with 7 pt ticks: a fixed
# layout draws the figure once, where tight_layout drew it twice (a third of a report's ~1 s went to it).
_MARGINS_IN = dict(left=0.6, right=0.15, bottom=0.5, top=0.35, wspace=0.6, hspace=0.75)


def save_png(fig: Figure, path: Path) -> Path:
    rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    w, h = fig.get_size_inches()
    m = _MARGINS_IN
    ax_w = (w - m["left"] - m["right"] - (cols - 1) * m["wspace"]) / cols
    ax_h = (h - m["bottom"] - m["top"] - (rows - 1) * m["hspace"]) / rows
    fig.subplots_adjust(left=m["left"] / w, right=1 - m["right"] / w, bottom=m["bottom"] / h, top=1 - m["top"] / h,
                        wspace=m["wspace"] / ax_w, hspace=m["hspace"] / ax_h)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return write_atomic(path, buf.getvalue())


def plot_curves(m: pd.DataFrame, path: Path) -> Path:
    """(1) SA and RA against sparsity, one column per (dataset, regime) at that regime's largest data fraction."""
    # Standard fine-tuning first, as the paper's figures read: standard, then adversarial.
    order = m.assign(adv=m["regime_kind"] != "standard").sort_values(["dataset", "adv", "regime"])
    settings = order[["dataset", "regime"]].drop_duplicates().to_records(index=False)
    colours = _colours(m["pretraining"].unique())
    fig = Figure(figsize=(3.6 * max(1, len(settings)), 6.2))
    axes = fig.subplots(2, max(1, len(settings)), squeeze=False)
    for j, (ds, regime) in enumerate(settings):
        sub = m[(m["dataset"] == ds) & (m["regime"] == regime)]
        full = sub[sub["data_fraction"] == sub["data_fraction"].max()]
        for i, metric in enumerate(("sa", "ra")):
            _panel(axes[i][j], full, metric, colours, f"{ds} / {regime} (f={full['data_fraction'].max():g})")
    return save_png(fig, path)


def plot_fractions(m: pd.DataFrame, path: Path) -> Path:
    """(3) Data efficiency: the adversarial regime's fractions side by side, SA and RA per dataset."""
    adv = m[m["regime_kind"] == "adversarial"]
    fracs = sorted(adv["data_fraction"].unique(), reverse=True) or [1.0]
    rows = [(ds, metric) for ds in sorted(adv["dataset"].unique()) or ["(none)"] for metric in ("ra", "sa")]
    colours = _colours(m["pretraining"].unique())
    fig = Figure(figsize=(3.6 * len(fracs), 3.1 * len(rows)))
    axes = fig.subplots(len(rows), len(fracs), squeeze=False)
    for i, (ds, metric) in enumerate(rows):
        for j, f in enumerate(fracs):
            sub = adv[(adv["dataset"] == ds) & (adv["data_fraction"] == f)]
            regime = ", ".join(sorted(sub["regime"].unique())) or "adversarial"
            _panel(axes[i][j], sub, metric, colours, f"{ds} / {regime}, data fraction {f:g}")
    return save_png(fig, path)


# -- HTML -------------------------------------------------------------------------------------------
_STATE_CLASS = {"match": "yes", "double-win": "yes", "no match": "no", "not double-win": "no",
                "inconclusive": "inc", "missing": "na"}


def _cell(v, fmt: str | None) -> tuple[str, str]:
    """(text, css class) of one table cell: verdicts and states coloured, NA shown as NA, numbers formatted."""
    if v is pd.NA or v is None or (isinstance(v, float) and np.isnan(v)):
        return "NA", "na"
    if isinstance(v, (bool, np.bool_)):
        return ("yes", "yes") if v else ("no", "no")
    if isinstance(v, str) and v in _STATE_CLASS:
        return v, _STATE_CLASS[v]
    if fmt and isinstance(v, (int, float, np.number)):
        return format(v, fmt), "num"
    return str(v), ""


def html_table(df: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    if df.empty:
        return "<p class='empty'>(no rows)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for rec in df.astype(object).itertuples(index=False):
        tds = (_cell(v, formats.get(c)) for c, v in zip(df.columns, rec))
        body.append("<tr>" + "".join(f"<td class='{k}'>{html.escape(t)}</td>" for t, k in tds) + "</tr>")
    # Wide tables scroll inside their own box instead of stretching the page.
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


_PCT = ".1%"
_PTS = "+.1%"  # a difference, signed
_VERDICT_VIEW = {"pretraining": None, "dataset": None, "data_fraction": "g", "ticket_method": None, "ticket_round": None,
                 "sparsity": _PCT, "seeds": None, "verdict_full": None, "verdict_loose": None,
                 **{f"{w}_{m}": (_PTS if w in ("delta", "lo", "hi") else None)
                    for m in analysis.METRICS for w in ("state", "delta", "lo", "hi")},
                 "ticket_sa_std": _PCT, "dense_sa_std": _PCT, "ticket_sa_adv": _PCT, "dense_sa_adv": _PCT,
                 "ticket_ra_adv": _PCT, "dense_ra_adv": _PCT,
                 **{f"seed_{w}_{m}": (_PCT if w == "sd" else None) for m in analysis.METRICS for w in ("sd", "df")},
                 "stopped": None, "reason": None}
_EXTREME_VIEW = {"pretraining": None, "dataset": None, "data_fraction": "g", "ticket_method": None, "rule": None,
                 "seeds": None, "max_contig_sparsity_dw": _PCT, "max_contig_round_dw": None, "max_sparsity_dw": _PCT,
                 "max_round_dw": None, "levels_tested": None, "levels_dw": None, "levels_inconclusive": None,
                 "levels_missing": None, "contig_stops_at": None}
_LEGEND = ("<p class='note'><span class='key yes'>match / double-win</span> <span class='key no'>no match / not "
           "double-win</span> <span class='key inc'>inconclusive</span> <span class='key na'>missing</span> "
           "delta = ticket - dense; lo, hi: its interval (both in accuracy points).</p>")
_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 6px}
th{background:#eef}td.yes{background:#c8f0c8}td.no{background:#f6c8c8}td.na{background:#eee;color:#777}
td.inc{background:#f8e3a3}td.num{text-align:right}.key{padding:1px 6px;border:1px solid #ccc}
.key.yes{background:#c8f0c8}.key.no{background:#f6c8c8}.key.inc{background:#f8e3a3}.key.na{background:#eee}img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:8px}
.note{color:#555;font-size:13px}.wide{overflow-x:auto}"""


def _view(df: pd.DataFrame, cols: dict[str, str | None]) -> tuple[pd.DataFrame, dict[str, str]]:
    keep = [c for c in cols if c in df.columns]
    return df[keep], {c: f for c, f in cols.items() if f and c in df.columns}


def _status_html(uri: str) -> str:
    st = status.collect(uri)
    fails = pd.DataFrame(st.failures, columns=["cell_id", "cell", "error"])
    return f"<pre>{html.escape(status.render(st, uri))}</pre>" + \
        ("<h3>Failed or stopped cells</h3>" + html_table(fails) if len(fails) else "")


def _page(uri: str, parts: list[str], settings: str, refresh_s: int | None = None) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    # A live report (raydw.reporting.live) asks the browser to reload it: each load sees one whole page (atomic writes).
    refresh = f"<meta http-equiv='refresh' content='{int(refresh_s)}'>" if refresh_s else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{refresh}<title>raydw report: {html.escape(uri)}</title>"
            f"<style>{_CSS}</style></head><body><h1>raydw report</h1>"
            f"<p class='note'>store <code>{html.escape(uri)}</code>; {html.escape(settings)}; generated {when}. "
            "Definitions: docs/findings.md.</p>" + "".join(parts) + "</body></html>")


def _verdict_sections(df: pd.DataFrame, v: pd.DataFrame | None) -> list[str]:
    if v is None:
        return ["<h2>Extreme double-win sparsity</h2><p>(no ticket cells yet)</p>", "<h2>Verdicts</h2><p>(no ticket cells yet)</p>"]
    a = v.attrs
    rule = a["rule"] + (f", margin {a['margin']:g} points" if a["rule"] == "equivalence" else "") + \
        (f", tol {a['tol']:g} dense std" if a["rule"] == "tol" else "")
    ext = [html_table(*_view(analysis.extreme(v, reading=r), _EXTREME_VIEW)) for r in analysis.READINGS]
    return [f"<h2>(2) Extreme double-win sparsity</h2><p class='note'>rule {html.escape(rule)}. contiguous = the "
            "fixed-sequence answer: levels tested in order of sparsity, stopping at the first that is not double-win "
            "(contig_stops_at says which and why); max = largest double-win level anywhere (not error-controlled under "
            "equivalence); seeds = the fewest seeds behind the contiguous answer.</p>"
            f"<h3>full (SA std, SA adv, RA adv)</h3>{ext[0]}<h3>loose (SA std, RA adv)</h3>{ext[1]}",
            f"<h2>(4) Verdicts per ticket</h2><p class='note'>rule {html.escape(rule)}; intervals at "
            f"{100 * a['level']:.4g} %: test images by a paired bootstrap ({a['resamples']} resamples, seed {a['seed']}), seeds by "
            "their spread (t interval). "
            "SA std is compared at the standard regime's fraction (1.0 unless a standard cell at the same fraction "
            "exists); missing states say why in 'reason'." + _design_note(a) + "</p>" + _LEGEND
            + html_table(*_view(v, _VERDICT_VIEW)) + _families_html(a.get("families"))]


def _design_note(a: dict) -> str:
    """Adaptive seeds (raydw.findings.sequential.replay): how the error is split and what 'stopped' says."""
    if not a.get("looks"):
        return ""
    d = a["design"]
    return (f" Adaptive seeds (start {d.start}, dense replicate {d.replicate}, max {d.max}): the error is split over "
            f"{a['looks']} looks (Bonferroni), so each look's interval is at the level above; each metric's state is "
            "frozen at the look that decided it; 'stopped' says why a level got no further seed (decided at look r, "
            "at max, or open: the next seed it asks for); 'seeds' = the ticket seeds behind it.")


def _families_html(fams: list[dict] | None) -> str:
    """The pooled seed variance of every family: the seed part of every interval of that family."""
    if not fams:
        return ""
    f = pd.DataFrame(fams)
    f = f.assign(pooled=f["pooled"].map({True: "pooled", False: "NOT pooled (own seeds)"}))
    return ("<h3>Seed variance by family</h3><p class='note'>seed SD pooled over the family's replicated cells, df = sum "
            "of (seeds - 1); Bartlett's p of equal spreads: pooled unless p &lt; 0.05 (docs/findings.md).</p>"
            + html_table(f, {"seed_sd": ".2%", "bartlett_p": ".3g"}))


def write_report(uri: str, out_dir, checkpoint: str = "paper", cells=None, top: list[str] = (), refresh_s: int | None = None,
                 design=None, verdicts: pd.DataFrame | None = None, **verdict_args) -> Path:
    """Write out_dir/index.html and its PNGs for the store at `uri`; returns the path of index.html. Every file is
    replaced atomically (raydw.store.atomic), the PNGs before the page that references them.

    `cells`: plots and verdicts of only these cell ids (one sweep's cells; `raydw.planning.plan.spec_cells`).
    `top`: HTML sections put first (the live report's progress, raydw.reporting.live); `refresh_s`: the page reloads itself.
    `verdict_args`: rule, tol, margin, level, resamples, seed as for analysis.verdicts (the bars use level,
    resamples and seed too). `design`: the spec's adaptive seed design (raydw.findings.sequential.Design): the verdicts are then
    the sweep's own, each frozen at the look that decided it. `verdicts`: those already computed from the same cells
    and arguments (the sweep's summary has them), not computed again."""
    from raydw.findings.uncertainty import Bootstrap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = analysis.trials_frame(uri, cells)
    parts = list(top)
    v = None
    if not df.empty and (df["ticket_method"] != "dense").any():
        v = verdicts if verdicts is not None else verdicts_of(df, {"checkpoint": checkpoint, **verdict_args}, design)
    if df.empty:
        parts.append("<p>The store has no trials yet.</p>")
    else:
        boot = Bootstrap(verdict_args.get("resamples", 2000), verdict_args.get("level", 0.95), verdict_args.get("seed", 0))
        m = _means(df, *analysis.CHECKPOINTS[checkpoint], checkpoint, boot)
        # Stored names are text, not markup: with mathtext on, a name holding `$...$` is parsed as TeX (and fails).
        with rc_context({"text.parse_math": False}):
            plot_curves(m, out / "sa_ra_vs_sparsity.png")
            plot_fractions(m, out / "data_efficiency.png")
        sections = _verdict_sections(df, v)
        parts += [f"<h2>(1) SA and RA against sparsity</h2><p class='note'>Mean over done seeds; bars: its "
                  f"{100 * boot.level:g} % interval (test images by a paired bootstrap, seeds by their spread; +-1 std over seeds where the "
                  "cells stored no per-example outcomes); dashed: the dense model of the same colour's pre-training, "
                  "its band the interval.</p><img src='sa_ra_vs_sparsity.png' alt='SA and RA vs sparsity'>",
                  sections[0],
                  "<h2>(3) Data efficiency</h2><p class='note'>Adversarial fine-tuning at each data fraction.</p>"
                  "<img src='data_efficiency.png' alt='data efficiency'>",
                  sections[1]]
    parts.append("<h2>(5) Sweep status</h2>" + _status_html(uri))
    index = out / "index.html"
    scope = "" if cells is None else f", the {len(df)} stored cells of one sweep"
    rule = (v.attrs["rule"] if v is not None else verdict_args.get("rule", "strict"))
    page = _page(str(uri), parts, f"checkpoint={checkpoint}, rule={rule}{scope}", refresh_s)
    return write_atomic(index, page.encode("utf-8"))
