"""Packed cells (`resources.cells_per_run`): several cells in one Ray Train run, each with its own trials row."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raydw import results
from raydw.spec import parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def packed(ray_session, tmp_path_factory):
    from conftest import TINY_SPEC

    from raydw.run.sweep import run_sweep

    d = yaml.safe_load(TINY_SPEC)
    # A diverging regime: its cells fail inside the pack, and the pack must go on with the others.
    d["regimes"]["boom"] = {"kind": "standard", "epochs": 1, "batch_size": 64,
                            "optimizer": {"lr": 1e12, "schedule": "constant"}}
    d["resources"] = {"max_concurrent_cells": 1, "cells_per_run": 4}
    spec = parse_spec(d)
    store = str(tmp_path_factory.mktemp("packed"))
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
