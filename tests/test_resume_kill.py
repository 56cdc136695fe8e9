"""Rerun is resume: kill the `raydw sweep` process by PID mid-run, run it again, get every cell exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raydw.findings import results

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def _sweep(spec: Path, store: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "raydw.cli", "sweep", str(spec), "--storage", str(store)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.exists() else []


def _registered_checkpoint(store: Path, epochs: int) -> bool:
    """A cell whose registered checkpoint is a mid-run epoch (not its last, not its final report): killing now
    must make the rerun continue it. (Killed after its last epoch, a cell is rightly finished from its final
    checkpoint without training, so no row would show a resumed segment.)"""
    for snap in (store / "train").glob("cell-*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):  # being written
            continue
        m = latest.get("metrics") or {}
        if "final" not in m and m.get("epoch", epochs) < epochs - 1:
            return True
    return False


@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
def test_killed_sweep_resumes_without_duplicates(tmp_path, tiny_spec_text, tiny_store):
    d = yaml.safe_load(tiny_spec_text)
    d["regimes"]["standard"]["epochs"] = 6
    d["tickets"]["include_dense"] = False  # one cell (OMP 50 %): the kill lands inside it; a second cell cost ~15 s
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(d))
    store = tiny_store  # pre-trained already: the kill lands in a cell

    first = _sweep(spec, store, tmp_path / "first.log")
    deadline = time.time() + 400
    # Kill once the first cell has stored an epoch and Train's controller has registered its checkpoint (the
    # snapshot a restored run reads), but before any cell is complete. Without the second condition the kill
    # can land between the report and the registration, and the cell rightly restarts from scratch.
    while time.time() < deadline and first.poll() is None:
        if _visible(store / "epochs") and not _visible(store / "trials") and _registered_checkpoint(store, 6):
            break
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    epochs_at_kill = len(_visible(store / "epochs"))
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert not _visible(store / "trials")

    second = _sweep(spec, store, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "Last result" not in (tmp_path / "second.log").read_text()  # Tune's own line for a trial without a result

    trials = results.load(str(store))
    assert len(trials) == 1 and (trials.status == "done").all()
    ep = results.load(str(store), "epochs")
    assert len(ep) == 6 and not ep.duplicated(["cell_id", "epoch"]).any()
    assert epochs_at_kill >= 1
    # The interrupted cell continued from its checkpoint: some epoch rows were written by a resumed segment.
    assert (ep.resumed_from > 0).any(), ep[["cell_id", "epoch", "resumed_from"]].to_string()

    # A third run has nothing to do and adds nothing.
    t0 = time.time()
    third = _sweep(spec, store, tmp_path / "third.log")
    assert third.wait(timeout=120) == 0
    assert time.time() - t0 < 60
    assert len(results.load(str(store))) == 1 and len(results.load(str(store), "epochs")) == 6
