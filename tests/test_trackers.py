"""Trackers without Ray: the spec and --tracker refuse bad input naming the valid choices, an absent tracker package
is refused before Ray starts with its install command, and the callback feeds one run per cell from the store
(a pack's cells in order, a resumed cell continued, not repeated)."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import yaml

from raydw import trackers
from raydw.run.jobs import CellJob, PackJob, RunContext
from raydw.run.tuner import trial_jobs
from raydw.spec import ResourceSpec, SpecError, parse_spec


@pytest.fixture
def spec_dict(tiny_spec_text):
    return yaml.safe_load(tiny_spec_text)


def _problem(d: dict) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    return str(e.value)


def test_spec_trackers_take_a_kind_or_a_mapping_and_name_the_valid_kinds(spec_dict):
    spec_dict["trackers"] = ["mlflow", {"kind": "tensorboard", "logdir": "tb"}]
    t = parse_spec(spec_dict).trackers
    assert [x.kind for x in t] == ["mlflow", "tensorboard"] and t[1].logdir == "tb" and t[0].experiment is None
    spec_dict["trackers"] = [{"kind": "comet"}]
    assert "at trackers.0: 'kind' must be one of 'mlflow', 'wandb', 'tensorboard'; got 'comet'" in _problem(spec_dict)
    spec_dict["trackers"] = [{"logdir": "tb"}]
    assert "at trackers.0: 'kind' must be one of mlflow, wandb, tensorboard; missing" in _problem(spec_dict)
    spec_dict["trackers"] = [{"kind": "wandb", "mode": "off"}]
    assert "at trackers.0.wandb.mode: Input should be 'online', 'offline' or 'disabled'; got 'off'" in _problem(spec_dict)
    spec_dict["trackers"] = [{"kind": "mlflow", "uri": "x"}]
    assert "at trackers.0.mlflow.uri: unknown field" in _problem(spec_dict)


def test_tracker_flag_reads_kind_and_target():
    assert trackers.from_flag("mlflow:http://127.0.0.1:5000").tracking_uri == "http://127.0.0.1:5000"
    assert trackers.from_flag("wandb:proj").project == "proj" and trackers.from_flag("wandb").project is None
    assert trackers.from_flag("tensorboard:./tb").logdir == "./tb"
    with pytest.raises(SpecError, match="--tracker comet: the kind must be one of mlflow, wandb, tensorboard"):
        trackers.from_flag("comet")


def test_cli_refuses_a_bad_tracker_flag_and_an_absent_package_with_exit_2_before_ray(tmp_path, capsys, monkeypatch,
                                                                                     spec_dict):
    from raydw.cli import main

    store = tmp_path / "store"
    spec_dict["storage"] = str(store)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec_dict))
    assert main(["sweep", str(tmp_path / "s.yaml"), "--tracker", "comet"]) == 2
    assert "the kind must be one of mlflow, wandb, tensorboard" in capsys.readouterr().err
    # An absent package: the real import check, pointed at a module that is not installed.
    monkeypatch.setitem(trackers.MODULES, "wandb", "raydw_no_such_wandb")
    assert main(["sweep", str(tmp_path / "s.yaml"), "--tracker", "wandb:proj"]) == 2
    err = capsys.readouterr().err
    assert "trackers.0 (wandb): the raydw_no_such_wandb package is not installed; pip install -e '.[wandb]'" in err
    spec_dict["trackers"] = ["tensorboard", "wandb"]  # from the spec, and through run_sweep (not only the CLI)
    from raydw.run import sweep

    def no_ray(*a, **k):  # another test of the session may have started Ray: what counts is that this sweep did not
        raise AssertionError("the sweep connected to Ray before refusing its trackers")

    monkeypatch.setattr(sweep, "connect", no_ray)
    with pytest.raises(SpecError, match=r"trackers\.1 \(wandb\).*pip install -e '\.\[wandb\]'"):
        sweep.run_sweep(parse_spec(spec_dict), out=lambda s: None)
    assert not store.exists()  # refused before Ray started and before the store was made


def _trial(tid: str, config: dict):
    """What a Tune Trial shows a callback: its id and config (the callback reads nothing else)."""
    return SimpleNamespace(trial_id=tid, config=config)


def _epoch(store, cid: str, e: int) -> None:
    store.write_row("epochs", {"cell_id": cid, "epoch": e, "lr": 0.01, "train_loss": 2.0 - e, "train_acc": 0.1 * e,
                               "val_sa": 0.2 + e / 10, "val_ra": None}, name=f"{cid}.e{e:04d}")


def _done(store, cid: str, epochs: int, status: str = "done") -> None:
    store.write_row("trials", {"cell_id": cid, "status": status, "sa": 0.5, "ra": 0.1, "sa_at_sa_best": 0.5,
                               "epochs": epochs, "finished_at": dt.datetime.now(dt.timezone.utc)})


def _train_loss_events(folder) -> list[int]:
    """Every train_loss point written, duplicates included (scalars() keeps one per step)."""
    from raydw.trackers.events import events

    return sorted(e.step for e in events(folder) for v in e.summary.value if v.tag == "train_loss")


def test_callback_feeds_a_packs_cells_in_order_and_continues_a_resumed_cell(tmp_path, spec_dict):
    from raydw.cells import expand
    from raydw.store import Store
    from raydw.trackers.adapter import Tracked
    from raydw.trackers.runinfo import run_info
    from raydw.trackers.tensorboard_sink import run_dir

    spec = parse_spec(spec_dict)
    store = Store(str(tmp_path / "store"))
    a, b = expand(spec)
    tb = [trackers.from_flag(f"tensorboard:{tmp_path / 'tb'}")]
    run = RunContext(storage=store.uri, sweep="s", resources=spec.resources, data_root=None, git_commit=None)
    job = lambda c: CellJob(c, run, None, 0.0, "ix", None)  # noqa: E731
    said: list[str] = []
    cb = trackers.callbacks(tb, "s", trial_jobs, said.append)[0]
    cb.setup()
    pack = _trial("t1", {"job": PackJob((job(a), job(b)))})
    cb.on_trial_start(0, [], pack)
    for e in range(2):
        _epoch(store, a.cell_id, e)
        cb.on_trial_result(0, [], pack, {})
    _done(store, a.cell_id, 2)
    _epoch(store, b.cell_id, 0)
    _done(store, b.cell_id, 1, "failed")
    cb.on_trial_complete(0, [], pack)
    cb.on_experiment_end([])
    folder = lambda c: run_dir(str(tmp_path / "tb"), run_info(Tracked(c, "main", None, "s", store.uri)))  # noqa: E731
    assert _train_loss_events(folder(a)) == [0, 1] and _train_loss_events(folder(b)) == [0] and not said
    # A rerun retries the failed cell b, which resumes at epoch 1: its stored (old) row does not close the new run,
    # and its folder gets epoch 1 only (epoch 0 is there already).
    cb = trackers.callbacks(tb, "s", trial_jobs, said.append)[0]
    cb.setup()
    cell = _trial("t2", {"job": job(b)})
    cb.on_trial_start(0, [], cell)
    _epoch(store, b.cell_id, 1)
    _done(store, b.cell_id, 2)
    cb.on_trial_complete(0, [], cell)
    cb.on_experiment_end([])
    assert _train_loss_events(folder(b)) == [0, 1] and not said


def test_a_cell_stored_before_the_tracker_thread_read_its_start_is_closed_with_its_own_row(tmp_path, spec_dict):
    """The tracker thread builds its trackers first (importing MLflow takes seconds) and reads the store when it gets
    to an event: a cell that stored its row meanwhile had that row taken for an older run's, and was closed 'failed'
    without it (seen once as a flaky pack test under load). A row counts as older only if it finished before the
    trial started."""
    import threading

    from raydw.cells import expand
    from raydw.store import Store
    from raydw.trackers.callback import TrackerCallback

    class Recorder:  # what a tracker is handed, recorded (the real sinks are tested above and on Ray)
        name = "recorder"

        def __init__(self):
            self.log = []

        def open(self, info):
            self.log.append(("open", info.cell_id))
            return info.cell_id, 0

        def epoch(self, handle, epoch, row):
            self.log.append(("epoch", handle, epoch))

        def finish(self, handle, row, status):
            self.log.append(("finish", handle, status))

        def close(self):
            pass

    a, b = expand(parse_spec(spec_dict))
    store = Store(str(tmp_path / "store"))
    _done(store, b.cell_id, 1, "failed")  # b failed in an earlier run: this run retries it
    run = RunContext(storage=store.uri, sweep="s", resources=ResourceSpec(), data_root=None, git_commit=None)
    rec, built = Recorder(), threading.Event()
    cb = TrackerCallback([("recorder", lambda: built.wait(30) and rec)], "s", print, trial_jobs)
    cb.setup()
    trial = _trial("t1", {"job": PackJob((CellJob(a, run, None, 0.0, "ix", None), CellJob(b, run, None, 0.0, "ix", None)))})
    cb.on_trial_start(0, [], trial)
    for cell in (a, b):  # both cells train and store their rows before the tracker thread gets to the start
        _epoch(store, cell.cell_id, 0)
        _done(store, cell.cell_id, 1)
    cb.on_trial_complete(0, [], trial)
    built.set()
    cb.on_experiment_end([])
    assert [e for e in rec.log if e[0] == "finish"] == [("finish", a.cell_id, "done"), ("finish", b.cell_id, "done")]
    assert ("epoch", a.cell_id, 0) in rec.log and ("epoch", b.cell_id, 0) in rec.log


def test_tuning_trials_are_nested_under_their_group_in_mlflow(tmp_path, spec_dict):
    """A tuning trial's config (raydw.run.tuning) becomes its trial cell, run under one parent run per group."""
    from mlflow import MlflowClient

    from raydw.cells import tune_groups
    from raydw.store import Store

    spec_dict["tune"] = {"enabled": True, "num_samples": 2, "space": {"lr": {"kind": "loguniform", "low": 1e-3, "high": 0.1}}}
    g = tune_groups(parse_spec(spec_dict))[0]
    store = Store(str(tmp_path / "store"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cb = trackers.callbacks([trackers.from_flag(f"mlflow:{uri}")], "s", trial_jobs, print)[0]
    cb.setup()
    ids = []
    for i, lr in enumerate((0.01, 0.02)):
        run = RunContext(storage=store.uri, sweep="s", resources=ResourceSpec(), data_root=None, git_commit=None)
        cfg = {"job": CellJob(g.base, run, None, 0.0, "ix", None), "group": g, "fields": ["lr"], "lr": lr}
        cid = g.trial_cell({"lr": lr}).cell_id
        ids.append(cid)
        trial = _trial(f"t{i}", cfg)
        cb.on_trial_start(0, [], trial)
        _epoch(store, cid, 0)
        _done(store, cid, 1)
        cb.on_trial_complete(0, [], trial)
    cb.on_experiment_end([])
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("s").experiment_id])
    parent = [r for r in runs if r.data.tags.get("tune_group") == g.tune_id]
    trials = [r for r in runs if r.data.tags.get("phase") == "tune"]
    assert len(parent) == 1 and parent[0].info.run_name == f"tune {g.label()}"
    assert sorted(r.data.tags["cell_id"] for r in trials) == sorted(ids)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id and r.data.params["tune_trial.recipe.lr"]
               for r in trials)
    assert sorted(float(r.data.params["tune_trial.recipe.lr"]) for r in trials) == [0.01, 0.02]
