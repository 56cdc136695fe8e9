"""One tiny real sweep with every tracker on at once (conftest `tracked_sweep`, which test_sweep_ray reads too: the Ray
cost is paid once): MLflow (a SQLite store, and an `mlflow server` on loopback that is killed mid-sweep), W&B offline
and TensorBoard each hold one run per cell with its tags, its end state (the two cells of the diverging regime
failed) and as many epoch points as the store's epochs table; the killed server is said once and fails no cell."""
from __future__ import annotations

import pytest

from raydw.findings import results

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _cells(store: str):
    """The store's trials rows by cell id, and each cell's stored epoch numbers (the source of truth)."""
    trials = results.load(store).set_index("cell_id")
    epochs = results.load(store, "epochs")
    by_cell = epochs.groupby("cell_id").epoch.apply(sorted).to_dict()
    return trials, {c: by_cell.get(c, []) for c in trials.index}  # a cell that diverged in its first epoch has none


def _labels(spec) -> dict[str, str]:
    from raydw.cells import expand

    return {c.cell_id: c.label() for c in expand(spec)}


def test_the_killed_server_fails_no_cell_and_is_said_once(tracked_sweep):
    from mlflow import MlflowClient

    spec, store, summary, lines, tmp, url, wall = tracked_sweep
    assert summary.total == 4 and summary.done == 2 and summary.failed == 2, lines
    failed = results.load(store).query("status == 'failed'")
    assert set(failed.regime) == {"boom"} and failed.error.str.startswith("training loss is").all()  # none by the server
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
        assert r["tags.mlflow.runName"] == labels[r["tags.cell_id"]]
        assert r["status"] == ("FINISHED" if t.status == "done" else "FAILED") and r["tags.status"] == t.status
        assert (r["tags.sweep"], r["tags.ticket_method"], r["tags.dataset"], r["tags.regime"]) == \
            ("trk", t.ticket_method, t.dataset, t.regime)
        assert float(r["tags.sparsity"]) == pytest.approx(t.target_sparsity)
        assert (r["tags.seed"], r["tags.data_fraction"], r["tags.pretraining"]) == (str(t.seed), "1", "ST")
        steps = [m.step for m in client.get_metric_history(r["run_id"], "train_loss")]
        assert steps == epochs[r["tags.cell_id"]]  # one point per stored epoch row, at step = epoch
        if t.status == "failed":
            continue
        assert r["params.regime.epochs"] == "2" and r["params.regime.optimizer.lr"] == "0.01"
        assert r["metrics.test_sa"] == pytest.approx(t.sa) and r["metrics.test_ra"] == pytest.approx(t.ra)


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
        assert r["name"] == labels[cid] and r["group"] == "trk" and r["job_type"] == "main"
        assert r["exit_code"] == (0 if t.status == "done" else 1) and r["summary"]["status"] == t.status
        assert f"cell_id={cid}" in r["tags"] and f"ticket_method={t.ticket_method}" in r["tags"]
        assert sorted(h["epoch"] for h in r["history"] if "train_loss" in h) == epochs[cid]
        if t.status == "done":
            assert r["config"]["params"]["regime.epochs"] == "2" and r["summary"]["test_sa"] == pytest.approx(t.sa)


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
        assert sorted(s.get("train_loss", {})) == epochs[cid]
        if t.status == "done":
            assert list(s["test/sa"].values()) == [pytest.approx(t.sa, abs=1e-6)]
