"""`raydw status --spec` and `raydw results` on a tuned sweep's store (docs/tuning.md), without Ray.

The store is written with the store's own API: tuning trials (phase "tune") of the tuned groups, one stored recipe,
the `main` rows of the tuned group's cells under their tuned ids, and rows of an earlier untuned run of the grid.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from raydw.cells import Cell, expand, recipe_id, tune_groups
from raydw.cli import main
from raydw.spec import parse_spec
from raydw.planning.plan import StoreView
from raydw.reporting.status import collect, summary
from raydw.store import SCHEMAS, TRIALS, Store, config_json

ADV = {"kind": "adversarial", "epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.02, "milestones": [1]},
       "attack": {"eps": 0.1, "step_size": 0.04, "steps": 2}}
TUNE = {"enabled": True, "num_samples": 2, "seed": 0, "space": {"lr": {"kind": "loguniform", "low": 0.005, "high": 0.05}}}
REC = {"lr": 0.0317}


def _spec_dict(text: str) -> dict:
    d = yaml.safe_load(text)
    d["regimes"]["adv"] = ADV
    d["tune"] = TUNE
    return d


def _row(c: Cell, status: str = "done", sa: float | None = 0.91, ra: float | None = 0.12, **more) -> dict:
    """A trials row as a finished cell writes it (raydw.run.rows), with realistic numbers."""
    r = {k: v for k, v in c.to_dict().items() if k in TRIALS.names}
    r.update(sweep="tiny", status=status, sparsity=c.target_sparsity, train_images=5000,
             sa=sa, ra=ra, sa_at_sa_best=sa, ra_at_sa_best=ra, sa_at_ra_best=sa, ra_at_ra_best=ra,
             sa_last=sa, ra_last=ra, val_sa_best=sa, val_ra_best=ra, best_epoch_sa=2, best_epoch_ra=1,
             epochs=c.regime_spec.epochs, wall_s=42.5, train_s=38.0, device="cpu (1 threads)", workers=1,
             config=config_json(c.canonical), finished_at=dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc),
             error=None if status == "done" else "RuntimeError: loss is nan")
    r.update(more)
    return r


@pytest.fixture
def tuned(tmp_path, tiny_spec_text):
    """(spec, store, recipes, tuned cells): the standard group tuned (2 trials, recipe stored), the adv group half-way
    (1 of 2 trials); the standard group's cells done; an earlier untuned run of the whole grid in the same store."""
    spec = parse_spec(_spec_dict(tiny_spec_text))
    store = Store(str(tmp_path / "store"))
    groups = {g.base.regime: g for g in tune_groups(spec)}
    std, adv = groups["standard"], groups["adv"]
    for g, rec, val in ((std, {"lr": 0.0112}, 0.87), (std, REC, 0.93), (adv, {"lr": 0.009}, 0.41)):
        t = g.trial_cell(rec)
        store.write_row("trials", _row(t, sa=val - 0.01, val_sa_best=val, val_ra_best=val / 2))
    store.write_row("recipes", {
        "tune_id": std.tune_id, "sweep": "tiny", "pretraining": "ST", "pretrained_id": std.base.pretrained_id,
        "dataset": "digits", "regime": "standard", "regime_kind": "standard", "data_fraction": 1.0,
        "recipe": config_json(REC), "recipe_id": recipe_id(REC), "metric": "val_sa", "value": 0.93, "trials": 2,
        "failed": 0, "best_cell_id": std.trial_cell(REC).cell_id, "sampler": "TPESampler", "optuna_seed": 0,
        "startup_trials": 1, "space": json.dumps(TUNE["space"]), "base_regime": config_json(std.base.regime_spec.model_dump(mode="json")),
        "optuna_version": "4.1.0", "finished_at": dt.datetime(2026, 11, 25, 11, 0, tzinfo=dt.timezone.utc)})
    recipes = StoreView.read(store, ("recipes",)).recipes
    cells = expand(spec, recipes)
    done = [c for c in cells if c.recipe_id]
    for c in done:
        store.write_row("trials", _row(c))
    for c in expand(spec):  # an untuned run of the same grid: its ids are the waiting cells' provisional ids
        store.write_row("trials", _row(c, sa=0.5))
    return spec, store, recipes, cells, done


