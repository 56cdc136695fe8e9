"""The Ray Tune callback that feeds the trackers: one tracker run per cell, fed from the results store.

Why from the store: it is the source of truth, and it names every row by its cell. A Tune trial is not always one
cell (a pack runs several one after another, and a tuning trial reports only its score to Tune), so the epoch rows
`<cell>.eNNNN` and the cell's trials row, which every kind of trial writes, are read as they appear: the tracker then
holds exactly the store's epoch points and final numbers. Tune's events (start, each result, end) say when to look;
between them the store is looked at every POLL_S seconds, so an epoch shows up about a second after it is stored.

Nothing here can fail a cell or the sweep: every tracker call runs on one background thread (a slow or gone server
never holds up Tune's loop), and a tracker that raises is said once, in one line, and not called again by this Tuner.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from ray.tune import Callback

from raydw.trackers.adapter import Tracked, tracked
from raydw.trackers.runinfo import RunInfo, run_info

POLL_S = 1.0  # how often running cells' new epoch rows are looked for
FLUSH_S = 120.0  # the most the end of a Tuner waits for the trackers to take the last rows
_SAID: set[tuple[str, str]] = set()  # (sweep, tracker) failures already said in this process: once per sweep


@dataclass
class _Cell:
    t: Tracked
    info: RunInfo
    before: object  # finished_at of a trials row stored before this run (a failed cell being retried), else None
    next_epoch: int = 0
    handles: dict = field(default_factory=dict)  # sink index -> its run
    opened: bool = False
    done: bool = False


class TrackerCallback(Callback):
    """`factories`: (label, build) per tracker (raydw.trackers.sink_factories), built on the background thread."""

    def __init__(self, factories, sweep: str, out=print, jobs_of=None):
        self._make, self._sweep, self._out, self._jobs_of = factories, sweep, out, jobs_of
        self._q: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self):  # Tune pickles its run config (tuner.pkl): the thread and queue stay behind
        return {**self.__dict__, "_q": None, "_thread": None}

    # -- Tune's thread: post events, never block ----------------------------------------------------------
    def setup(self, **info):
        self._q = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="raydw-trackers", daemon=True)
        self._thread.start()

    def _post(self, *event) -> None:
        if self._q is not None:
            self._q.put(event)

    def on_trial_start(self, iteration, trials, trial, **info):
        try:
            cells = tracked(trial.config, self._jobs_of)
        except Exception as e:  # noqa: BLE001 - a config this adapter does not know is not the sweep's problem
            self._say("trial config", e)
            return
        if cells:
            self._post("start", trial.trial_id, cells, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._post("look", trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._post("end", trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._post("end", trial.trial_id)

    def on_experiment_end(self, trials, **info):
        if self._thread is None:
            return
        self._post("stop")
        self._thread.join(FLUSH_S)
        if self._thread.is_alive():
            self._out(f"trackers: still sending after {FLUSH_S:.0f} s at the end of the run; left behind (the results "
                      "store has every row)")

    # -- the background thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        from raydw.store import Store

        self._stores: dict[str, Store] = {}
        self._trials: dict[str, list[_Cell]] = {}
        self._dead: set[int] = set()
        self._sinks = []
        for i, (what, build) in enumerate(self._make):
            try:
                self._sinks.append(build())
            except Exception as e:  # noqa: BLE001 - e.g. the server is not there: the other trackers still run
                self._sinks.append(None)
                self._dead.add(i)
                self._say(what, e)
        while True:
            try:
                event = self._q.get(timeout=POLL_S)
            except queue.Empty:
                for tid in list(self._trials):
                    self._look(tid)
                continue
            kind = event[0]
            if kind == "start":
                self._start(event[1], event[2], event[3])
            elif kind == "look":
                self._look(event[1])
            elif kind == "end":
                self._look(event[1], end=True)
            elif kind == "stop":
                for tid in list(self._trials):  # an interrupted sweep: close what is open, as far as it got
                    self._look(tid, end=True)
                for i, s in enumerate(self._sinks):
                    self._call(i, lambda s=s: s.close())
                return

    def _store(self, uri: str):
        from raydw.store import Store

        if uri not in self._stores:
            self._stores[uri] = Store(uri)
        return self._stores[uri]

    def _start(self, tid: str, cells: list[Tracked], started: float) -> None:
        out = []
        for t in cells:
            row = self._store(t.storage).get("trials", t.cell.cell_id)
            # This thread may get to the start late (building the trackers first: MLflow's import alone takes
            # seconds): a row stored since is this run's own. Older only if it finished before the trial started.
            fin = (row or {}).get("finished_at")
            older = fin is not None and fin.timestamp() < started
            out.append(_Cell(t, run_info(t), fin if older else None))
        self._trials[tid] = out
        self._look(tid)
        if out and not out[0].opened:  # the run shows up as soon as the cell starts, before its first epoch
            self._open(out[0])

    def _look(self, tid: str, end: bool = False) -> None:
        """Log the new epoch rows of the trial's current cell; close each cell whose trials row is (newly) stored.
        A pack's cells run in order, so a cell without its row yet is the current one: the ones after it wait."""
        cells = self._trials.get(tid, [])
        for c in cells:
            if c.done:
                continue
            store = self._store(c.t.storage)
            self._epochs(c, store)
            row = store.get("trials", c.info.cell_id)
            fresh = row is not None and row.get("finished_at") != c.before
            if not fresh and not end:
                break
            self._finish(c, row if fresh else None)
        if end:
            self._trials.pop(tid, None)

    def _epochs(self, c: _Cell, store) -> None:
        while True:
            row = store.get("epochs", f"{c.info.cell_id}.e{c.next_epoch:04d}")
            if row is None:
                return
            if not c.opened:
                self._open(c)
                if row["epoch"] < c.next_epoch:  # the tracker's run already holds this epoch (a resumed cell)
                    continue
            for i, h in list(c.handles.items()):
                self._call(i, self._sinks[i].epoch, h, row["epoch"], row)
            c.next_epoch = row["epoch"] + 1

    def _open(self, c: _Cell) -> None:
        c.opened = True
        logged = []
        for i, s in enumerate(self._sinks):
            got = self._call(i, lambda s=s: s.open(c.info))
            if got is not None:
                c.handles[i], n = got
                logged.append(n)
        # A resumed cell continues the run a tracker holds for it (MLflow, TensorBoard): from the first epoch that
        # every tracker still needs (one that holds it already gets it again only if another one lacks it).
        c.next_epoch = max(c.next_epoch, min(logged, default=0))

    def _finish(self, c: _Cell, row: dict | None) -> None:
        if not c.opened:
            self._open(c)
        status = (row or {}).get("status") or "failed"
        for i, h in list(c.handles.items()):
            self._call(i, self._sinks[i].finish, h, row, status)
        c.done = True

    def _call(self, i: int, fn, *args):
        if i in self._dead:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - a tracker never fails a cell: said once, then left alone
            self._dead.add(i)
            self._say(self._sinks[i].name, e)
            self._abandon(i)
            return None

    def _abandon(self, i: int) -> None:
        """Close, quietly, every run a dead tracker still has open (its writer threads would complain at exit)."""
        abandon = getattr(self._sinks[i], "abandon", None)
        if abandon is None:
            return
        for cells in self._trials.values():
            for c in cells:
                h = c.handles.pop(i, None)
                if h is not None:
                    try:
                        abandon(h)
                    except Exception:  # noqa: BLE001 - it is dead already; nothing more to say
                        pass

    def _say(self, what: str, e: Exception) -> None:
        key = (self._sweep, what)
        if key in _SAID:
            return
        _SAID.add(key)
        msg = " ".join(str(e).split())[:200]
        self._out(f"warning: tracker {what} failed ({type(e).__name__}: {msg}); raydw stops sending to it for this "
                  "run, the cells go on and the results store keeps every row")
