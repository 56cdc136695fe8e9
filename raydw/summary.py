"""The end of a sweep: what it did, its table and verdicts, its report, and how to load its results.

Outside run/ (Ray-free): it reads only the store.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from raydw import analysis
from raydw.cells import Cell
from raydw.report import write_report
from raydw.results import load
from raydw.spec import SweepSpec
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
    skipped: int = 0  # not needed by the extreme search, by design

    @property
    def complete(self) -> bool:
        """Every cell has its final state: done, or stopped / skipped as the spec asked. Failed or missing: not."""
        return self.done + self.stopped + self.skipped == self.total


def end_of_sweep(spec: SweepSpec, store: Store, cells: list[Cell], ran: int, t0: float, out, skipped: int = 0,
                 not_run: set[str] = frozenset()) -> Summary:
    """The sweep's last lines: counts, the table of test SA / RA, the verdicts, the report and how to load it."""
    ids = {c.cell_id for c in cells} - set(not_run)  # cells waiting for a tuned recipe count as missing
    t = store.read_table("trials", columns=["cell_id", "status"]).to_pylist()
    status = {r["cell_id"]: r["status"] for r in t if r["cell_id"] in ids}
    done = sum(1 for s in status.values() if s == "done")
    failed = sum(1 for s in status.values() if s == "failed")
    stopped = sum(1 for s in status.values() if s == "stopped")
    s = Summary(total=len(cells), done=done, failed=failed, ran=ran, storage=store.uri, wall_s=time.time() - t0,
                stopped=stopped, skipped=skipped)
    out(f"\n{done}/{len(cells)} cells done, {failed} failed" + (f", {stopped} stopped early" if stopped else "")
        + (f", {skipped} not needed by the extreme search" if skipped else "")
        + f", {len(cells) - done - failed - stopped - skipped} missing"
        + (f" ({len(not_run)} without a tuned recipe)" if not_run else "") + f" ({s.wall_s:.0f} s)")
    if spec.tune.enabled:
        out(_recipes_text(store, cells))
    if done:
        out(_table(store, ids))
        out(_verdict_text(spec, store, ids))
        if not store.local:  # an object store: write the report where the user reads it
            out(f"report: raydw report {store.uri} --out report/")
        else:
            try:  # the report is a convenience here: a plotting problem must not turn a finished sweep into an error
                out(f"report: {write_report(store.uri, store.path('report'), cells=ids, **analysis.verdict_settings(spec))}")
            except Exception as e:  # noqa: BLE001
                out(f"report: not written ({type(e).__name__}: {e}); try `raydw report {store.uri} --out DIR`")
    out(f"results: {store.uri}")
    out(f"  load:  python -c \"import raydw; print(raydw.results.load('{store.uri}').head())\"")
    out(f"  print: raydw results {store.uri}   verdicts: raydw verdicts {store.uri}")
    if failed:
        out("  failed cells are retried by running the same sweep again")
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


def _verdict_text(spec: SweepSpec, store: Store, ids: set[str]) -> str:
    """The sweep's verdicts with their intervals, under the spec's rule; a problem is said, never fatal here."""
    try:
        df = analysis.trials_frame(store.uri, ids)
        if not (df["ticket_method"] != "dense").any():
            return ""
        return "\n" + analysis.format_verdicts(analysis.verdicts(df, **analysis.verdict_settings(spec))) + "\n"
    except analysis.AnalysisError as e:
        return f"\nverdicts: not computed ({e})\n"
