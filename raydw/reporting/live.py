"""The live report: the HTML report rewritten every few seconds while a sweep runs (`raydw report --watch`,
`raydw sweep --live-report`).

Each write is the whole report (raydw.reporting.report.write_report, every file replaced atomically) with a progress section
first: cells done / running / failed / missing, the time left, and a plot of the cells finished so far. The page
reloads itself, so a browser left open on it follows the sweep. Only the store is read (torch- and Ray-free), so a
watcher can run anywhere that sees the store, in its own process or in a thread of the sweep's driver.
"""
from __future__ import annotations

import html
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from raydw.reporting import status
from raydw.findings.results import load

# Colours of the finished-cells plot, none of them in the report's palette: a screenshot test can count its points.
DONE_COLOUR, FAILED_COLOUR = "#00897b", "#c62828"
PLOT = "cells_so_far.png"


@dataclass
class Progress:
    done: int
    failed: int  # failed or stopped early
    running: int  # epoch rows stored, no trials row yet (running now, or interrupted mid-cell)
    missing: int | None  # spec cells not started (None without a spec)
    total: int | None
    left_s: float | None  # serial seconds left (raydw.reporting.status's estimate)

    @property
    def complete(self) -> bool:
        """Every cell of the spec has its trials row (done, failed or stopped) and none is half-way."""
        return self.total is not None and self.missing == 0 and self.running == 0


def progress(uri: str, spec=None, cells: set[str] | None = None) -> tuple[Progress, pd.DataFrame]:
    """Where the sweep stands, and its finished rows (for the plot)."""
    st = status.collect(uri, spec)
    trials = load(uri, "trials", columns=["cell_id", "status", "sa", "ra", "finished_at"])
    if cells is not None:
        trials = trials[trials["cell_id"].isin(cells)]
    ep = load(uri, "epochs", columns=["cell_id", "epoch"])  # load sorts epochs by both (a cell_id-only read fails)
    started = set(ep["cell_id"]) - set(trials["cell_id"])
    if cells is not None:
        started &= cells
    missing = None if st.missing is None else max(st.missing - len(started), 0)
    p = Progress(done=st.done, failed=st.failed + st.stopped, running=len(started), missing=missing, total=st.total,
                 left_s=st.left_s)
    return p, trials


def plot_finished(trials: pd.DataFrame, path: Path) -> Path:
    """One point per finished cell and metric (SA circles, RA triangles) against the time it finished."""
    from raydw.reporting.report import save_png

    fig = Figure(figsize=(7.0, 2.6))  # 770 px wide at 110 dpi: never scaled down in the page, points stay countable
    ax = fig.subplots()
    ax.set_title("cells finished so far", fontsize=9)
    ax.set_xlabel("minutes since the first finished cell", fontsize=8)
    ax.set_ylabel("test accuracy (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    t = trials.dropna(subset=["finished_at"])
    if t.empty:
        ax.text(0.5, 0.5, "no cell finished yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    else:
        minutes = (t["finished_at"] - t["finished_at"].min()).dt.total_seconds() / 60
        for st, colour in (("done", DONE_COLOUR), ("failed", FAILED_COLOUR)):
            sel = (t["status"] == "done") if st == "done" else (t["status"] != "done")
            for metric, marker in (("sa", "o"), ("ra", "^")):
                y = 100 * t.loc[sel, metric].astype(float)
                y = y.where(y.notna(), 0.0) if st == "failed" else y  # a failed cell has no accuracy: drawn at 0
                ax.plot(minutes[sel], y, ls="none", marker=marker, ms=7, color=colour, mec=colour,
                        label=f"{st} {metric.upper()}" if sel.any() else None)
        ax.set_xlim(-0.05, max(float(minutes.max()), 0.5) * 1.08)
        ax.set_ylim(-5, 105)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right")
    return save_png(fig, path)


def duration(s: float | None) -> str:
    return "unknown (no done cell to time yet)" if s is None else status.duration(s)


def section(p: Progress, every: float, state: str) -> str:
    """The progress section at the top of a live report."""
    counts = f"{p.done} done, {p.running} running, {p.failed} failed or stopped"
    if p.total is not None:
        counts += f", {p.missing} not started, of {p.total} cells"
        counts += f"; time left: {duration(p.left_s)} if run one at a time (divide by the cells running at once)"
    return (f"<h2>Live: {html.escape(state)}</h2><p class='live'>{html.escape(counts)}</p>"
            f"<p class='note'>Rewritten every {every:g} s while the sweep runs; this page reloads itself. "
            "Running = epoch rows stored but no trials row yet (a cell half-way, or one a stopped driver left).</p>"
            f"<img src='{PLOT}' alt='cells finished so far'>")


class LiveReport:
    """Rewrites the report in `out_dir` every `every` seconds: watch() in the foreground, start()/stop() in a thread."""

    def __init__(self, uri: str | None, out_dir, every: float = 30.0, spec=None, verdict_args: dict | None = None,
                 out=print):
        self.uri, self.out_dir, self.every, self.spec = uri, Path(out_dir) if out_dir else None, every, spec
        self.verdict_args, self.out = verdict_args or {}, out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # one write at a time: the thread's and a final one never interleave
        self.writes = 0
        self._last_error = None

    def write(self, state: str = "running") -> Progress:
        from raydw.planning.plan import spec_cells
        from raydw.reporting.report import write_report

        with self._writing:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            cells = spec_cells(self.uri, self.spec) if self.spec is not None else None  # tuned ids appear over time
            p, trials = progress(self.uri, self.spec, cells)
            plot_finished(trials, self.out_dir / PLOT)
            write_report(self.uri, self.out_dir, cells=cells, top=[section(p, self.every, state)],
                         refresh_s=max(1, round(self.every)), **self.verdict_args)
            self.writes += 1
            return p

    def _safe_write(self, state: str = "running") -> Progress | None:
        """A write that never stops the sweep: a problem is said once (again only when it changes)."""
        try:
            return self.write(state)
        except Exception as e:  # noqa: BLE001 - the live report is a view; the sweep goes on without it
            msg = f"live report: not written ({type(e).__name__}: {e})"
            if msg != self._last_error:
                print(msg, file=sys.stderr, flush=True)
            self._last_error = msg
            return None

    def watch(self, until_complete: bool = False) -> int:
        """Rewrite until stop() (a signal handler calls it) or, with until_complete, until every cell has its row.
        Returns the number of writes."""
        while not self._stop.is_set():
            t0 = time.time()
            p = self._safe_write()
            if until_complete and p is not None and p.complete:
                self._safe_write("complete")
                break
            self._stop.wait(max(0.0, self.every - (time.time() - t0)))
        return self.writes

    # -- in a thread of the sweep's driver (raydw sweep --live-report) -------------------------------------------
    def start(self, uri: str) -> None:
        """Start rewriting the report of `uri` (the store the sweep locked) in a daemon thread."""
        self.uri = self.uri or uri
        if self.out_dir is None:  # the folder the sweep's own end-of-run report goes to
            from raydw.store import Store

            store = Store(self.uri)
            self.out_dir = Path(store.path("report")) if store.local else Path("report")
        self.out(f"live report: {self.out_dir / 'index.html'} (rewritten every {self.every:g} s)")
        self._thread = threading.Thread(target=self.watch, name="raydw-live-report", daemon=True)
        self._thread.start()

    def stop(self, final: str | None = None) -> None:
        """Stop the thread (after its write in progress, if any); `final`: write once more with that state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if final is not None:
            self._safe_write(final)
