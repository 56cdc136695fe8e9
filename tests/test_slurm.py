"""slurm/raydw.sbatch on a real SLURM: one node of this machine (slurm/local-cluster.sh installs and starts munged,
slurmctld and slurmd; it skips, saying why, only where the packages cannot be installed).

Three submissions of the shipped batch script, edited as a user edits its top lines (one node, no GPU, the test
partition): a tiny sweep that finishes; the same store with a second seed, scancel'ed while its new cells train
(the driver stops on SIGTERM, exit 143, lock released); the same job again, which resumes: the cancelled sweep's
cells end done, each once, and the first job's cells are not run again.
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

from raydw import results

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


def test_sbatch_runs_a_sweep_and_a_cancelled_job_resumes_when_resubmitted(slurm, tmp_path, tiny_spec_text):
    job = _user_edit(slurm, tmp_path)
    store = tmp_path / "store"
    d = yaml.safe_load(tiny_spec_text)
    spec1, spec2 = tmp_path / "tiny.yaml", tmp_path / "tiny2.yaml"
    spec1.write_text(yaml.safe_dump(d))
    d["seeds"] = [1, 2]  # two more cells on the same store: pre-training, mask and index set are reused
    spec2.write_text(yaml.safe_dump(d))
    took = {}

    # 1. A sweep that finishes.
    out1, took["finished"] = _finished_job(job, spec1, store, tmp_path / "job1.out")
    assert "2/2 cells done, 0 failed" in out1, out1[-3000:]
    first = _visible(store / "trials")
    assert len(first) == 2
    epoch_files = len(_visible(store / "epochs"))  # one file per cell: a new one is a new cell's first epoch

    # 2. scancel while a new cell trains: the driver stops on SIGTERM and releases the store.
    t0 = time.time()
    log2 = tmp_path / "job2.out"
    jid = _submit(job, spec2, store, log2)
    deadline = time.time() + 300
    while time.time() < deadline and _job(jid).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"):
        if len(_visible(store / "epochs")) > epoch_files and len(_visible(store / "trials")) == 2:
            break  # a seed-2 cell has stored an epoch and none has finished: mid-sweep
        time.sleep(0.3)
    else:
        raise AssertionError("job 2 never reached a seed-2 epoch:\n" + log2.read_text()[-3000:])
    subprocess.run(["scancel", jid], check=True)
    j = _wait_end(jid, log2, 120)
    took["cancelled"] = time.time() - t0
    out2 = log2.read_text()
    assert j["JobState"] == "CANCELLED", out2[-3000:]
    assert "4 cells, 2 already done, 2 to run" in out2, out2[-3000:]
    assert "interrupted (SIGTERM)" in out2 and "raydw sweep exited 143" in out2, out2[-3000:]
    assert not (store / "locks" / "driver.json").exists()  # the lock went with the driver's clean exit
    assert len(_visible(store / "trials")) < 4

    # 3. The same job again resumes: only the cancelled sweep's unfinished cells run.
    out3, took["resumed"] = _finished_job(job, spec2, store, tmp_path / "job3.out")
    assert re.search(r"4 cells, [23] already done", out3) and "4/4 cells done, 0 failed" in out3, out3[-3000:]
    trials = results.load(str(store))
    assert len(trials) == 4 and trials.cell_id.is_unique and (trials.status == "done").all()
    ep = results.load(str(store), "epochs")
    assert len(ep) == 4 * 2 and not ep.duplicated(["cell_id", "epoch"]).any()
    assert {k: v for k, v in _visible(store / "trials").items() if k in first} == first  # job 1's cells untouched
    print("\nslurm jobs: " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))
