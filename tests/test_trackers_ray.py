"""One tiny real sweep with every tracker on at once (the Ray cost is paid once): MLflow (a SQLite store, and an
`mlflow server` on loopback that is killed mid-sweep), W&B offline and TensorBoard each hold one run per cell with
its tags and as many epoch points as the store's epochs table; the killed server is said once and fails no cell."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from raydw.findings import results
from raydw.spec import parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(db: Path, port: int) -> subprocess.Popen:
    """A real MLflow tracking server on loopback, in its own process group (it starts uvicorn workers)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes: 2 cores
    return subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server not up after {timeout} s")


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its uvicorn worker: the group this test started
        proc.wait()


@pytest.fixture(scope="module")
def tracked_sweep(request, tmp_path_factory, tiny_pretrained):
    from conftest import TINY_SPEC, seed_pretrained

    from raydw.run.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("trackers")
    port = _free_port()
    server = _mlflow_server(tmp / "server.db", port)  # it boots while Ray starts
    request.addfinalizer(lambda: _kill_group(server))
    request.getfixturevalue("ray_session")
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, server)
    d = yaml.safe_load(TINY_SPEC)
    d["name"] = "trk"
    d["trackers"] = [{"kind": "mlflow", "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
                     {"kind": "mlflow", "tracking_uri": url, "experiment": "served"},
                     {"kind": "wandb", "mode": "offline", "dir": str(tmp / "wandb")},
                     {"kind": "tensorboard", "logdir": str(tmp / "tb")}]
    spec = parse_spec(d)
    store = seed_pretrained(tiny_pretrained[0], tmp / "store")
    killed = threading.Event()

    def kill_after_first_epoch():  # "server gone mid-sweep": once the first epoch row is stored
        while not killed.is_set():
            if any((store / "epochs").glob("*.parquet")) if (store / "epochs").is_dir() else False:
                _kill_group(server)
                killed.set()
            time.sleep(0.2)

    threading.Thread(target=kill_after_first_epoch, daemon=True).start()
    lines: list[str] = []
    t0 = time.time()
    summary = run_sweep(spec, storage=str(store), out=lines.append)
    wall = time.time() - t0
    killed.set()
    return spec, str(store), summary, lines, tmp, url, wall


def _cells(store: str):
    """The store's trials rows by cell id, and each cell's stored epoch numbers (the source of truth)."""
    trials = results.load(store).set_index("cell_id")
    epochs = results.load(store, "epochs")
    return trials, epochs.groupby("cell_id").epoch.apply(sorted).to_dict()


def _labels(spec) -> dict[str, str]:
    from raydw.cells import expand

    return {c.cell_id: c.label() for c in expand(spec)}


def test_the_killed_server_fails_no_cell_and_is_said_once(tracked_sweep):
    from mlflow import MlflowClient

    spec, store, summary, lines, tmp, url, wall = tracked_sweep
    assert summary.done == summary.total == 2 and summary.failed == 0, lines
    said = [ln for ln in lines if "tracker " in ln and " failed " in ln]
    assert len(said) == 1 and f"tracker mlflow ({url}) failed" in said[0], said
    # It was live before it went: the server's own store holds the runs it was sent.
    served = MlflowClient(f"sqlite:///{tmp / 'server.db'}")
    exp = served.get_experiment_by_name("served")
    assert exp is not None and served.search_runs([exp.experiment_id])


def test_mlflow_runs_table_has_one_row_per_cell_with_tags_params_and_epoch_points(tracked_sweep):
    import mlflow
    from mlflow import MlflowClient

    spec, store, _, _, tmp, _, _ = tracked_sweep
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    trials, epochs = _cells(store)
    mlflow.set_tracking_uri(uri)
    try:
        table = mlflow.search_runs(experiment_names=["trk"])  # the runs table the MLflow UI shows
    finally:
        mlflow.set_tracking_uri(None)
    assert len(table) == len(trials) and set(table["tags.cell_id"]) == set(trials.index)
    labels = _labels(spec)
    client = MlflowClient(uri)
    for r in table.to_dict("records"):
        t = trials.loc[r["tags.cell_id"]]
        assert r["tags.mlflow.runName"] == labels[r["tags.cell_id"]] and r["status"] == "FINISHED"
        assert (r["tags.sweep"], r["tags.ticket_method"], r["tags.dataset"], r["tags.regime"]) == \
            ("trk", t.ticket_method, t.dataset, t.regime)
        assert float(r["tags.sparsity"]) == pytest.approx(t.target_sparsity)
        assert (r["tags.seed"], r["tags.data_fraction"], r["tags.pretraining"]) == (str(t.seed), "1", "ST")
        assert r["params.regime.epochs"] == "2" and r["params.regime.optimizer.lr"] == "0.01"
        assert r["metrics.test_sa"] == pytest.approx(t.sa) and r["metrics.test_ra"] == pytest.approx(t.ra)
        steps = [m.step for m in client.get_metric_history(r["run_id"], "train_loss")]
        assert steps == epochs[r["tags.cell_id"]]  # one point per stored epoch row, at step = epoch


def test_wandb_offline_holds_one_run_per_cell_with_tags_and_epoch_points(tracked_sweep):
    from trackers_read import wandb_runs

    spec, store, _, _, tmp, _, _ = tracked_sweep
    trials, epochs = _cells(store)
    runs = wandb_runs(tmp / "wandb")
    by_cell = {r["config"]["tags"]["cell_id"]: r for r in runs}
    assert len(runs) == len(trials) and set(by_cell) == set(trials.index)
    labels = _labels(spec)
    for cid, r in by_cell.items():
        t = trials.loc[cid]
        assert r["name"] == labels[cid] and r["group"] == "trk" and r["job_type"] == "main" and r["exit_code"] == 0
        assert f"cell_id={cid}" in r["tags"] and f"ticket_method={t.ticket_method}" in r["tags"]
        assert r["config"]["params"]["regime.epochs"] == "2"
        assert sorted(h["epoch"] for h in r["history"] if "train_loss" in h) == epochs[cid]
        assert r["summary"]["test_sa"] == pytest.approx(t.sa) and r["summary"]["status"] == "done"


def test_tensorboard_holds_one_run_folder_per_cell_with_hparams_and_epoch_points(tracked_sweep):
    from raydw.trackers.events import hparams, scalars

    spec, store, _, _, tmp, _, _ = tracked_sweep
    trials, epochs = _cells(store)
    folders = sorted(p for p in (tmp / "tb" / "trk").iterdir() if p.is_dir())
    assert len(folders) == len(trials)
    labels = _labels(spec)
    for f in folders:
        hp = hparams(f)
        cid = hp["cell_id"]
        t = trials.loc[cid]
        assert f.name.endswith(cid) and f.name.startswith(labels[cid].split()[0])
        assert (hp["ticket_method"], hp["dataset"], hp["regime"], hp["seed"]) == (t.ticket_method, t.dataset, t.regime, str(t.seed))
        s = scalars(f)
        assert sorted(s["train_loss"]) == epochs[cid]
        assert list(s["test/sa"].values()) == [pytest.approx(t.sa, abs=1e-6)]
