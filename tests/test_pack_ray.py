"""Packed cells (`resources.cells_per_run`): several cells in one Ray Train run, each with its own trials row."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raydw.findings import results
from raydw.spec import parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def packed(ray_session, tmp_path_factory, tiny_pretrained):
    from conftest import TINY_SPEC, seed_pretrained

    from raydw.run.sweep import run_sweep

    d = yaml.safe_load(TINY_SPEC)
    # A diverging regime: its cells fail inside the pack, and the pack must go on with the others.
    d["regimes"]["boom"] = {"kind": "standard", "epochs": 1, "batch_size": 64,
                            "optimizer": {"lr": 1e12, "schedule": "constant"}}
    d["resources"] = {"max_concurrent_cells": 1, "cells_per_run": 4}
    spec = parse_spec(d)
    store = str(seed_pretrained(tiny_pretrained[0], tmp_path_factory.mktemp("packed")))
    lines: list[str] = []
    summary = run_sweep(spec, storage=store, out=lines.append)
    return spec, store, summary, lines


def test_every_packed_cell_gets_its_own_row_and_a_failure_does_not_stop_the_pack(packed):
    _, store, summary, _ = packed
    df = results.load(store)
    assert summary.total == 4 and len(df) == 4 and df.cell_id.is_unique
    done, failed = df[df.status == "done"], df[df.status == "failed"]
    assert set(done.regime) == {"standard"} and len(done) == 2 and (done.sa > 0.3).all()
    assert set(failed.regime) == {"boom"} and failed.error.str.contains("training loss is").all()
    assert done.fit_s.gt(0).all() and (done.wall_s >= done.fit_s).all()


def test_the_cells_ran_in_one_train_run(packed):
    _, store, _, _ = packed
    runs = sorted(p.name for p in (Path(store) / "train").iterdir() if p.is_dir())
    assert [r for r in runs if r.startswith("pack-")] and not [r for r in runs if r.startswith("cell-")], runs
    assert len({r for r in runs if r.startswith("pack-")}) == 1, runs  # 4 ready cells, cells_per_run 4
    ep = results.load(store, "epochs")
    assert not ep.duplicated(["cell_id", "epoch"]).any()
    trials = results.load(store).set_index("cell_id")
    per_cell = ep.groupby("cell_id").epoch.count()
    assert all(per_cell[c] == 2 for c in trials.index[trials.status == "done"]), per_cell


def test_a_rerun_of_a_packed_sweep_only_retries_the_failed_cells(packed):
    from raydw.run.sweep import run_sweep

    spec, store, _, _ = packed
    done = set(results.load(store).query("status == 'done'").cell_id)
    ep = results.load(store, "epochs")
    before = len(ep[ep.cell_id.isin(done)])
    s = run_sweep(spec, storage=store, out=lambda *_: None)
    # only the two failed (diverging) cells are tried again; the done ones are not touched
    assert s.ran == 2 and len(results.load(store)) == 4
    ep = results.load(store, "epochs")
    assert len(ep[ep.cell_id.isin(done)]) == before and not ep.duplicated(["cell_id", "epoch"]).any()


def _train_workers_of_this_process() -> list[int]:
    import os
    import subprocess

    from conftest import process_ancestors

    r = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True)
    return [pid for pid in map(int, r.stdout.split()) if os.getpid() in process_ancestors(pid)]


@pytest.mark.timeout(600)
def test_a_killed_worker_resumes_the_pack_at_its_half_done_cell(ray_session, tiny_store):
    """SIGKILL the Train worker while the pack's second cell trains: the first cell is not run again, the second
    continues from its last epoch checkpoint, and each cell has one row."""
    import os
    import signal
    import threading
    import time

    from conftest import TINY_SPEC

    from raydw.run.sweep import run_sweep

    d = yaml.safe_load(TINY_SPEC)
    d["regimes"]["standard"]["epochs"] = 5
    d["resources"] = {"max_concurrent_cells": 1, "cells_per_run": 2, "max_failures": 2}
    spec = parse_spec(d)
    store = tiny_store
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("s", run_sweep(spec, storage=str(store), out=lambda *_: None)),
                         daemon=True)
    t.start()

    def second_cell_has_two_epochs():
        if not (store / "trials").exists():
            return None
        first = [p for p in (store / "trials").glob("*.parquet") if not p.name.startswith(".")]
        if len(first) != 1:
            return None
        done_id = first[0].stem
        ep = results.load(str(store), "epochs")
        return (first[0], done_id) if (ep.cell_id != done_id).sum() >= 2 else None

    deadline, hit = time.time() + 420, None
    while time.time() < deadline and t.is_alive() and hit is None:
        hit = second_cell_has_two_epochs()
        time.sleep(0.1)
    assert hit is not None, "the pack's second cell never reached two epochs while the first was done"
    first_row, first_id = hit
    # The row itself, not its file's mtime: the sweep compacts its finished cells' files at its end.
    first_finished = results.load(str(store)).set_index("cell_id").finished_at[first_id]
    pids = _train_workers_of_this_process()
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    t.join(420)
    assert not t.is_alive() and box["s"].done == 2
    trials = results.load(str(store))
    assert len(trials) == 2 and (trials.status == "done").all()
    assert trials.set_index("cell_id").finished_at[first_id] == first_finished  # the finished cell was not run again
    ep = results.load(str(store), "epochs")
    assert not ep.duplicated(["cell_id", "epoch"]).any() and len(ep) == 2 * 5
    second = ep[ep.cell_id != first_id]
    assert (second.resumed_from > 0).any(), second[["epoch", "resumed_from"]].to_string()  # continued, not restarted
    assert (ep[ep.cell_id == first_id].resumed_from == 0).all()
