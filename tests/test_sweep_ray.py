"""A real Ray Tune + Ray Train sweep of a few cells writes the store; a rerun adds no row."""
from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest

from raydw.findings import results

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def swept(tracked_sweep):
    """(spec, store, summary, progress lines) of the session's tracked tiny sweep (conftest): TINY_SPEC's cells and
    two whose loss diverges, started from the model `raydw pretrain` trained for the session (the pretrain test below
    checks that link)."""
    spec, store, summary, lines, *_ = tracked_sweep
    return spec, store, summary, lines


def test_every_cell_gets_one_trials_row(swept):
    spec, store, summary, _ = swept
    df = results.load(store)
    assert summary.total == 4 and len(df) == 4 and df.cell_id.is_unique


def test_finished_cells_have_real_metrics_in_unit_range(swept):
    _, store, _, _ = swept
    done = results.load(store).query("status == 'done'")
    assert len(done) == 2
    for col in ("sa", "ra", "sa_at_sa_best", "sa_last"):
        assert done[col].between(0, 1).all(), col
    assert (done.sa > 0.3).all()  # real training on real digits, well above chance (0.1)
    assert set(done.ticket_method) == {"dense", "omp"}
    assert (done.pretraining_kind == "standard").all()  # from the stored pre-trained model's row
    assert done.torch_version.notna().all() and done.wall_s.gt(0).all()


def test_finished_cells_store_the_per_example_outcomes_behind_their_accuracies(swept):
    from raydw import outcomes

    _, store, _, _ = swept
    done = results.load(store).query("status == 'done'")
    for r in done.to_dict("records"):
        n = r["test_n"]
        assert n == 360  # the digits test set
        clean = outcomes.unpack(r[outcomes.column("clean", "sa_best")], n)
        assert clean.mean() == pytest.approx(r["sa"]) and r["amp"] == "fp32" and pd.isna(r["final_attack"])
        robust = r[outcomes.column("robust", "ra_best")] or r[outcomes.column("robust", "sa_best")]
        assert outcomes.unpack(robust, n).mean() == pytest.approx(r["ra"])
        assert outcomes.unpack(r[outcomes.column("robust", "last")], n).mean() == pytest.approx(r["ra_last"])


def test_diverging_cells_are_failed_with_their_reason(swept):
    _, store, _, _ = swept
    failed = results.load(store).query("status == 'failed'")
    assert set(failed.regime) == {"boom"}
    assert failed.error.str.contains("training loss is").all()


def test_epochs_table_has_one_row_per_cell_and_epoch(swept):
    _, store, _, _ = swept
    ep = results.load(store, "epochs")
    done = results.load(store).query("status == 'done'")
    assert len(ep[ep.cell_id.isin(done.cell_id)]) == 2 * 2
    assert not ep.duplicated(["cell_id", "epoch"]).any()


def test_mask_sparsity_matches_the_request_within_one_weight_per_layer(swept):
    _, store, _, _ = swept
    m = results.load(store, "masks").iloc[0]
    layers = len(json.loads(m.layer_density))
    assert abs(m.n_kept - (1 - m.target_sparsity) * m.n_prunable) <= layers
    trial = results.load(store).query("ticket_method == 'omp' and status == 'done'").iloc[0]
    assert trial.mask_id == m.mask_id and trial.sparsity == pytest.approx(m.sparsity)


def test_duckdb_reads_the_store_directly(swept):
    import duckdb

    _, store, _, _ = swept
    n = duckdb.sql(f"select count(*) from read_parquet('{store}/trials/*.parquet') where status = 'done'").fetchall()[0][0]
    assert n == 2


def _compacted(store: str) -> bool:
    return all([f[:5] for f in os.listdir(os.path.join(store, t))] == ["part-"] for t in ("trials", "epochs"))


def test_the_sweep_compacts_its_finished_cells_at_its_end(swept):
    _, store, _, lines = swept
    said = [ln for ln in lines if ln.startswith("compacted finished cells: ")]
    assert len(said) == 1 and re.fullmatch(r"compacted finished cells: trials 4 files -> 1, epochs \d files -> 1 \(\d+\.\d s\)",
                                           said[0]), said
    assert _compacted(store)  # every cell has its trials row (done or failed): one part per table, nothing else


