"""A trial's Train reports reach Tune, and the trial completes, however Tune's results and the run's end interleave.

Ray-free: Ray Tune's own function-trainable session (ray.train._internal.session._TrainSession, made as
FunctionTrainable.setup makes it) is driven as Tune drives it, one result per `get_next` with a pause between two
(Tune handling a result); the Train run is a stand-in whose fit() calls the trial's callbacks as Ray Train's
controller does, and the cross-process queue a local one. The sweep that hung (docs/findings.md, "hung after its
36th line"): a pack's last two reports came together, the second was still queued when the trial function returned,
and the trainable's main thread then blocked on its full result queue forever.
"""
from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace
from unittest import mock

import pytest
from ray.train._internal import session as train_session
from ray.tune.result import RESULT_DUPLICATE
from ray.util.queue import Empty

from raydw.run import trials

TUNE_GAP_S = 0.5  # Tune between two results of a trial (its loop, callbacks, the next train() call)


class LocalQueue:
    """ray.util.queue.Queue's interface, in this process."""

    def __init__(self, maxsize=0, actor_options=None):
        self.q = queue.Queue(maxsize)

    def put(self, item, block=True, timeout=None):
        self.q.put(item, block, timeout)

    def get(self, block=True, timeout=None):
        try:
            return self.q.get(block, timeout)
        except queue.Empty:
            raise Empty from None

    def get_nowait(self):
        return self.get(block=False)

    def empty(self):
        return self.q.empty()


class FakeRun:
    """A Train run: each report goes through the callbacks (Train's controller calls after_report), then its end."""

    def __init__(self, callbacks, reports):
        self.callbacks, self.reports = callbacks, reports

    def fit(self):
        for gap, m in self.reports:
            time.sleep(gap)
            for cb in self.callbacks:
                cb.after_report(None, [dict(m)], None)
        time.sleep(0.1)  # the controller shuts its workers down
        return SimpleNamespace(metrics=dict(self.reports[-1][1]), checkpoint=None)


class FakeStore:
    rows: dict = {}

    def __init__(self, uri):
        pass

    def get(self, table, key):
        return self.rows.get(key)

    def write_row(self, table, row):
        self.rows[row["cell_id"]] = row


def _session(tmp_path, trial_fn, monkeypatch):
    """A Tune function trainable's session running `trial_fn` as ImplicitFunc does (its closing report included)."""
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")
    monkeypatch.setattr(train_session._TrainSession, "get_current_ip", lambda self: "127.0.0.1")
    storage = mock.MagicMock(trial_working_directory=str(tmp_path))

    def training_func():
        trial_fn()
        train_session.get_session().report({RESULT_DUPLICATE: True})

    s = train_session._TrainSession(training_func=training_func, trial_info=None, storage=storage,
                                    synchronous_result_reporting=True, world_rank=None, local_rank=None,
                                    node_rank=None, local_world_size=None, world_size=None)
    monkeypatch.setattr(train_session, "_session", s)

    def inter_actor_queue():  # what Ray's TuneReportCallback reports through, made here without a Ray actor
        if s._inter_actor_queue is None:
            s._inter_actor_queue = LocalQueue(1)
        return s._inter_actor_queue

    monkeypatch.setattr(s, "_get_or_create_inter_actor_queue", inter_actor_queue)
    return s


def _drive(s) -> list[dict]:
    """Tune's side: a train() call per result until the trial's closing one; fails if the trial never completes."""
    got: list[dict] = []

    def loop():
        s.start()
        while True:
            r = s.get_next()
            got.append(r.metrics)
            if RESULT_DUPLICATE in r.metrics:
                return
            time.sleep(TUNE_GAP_S)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    t.join(15)
    assert not t.is_alive(), f"the trial never completed; Tune got {[sorted(m) for m in got]}"
    return got


def test_pack_trial_completes_when_its_last_two_reports_come_together(tmp_path, monkeypatch):
    """A pack's last cell's final report and the pack's own come together at the end of its run; then the run ends
    while Tune is still handling the first. Before the fix (TuneReportCallback) the second was moved to the result
    queue after the trial function's closing report, and the trainable hung on it."""
    reports = [(0.0, {"epoch": 0, "cell_id": "a"}), (0.3, {"final": 1, "cell_id": "a", "status": "done"}),
               (0.0, {"final": 1, "cells": 1})]
    monkeypatch.setattr(trials, "_trainer", lambda loop, job, callbacks=None: FakeRun(callbacks or [], reports))
    monkeypatch.setattr(trials, "_queue", LocalQueue, raising=False)
    monkeypatch.setattr(trials, "Store", FakeStore)
    monkeypatch.setattr(FakeStore, "rows", {})
    monkeypatch.setattr(trials, "cell_row", lambda j, result, took: {"cell_id": j.cell.cell_id, "status": result.status})
    job = SimpleNamespace(run=SimpleNamespace(storage="mem://"), cells=(SimpleNamespace(cell=SimpleNamespace(cell_id="a")),))

    got = _drive(_session(tmp_path, lambda: trials.pack_trial(job), monkeypatch))

    assert [m.get("epoch", m.get("cells", m.get("status"))) for m in got[:-1]] == [0, "done", 1]
    assert RESULT_DUPLICATE in got[-1]


def test_a_failed_run_still_forwards_its_reports_then_raises(tmp_path, monkeypatch):
    class Broken(FakeRun):
        def fit(self):
            super().fit()
            raise RuntimeError("worker died")

    reports = [(0.0, {"epoch": 0}), (0.0, {"epoch": 1})]
    monkeypatch.setattr(trials, "_trainer", lambda loop, job, callbacks=None: Broken(callbacks or [], reports))
    monkeypatch.setattr(trials, "_queue", LocalQueue, raising=False)
    raised = []

    def trial():
        try:
            trials._fit(None, None)
        except RuntimeError as e:
            raised.append(str(e))

    got = _drive(_session(tmp_path, trial, monkeypatch))
    assert [m.get("epoch") for m in got[:-1]] == [0, 1] and raised == ["worker died"]
