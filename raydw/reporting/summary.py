"""The end of a sweep: what it did, its table and verdicts, its report, and how to load its results.

Outside run/ (Ray-free): it reads only the store.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from raydw.findings import analysis
from raydw.cells import Cell
from raydw.planning.plan import Plan
from raydw.spec import SweepSpec
from raydw.reporting.report import write_report
from raydw.findings.results import load
from raydw.findings.sequential import Design, spec_verdicts
from raydw.findings.text import format_verdicts
from raydw.store import Store


@dataclass
class Summary:
    total: int
    done: int
    failed: int
    ran: int
    storage: str
    wall_s: float
    stopped: int = 0  # early stopping, by design (spec.early_stop)
    skipped: int = 0  # not needed by the extreme search or (adaptive seeds) by decided verdicts, by design
    left: int = 0  # cells the next `raydw sweep` would run (failed, missing, stopped while early stopping is off)
    waiting: int = 0  # cells of a tuned group without a recipe

    @property
    def complete(self) -> bool:
        """Every cell has its final state (the plan's): done, stopped as the spec asked, or skipped by the search."""
        return self.left == 0 and self.waiting == 0


def end_of_sweep(plan: Plan, store: Store, ran: int, t0: float, out, skipped: set[str] = frozenset()) -> Summary:
    """The sweep's last lines, from the plan of the store as the sweep left it: counts, the table of test SA / RA,
    the verdicts, the report and how to load it. `skipped`: cells the extreme search did not need; with adaptive
    seeds the plan's `not_needed` cells (their verdicts decided or at the maximum) are final too."""
    spec, cells = plan.spec, plan.cells
    n = plan.counts()
    left = sum(1 for c in plan.todo if c.cell_id not in skipped)
    by_seeds = plan.not_needed - set(skipped)
    s = Summary(total=len(cells), done=n["done"], failed=n["failed"], ran=ran, storage=store.uri, wall_s=time.time() - t0,
                stopped=n["stopped"], skipped=len(skipped) + len(by_seeds), left=left, waiting=n["waiting"])
    stopped_final = "stopped" in plan.final
    out(f"\n{s.done}/{len(cells)} cells done, {s.failed} failed"
        + (f", {s.stopped} stopped early" + ("" if stopped_final else " (early stopping is off now: they run again)")
           if s.stopped else "")
        + (f", {len(skipped)} not needed by the extreme search" if skipped else "")
        + (f", {len(by_seeds)} not needed (their verdicts decided or at the seed maximum)" if plan.seeds is not None else "")
        + f", {n['missing'] + n['waiting'] - s.skipped} missing"
        + (f" ({s.waiting} without a tuned recipe)" if s.waiting else "") + f" ({s.wall_s:.0f} s)")
    ids = {c.cell_id for c in cells} - plan.waiting  # cells waiting for a tuned recipe count as missing
    if spec.tune.enabled:
        out(_recipes_text(store, cells))
    if plan.seeds is not None:
        out(plan.seeds.describe())
    if s.done:
        out(_table(store, ids))
        text, v = _verdict_text(spec, store, ids)
        out(text)
        if not store.local:  # an object store: write the report where the user reads it
            out(f"report: raydw report {store.uri} --out report/")
        else:
            try:  # the report is a convenience here: a plotting problem must not turn a finished sweep into an error
                a = spec.adaptive_seeds()
                out(f"report: {write_report(store.uri, store.path('report'), cells=ids, design=Design.of(a) if a else None, verdicts=v, **analysis.verdict_settings(spec))}")
            except Exception as e:  # noqa: BLE001
                out(f"report: not written ({type(e).__name__}: {e}); try `raydw report {store.uri} --out DIR`")
    out(f"results: {store.uri}")
    out(f"  load:  python -c \"import raydw; print(raydw.results.load('{store.uri}').head())\"")
    out(f"  print: raydw results {store.uri}   verdicts: raydw verdicts {store.uri}")
    if left:
        out(f"  {left} cell(s) not final: running the same sweep again runs them")
    return s


def _recipes_text(store: Store, cells: list[Cell]) -> str:
    """The tuned recipes the cells used, one line per group."""
    rows = {r["tune_id"]: r for r in store.read_table("recipes").to_pylist()}
    used = sorted({c.tune_id for c in cells if c.tune_id in rows}, key=lambda t: (rows[t]["pretraining"], rows[t]["regime"],
                                                                                 -rows[t]["data_fraction"]))
    lines = [f"tuned dense recipes (Optuna TPE; held fixed for every ticket of the group): {len(used)}"]
    for t in used:
        r = rows[t]
        lines.append(f"  {r['pretraining']} {r['dataset']} {r['regime']} f={r['data_fraction']:g}: {r['recipe']} "
                     f"({r['metric']} {r['value']:.3f}, best of {r['trials']} trials; recipe_id {r['recipe_id']})")
    return "\n".join(lines)


def _table(store: Store, ids: set[str]) -> str:
    """Test SA / RA (%) per pre-training and ticket level, one column per (regime, fraction), mean over seeds."""
    df = load(store.uri)
    df = df[df.cell_id.isin(ids) & (df.status == "done")]
    if not len(df):
        return ""
    df = df.assign(ticket=[("dense" if m == "dense" else f"{m} {s:.1%}") for m, s in zip(df.ticket_method, df.sparsity)],
                   setting=[f"{r} f={f:g}" for r, f in zip(df.regime, df.data_fraction)])
    g = df.groupby(["pretraining", "dataset", "ticket", "setting"])[["sa", "ra"]].mean().reset_index()
    g["value"] = [f"{100 * a:.1f} / {100 * b:.1f}" for a, b in zip(g.sa, g.ra)]
    t = g.pivot(index=["pretraining", "dataset", "ticket"], columns="setting", values="value").fillna("-")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 200):
        return f"\ntest SA / RA in % (mean over seeds; SA at the SA-best, RA at the RA-best epoch)\n{t.to_string()}\n"


def _verdict_text(spec: SweepSpec, store: Store, ids: set[str]) -> tuple[str, pd.DataFrame | None]:
    """(the sweep's verdicts with their intervals, under the spec's rule, as text; the verdicts, which the sweep's
    report shows too, or None). A problem is said, never fatal here."""
    try:
        df = analysis.trials_frame(store.uri, ids)
        if not (df["ticket_method"] != "dense").any():
            return "", None
        v = spec_verdicts(df, spec)
        return "\n" + format_verdicts(v) + "\n", v
    except analysis.AnalysisError as e:
        return f"\nverdicts: not computed ({e})\n", None