def test_rerun_runs_only_failed_cells_and_adds_no_row(swept):
    from raydw.run.sweep import run_sweep

    spec, store, _, _ = swept
    before = results.load(store)
    said: list[str] = []
    # Without its trackers: the test_trackers_ray checks count one tracked run per cell of the first sweep.
    again = run_sweep(spec.model_copy(update={"trackers": []}), storage=store, out=said.append)
    after = results.load(store)
    assert again.ran == 2  # the two failed cells are retried, the done ones are not (their rows are in the part)
    assert any("4 cells, 2 already done, 2 to run" in ln for ln in said) and _compacted(store)  # the retries' new files merged at its end
    assert len(after) == len(before) and after.cell_id.is_unique
    done_before = before.query("status == 'done'").set_index("cell_id").sa
    assert after.query("status == 'done'").set_index("cell_id").sa.equals(done_before)
    # The retried cells fail for their own reason again (they once failed with a KeyError of the resume code).
    assert after.query("status == 'failed'").error.str.startswith("training loss is").all(), after.error.tolist()


def test_pretrain_command_trains_a_recipe_once_with_the_id_a_sweep_uses(tiny_pretrained, swept, tmp_path, capsys):
    from conftest import seed_pretrained

    from raydw.cells import pretrained_id
    from raydw.cli import main

    spec, sweep_store, _, lines = swept
    store, said = tiny_pretrained  # `raydw pretrain tiny.yaml` (conftest), the real command in its own process
    pid = pretrained_id(spec.pretrainings[0])
    row = results.load(str(store), "pretrained").set_index("pretrained_id").loc[pid]
    assert row["kind"] == "standard" and 0.3 < row["clean_acc"] <= 1 and (store / "weights" / f"{pid}.pt").exists()
    assert f"ST: {pid} standard clean {row['clean_acc']:.3f}" in said
    # The sweep started from a copy of that store and ran no pre-training job of its own: it found the model by the
    # id the command stored it under, so a sweep and `raydw pretrain` name a recipe alike.
    assert results.load(sweep_store, "pretrained").pretrained_id.tolist() == [pid]
    assert any(ln.startswith("running 4 cells on Ray Tune") for ln in lines), lines
    # A second `raydw pretrain` on a store that holds the model trains nothing (no Tune run is even started).
    (tmp_path / "spec.yaml").write_text((store.parent / "spec.yaml").read_text())
    again = seed_pretrained(store, tmp_path / "again")
    assert main(["pretrain", str(tmp_path / "spec.yaml"), "--storage", str(again)]) == 0
    assert not (again / "tune").exists() and f"ST: {pid}" in capsys.readouterr().out


def test_no_train_run_started_the_helper_actors_that_have_nothing_to_do_here(swept):
    """raydw.run.trials.Trainer: no Train run starts a DatasetManager (raydw passes no Ray Datasets), nor, where Ray's
    state API cannot be served (this install has no `ray[default]`), a PlacementGroupCleaner; each was a Python process
    importing Ray in every run. It reads this session's actor table, every Train run of it so far."""
    from ray._private.state import actors

    from raydw.run.trials import state_api_served

    names = sorted({a["ActorClassName"] for a in actors().values()})
    assert "TrainController" in names and "RayTrainWorker" in names, names
    assert "DatasetManager" not in names, names
    assert "PreemptionWatcher" not in names, names  # off by raydw.run.cluster.RAY_ENV: it only logs node drains
    assert ("PlacementGroupCleaner" in names) == state_api_served(), names  # absent with raydw's own install


def test_a_train_run_larger_than_the_local_ray_is_refused_not_left_waiting(ray_session, monkeypatch):
    from raydw.run.cluster import check_fits as _check_fits
    from raydw.spec import SpecError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    imp8 = {"workers_per_cell": 8, "cpus_per_worker": 12, "gpus_per_worker": 1}
    with pytest.raises(SpecError, match=r"IMP ST needs 96 CPU \(Ray has 2\), 8 GPU \(Ray has 0\) on this machine's Ray"):
        _check_fits(imp8, "IMP ST", None, print)
    said: list[str] = []
    _check_fits(imp8, "IMP ST", "auto", said.append)  # a cluster: the autoscaler may add the node
    assert said and "waits until the autoscaler adds a node" in said[0]
    _check_fits({"workers_per_cell": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}, "a cell", None, print)  # fits
