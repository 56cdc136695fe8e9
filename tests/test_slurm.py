"""slurm/raydw.sbatch on a real SLURM: one node of this machine (slurm/local-cluster.sh installs and starts munged,
slurmctld and slurmd; it skips, saying why, only where the packages cannot be installed).

Two submissions of the shipped batch script, edited as a user edits its top lines (one node, no GPU, the test
partition): a tiny 2-cell sweep, one cell at a time, scancel'ed once one cell is done and the other trains (the
driver stops on SIGTERM, exit 143, lock released); the same job again, which resumes and completes: every cell done
once, and the cell the first job finished is not run again. (It was three jobs, the first a sweep that finished;
the resumed job finishes too, so that one only cost a Ray start and a pre-training. It was 4 cells, 2 at a time:
6 Ray Train runs where 3 show the same.)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raydw.findings import results

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "raydw.sbatch"


@pytest.fixture(scope="module")
def slurm():
    r = subprocess.run(["bash", str(REPO / "slurm" / "local-cluster.sh")], capture_output=True, text=True, timeout=900)
    if r.returncode == 77:
        pytest.skip(f"no SLURM here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    partition = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True).stdout.split()[0]
    return partition.rstrip("*")


def _user_edit(partition: str, folder: Path) -> Path:
    """The shipped script with its top lines edited: 1 node, no GPU line, this partition, 20 minutes."""
    text = SCRIPT.read_text()
    edits = {r"#SBATCH --nodes=\d+": "#SBATCH --nodes=1", r"#SBATCH --gpus-per-node=\d+\n": "",
             r"#SBATCH --partition=\S+": f"#SBATCH --partition={partition}", r"#SBATCH --time=\S+": "#SBATCH --time=00:20:00"}
    for pat, new in edits.items():
        text, n = re.subn(pat, new, text)
        assert n == 1, f"{SCRIPT}: no line {pat!r} to edit"
    job = folder / "raydw.sbatch"
    job.write_text(text)
    return job


def _submit(job: Path, spec: Path, store: Path, log: Path) -> str:
    env = f"ALL,RAYDW_SPEC={spec},RAYDW_STORAGE={store},RAYDW_VENV={sys.prefix}"
    r = subprocess.run(["sbatch", "--parsable", f"--output={log}", f"--chdir={job.parent}", f"--export={env}", str(job)],
                       capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    return r.stdout.strip().split(";")[0]


def _job(jid: str) -> dict:
    out = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _wait_end(jid: str, log: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = _job(jid)
        if j.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return j
        time.sleep(1)
    subprocess.run(["scancel", jid])
    raise AssertionError(f"job {jid} still running after {timeout} s:\n" + (log.read_text()[-3000:] if log.exists() else ""))


def _finished_job(job: Path, spec: Path, store: Path, log: Path) -> tuple[str, float]:
    """Submit, wait for the end, check the job completed with exit 0; (its output, seconds from sbatch to the end)."""
    t0 = time.time()
    j = _wait_end(_submit(job, spec, store, log), log, 420)
    out = log.read_text()
    assert j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0", out[-3000:]
    assert "1 of 1 Ray node(s) up" in out and "raydw sweep exited 0" in out, out[-3000:]
    return out, time.time() - t0


def _visible(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in folder.glob("*.parquet") if not p.name.startswith(".")} if folder.exists() else {}


@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
def test_sbatch_runs_a_sweep_that_resumes_after_scancel_when_resubmitted(slurm, tmp_path, tiny_spec_text, tiny_store):
    job = _user_edit(slurm, tmp_path)
    store = tiny_store  # pre-trained already (by `raydw pretrain`): the jobs run cells
    d = yaml.safe_load(tiny_spec_text)
    d["resources"] = {"max_concurrent_cells": 1}  # 2 cells, one after the other: the cancel lands between them
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(d))
    took = {}

    # 1. scancel once one cell is done and the other trains: the driver stops on SIGTERM, releases the store.
    t0 = time.time()
    log1 = tmp_path / "job1.out"
    jid = _submit(job, spec, store, log1)
    deadline = time.time() + 420
    while time.time() < deadline and _job(jid).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"):
        done, started = _visible(store / "trials"), _visible(store / "epochs")  # both named by cell id
        if len(done) >= 1 and set(started) - set(done):
            break  # a cell that is not done has stored an epoch: mid-sweep
        time.sleep(0.3)
    else:
        raise AssertionError("job 1 never reached a second cell's epoch:\n" + (log1.read_text()[-3000:] if log1.exists() else ""))
    subprocess.run(["scancel", jid], check=True)
    j = _wait_end(jid, log1, 120)
    took["cancelled"] = time.time() - t0
    out1 = log1.read_text()
    assert j["JobState"] == "CANCELLED", out1[-3000:]
    assert "1 of 1 Ray node(s) up" in out1 and "2 cells, 0 already done, 2 to run" in out1, out1[-3000:]
    assert "interrupted (SIGTERM)" in out1 and "raydw sweep exited 143" in out1, out1[-3000:]
    assert not (store / "locks" / "driver.json").exists()  # the lock went with the driver's clean exit
    first = results.load(str(store)).set_index("cell_id").finished_at  # rows, not files: a sweep compacts at its end
    assert len(first) == 1

    # 2. The same job again resumes: only the cells the cancelled job did not finish run.
    out2, took["resumed"] = _finished_job(job, spec, store, tmp_path / "job2.out")
    assert re.search(rf"2 cells, {len(first)} already done", out2) and "2/2 cells done, 0 failed" in out2, out2[-3000:]
    trials = results.load(str(store))
    assert len(trials) == 2 and trials.cell_id.is_unique and (trials.status == "done").all()
    ep = results.load(str(store), "epochs")
    assert len(ep) == 2 * 2 and not ep.duplicated(["cell_id", "epoch"]).any()
    assert trials.set_index("cell_id").finished_at[first.index].equals(first)  # job 1's cells were not run again
    print("\nslurm jobs: " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))