def test_status_applies_the_stored_recipes_and_shows_cells_waiting_for_one(tuned):
    spec, store, recipes, cells, done = tuned
    waiting = [c for c in cells if c.tune_id and not c.recipe_id]
    assert len(done) == 2 and len(waiting) == 2 and len(cells) == 4  # dense + omp, per regime
    st = collect(store.uri, spec)
    # the tuned cells count (under their tuned ids); the untuned run's rows do not stand in for the waiting cells
    assert (st.total, st.done, st.missing) == (4, 2, 2) and st.waiting == 2
    assert st.outside_spec == 4  # the 4 untuned rows; the 3 tuning trials are not main rows at all
    assert (st.groups, st.groups_tuned, st.groups_spent, st.tune_trials, st.tune_budget) == (2, 1, 0, 3, 4)
    text = summary(store.uri, spec)
    assert "spec: 4 cells, 2 missing" in text and "2 done" in text
    assert "1 tuned (recipe stored), 1 still to tune; 3 of 4 tuning trials stored" in text
    assert "2 of the missing cells are waiting for a tuned recipe (tune first)" in text


def test_status_reports_a_group_whose_every_trial_failed(tuned):
    spec, store, *_ = tuned
    adv = next(g for g in tune_groups(spec) if g.base.regime == "adv")
    store.write_row("trials", _row(adv.trial_cell({"lr": 0.049}), status="failed", sa=None, ra=None,
                                   val_sa_best=None, val_ra_best=None))
    store.write_row("trials", _row(adv.trial_cell({"lr": 0.009}), status="failed", sa=None, ra=None,
                                   val_sa_best=None, val_ra_best=None))
    text = summary(store.uri, spec)
    assert "0 still to tune; 4 of 4 tuning trials stored; 1 group(s) spent their budget without a recipe" in text


def test_status_command_with_a_tuned_spec_file(tuned, tmp_path, tiny_spec_text, capsys):
    _, store, *_ = tuned
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(_spec_dict(tiny_spec_text)))
    assert main(["status", store.uri, "--spec", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 done" in out and "waiting for a tuned recipe" in out and "--phase tune" in out


def test_an_untuned_spec_status_is_unchanged(tmp_path, tiny_spec_text):
    spec = parse_spec(yaml.safe_load(tiny_spec_text))
    store = Store(str(tmp_path / "s"))
    store.write_row("trials", _row(expand(spec)[0]))
    st = collect(store.uri, spec)
    assert (st.total, st.done, st.groups, st.waiting) == (2, 1, None, 0) and "tune:" not in summary(store.uri, spec)


def test_results_offers_every_stored_table(tuned, capsys):
    _, store, *_ = tuned
    for table in SCHEMAS:
        assert main(["results", store.uri, "--table", table]) == 0, table
    capsys.readouterr()
    assert main(["results", store.uri, "--table", "recipes"]) == 0
    out = capsys.readouterr().out
    assert recipe_id(REC) in out and '{"lr":0.0317}' in out and "val_sa" in out and "base_regime" not in out
    assert main(["results", store.uri, "--table", "searches"]) == 0
    assert "(no rows in searches)" in capsys.readouterr().out


def test_results_phase_picks_main_rows_tuning_trials_or_all(tuned, capsys):
    spec, store, recipes, cells, done = tuned
    trial_ids = {g.trial_cell(r).cell_id for g in tune_groups(spec) for r in
                 ([{"lr": 0.0112}, REC] if g.base.regime == "standard" else [{"lr": 0.009}])}

    def ids(*args) -> set[str]:
        assert main(["results", store.uri, *args, "--columns", "cell_id"]) == 0
        return set(capsys.readouterr().out.split()[1:])

    assert ids() == ids("--phase", "main") == {c.cell_id for c in done} | {c.cell_id for c in expand(spec)}
    assert ids("--phase", "tune") == trial_ids
    assert ids("--phase", "all") == trial_ids | ids()
    assert main(["results", store.uri, "--phase", "tune"]) == 0
    out = capsys.readouterr().out
    assert '{"lr":0.0317}' in out and "val_sa_best" in out and "recipe_id" in out  # each trial's candidate recipe
    assert main(["results", store.uri, "--phase", "tune", "--where", f"recipe={config_json(REC)}", "--columns", "cell_id"]) == 0
    assert capsys.readouterr().out.split()[1:] == [next(g for g in tune_groups(spec) if g.base.regime == "standard").trial_cell(REC).cell_id]


def test_results_bad_table_or_phase_names_the_choices(tuned, capsys):
    _, store, *_ = tuned
    for args in (["--table", "recipe"], ["--phase", "tuning"]):
        with pytest.raises(SystemExit) as e:
            main(["results", store.uri, *args])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(t in err for t in SCHEMAS) and "'main', 'tune', 'all'" in err
    assert main(["results", store.uri, "--table", "recipes", "--phase", "tune"]) == 2
    assert "--phase applies to --table trials only" in capsys.readouterr().err
