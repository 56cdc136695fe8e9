"""Optuna-tuned dense baselines: the `tune:` spec, recipes applied to every cell of a group, and a real tuned sweep."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydw.plan import Plan
import yaml

from raydw import results
from raydw.cells import apply_recipe, expand, recipe_id, tune_groups
from raydw.spec import SpecError, parse_spec
from raydw.store import Store

ADV = {"kind": "adversarial", "epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.02, "milestones": [1]},
       "attack": {"eps": 0.1, "step_size": 0.04, "steps": 2}}
LR = {"kind": "loguniform", "low": 0.005, "high": 0.05}


def _spec(text: str, tune: dict | None = None, **edits):
    d = yaml.safe_load(text)
    d.update(edits)
    if tune is not None:
        d["tune"] = tune
    return parse_spec(d)


def _error(text: str, tune: dict, **edits) -> str:
    with pytest.raises(SpecError) as e:
        _spec(text, tune, **edits)
    return str(e.value)


# -- the spec ---------------------------------------------------------------------------------------
def test_tuning_is_off_by_default_and_leaves_cell_ids_alone(tiny_spec_text):
    plain = [c.cell_id for c in expand(_spec(tiny_spec_text))]
    off = _spec(tiny_spec_text, {"enabled": False, "space": {"lr": LR}})
    assert [c.cell_id for c in expand(off)] == plain
    assert tune_groups(off) == [] and all(c.tune_id is None and c.recipe_id is None for c in expand(off))


def test_attack_step_size_on_a_standard_regime_is_an_error_naming_the_field_and_the_choice(tiny_spec_text):
    msg = _error(tiny_spec_text, {"enabled": True, "space": {"attack_step_size": {"kind": "uniform", "low": 0.01, "high": 0.05}}},
                 regimes={"standard": yaml.safe_load(tiny_spec_text)["regimes"]["standard"], "adv": ADV})
    assert "tune.space.attack_step_size" in msg and "regime 'standard' is kind standard" in msg and "['adv']" in msg
    # restricted to the adversarial regime it is fine
    _spec(tiny_spec_text, {"enabled": True, "regimes": ["adv"],
                           "space": {"attack_step_size": {"kind": "uniform", "low": "1/255", "high": "4/255"}}},
          regimes={"standard": yaml.safe_load(tiny_spec_text)["regimes"]["standard"], "adv": ADV})


@pytest.mark.parametrize("tune, where, says", [
    ({"enabled": True, "space": {"epochs": {"kind": "loguniform", "low": 1, "high": 4}}}, "tune.space.epochs", "int or choice"),
    ({"enabled": True, "space": {"lr": {"kind": "loguniform", "low": 0, "high": 0.1}}}, "tune.space.lr", "low > 0"),
    ({"enabled": True, "space": {"lr": {"kind": "uniform", "low": 0.1, "high": 0.01}}}, "tune.space.lr", "low must be < high"),
    ({"enabled": True, "space": {"lr": {"kind": "choice"}}}, "tune.space.lr", "non-empty 'values'"),
    ({"enabled": True, "space": {"lr": {"kind": "gaussian", "low": 0.1, "high": 1}}}, "tune.space.lr.kind", "'choice'"),
    ({"enabled": True, "space": {"momentum": LR}}, "tune.space.momentum", "unknown field"),
    ({"enabled": True, "space": {}}, "(top level)", "give at least one of ['lr', 'weight_decay', 'attack_step_size', 'epochs']"),
    ({"enabled": True, "regimes": ["nope"], "space": {"lr": LR}}, "(top level)", "tune.regimes names 'nope'"),
    ({"enabled": True, "metric": "val_ra", "space": {"lr": LR}}, "(top level)", "tune.metric"),
])
def test_bad_tune_sections_name_the_field_and_what_is_valid(tiny_spec_text, tune, where, says):
    d = yaml.safe_load(tiny_spec_text)
    d["regimes"]["standard"]["validate_ra"] = False  # so val_ra cannot be scored
    msg = _error(yaml.safe_dump(d), tune)
    assert f"at {where}:" in msg and says in msg, msg


def test_tuning_with_the_extreme_search_is_refused(tiny_spec_text):
    msg = _error(tiny_spec_text, {"enabled": True, "space": {"lr": LR}}, search={"mode": "extreme"})
    assert "search.mode 'extreme' is not supported" in msg


# -- recipes applied to a group -----------------------------------------------------------------------
def _two_regime_spec(text: str, **tune):
    d = yaml.safe_load(text)
    d["regimes"]["adv"] = ADV
    return _spec(yaml.safe_dump(d), {"enabled": True, "space": {"lr": LR}, "num_samples": 3, **tune})


def test_groups_are_per_pretraining_dataset_regime_fraction_and_metric_follows_the_regime(tiny_spec_text):
    spec = _two_regime_spec(tiny_spec_text)
    groups = tune_groups(spec)
    assert sorted((g.base.regime, g.metric, g.base.ticket_method, g.base.seed) for g in groups) == \
        [("adv", "val_ra", "dense", 1), ("standard", "val_sa", "dense", 1)]
    assert len({g.tune_id for g in groups}) == 2
    # a new budget, space or sampler seed is a new group (tuned again), the sweep's name is not
    other = {g.tune_id for g in tune_groups(_two_regime_spec(tiny_spec_text, seed=1))}
    assert other.isdisjoint(g.tune_id for g in groups)
    assert {g.tune_id for g in tune_groups(_two_regime_spec(tiny_spec_text.replace("name: tiny", "name: x")))} == {g.tune_id for g in groups}


def test_a_recipe_is_held_fixed_for_the_dense_cell_and_every_ticket_of_its_group(tiny_spec_text):
    spec = _two_regime_spec(tiny_spec_text, regimes=["standard"])
    untuned = {(c.ticket_method, c.regime): c for c in expand(spec)}
    (g,) = tune_groups(spec)
    rec = {"lr": 0.0123}
    cells = {(c.ticket_method, c.regime): c for c in expand(spec, {g.tune_id: rec})}
    for m in ("dense", "omp"):
        c = cells[(m, "standard")]
        assert c.recipe_id == recipe_id(rec) and c.tune_id == g.tune_id and c.phase == "main"
        assert c.regime_spec.optimizer.lr == 0.0123
        assert json.loads(json.dumps(c.canonical))["tuned"] == {"tune_id": g.tune_id, "recipe_id": recipe_id(rec)}
        assert c.cell_id != untuned[(m, "standard")].cell_id  # tuned cells are honestly different cells
        assert c.regime_spec.optimizer.milestones == [1] and c.regime_spec.epochs == 2  # the rest as written
        # the regime not tuned keeps its cells (and ids) as written
        assert cells[(m, "adv")].cell_id == untuned[(m, "adv")].cell_id and cells[(m, "adv")].recipe_id is None
    # a group without a stored recipe keeps its regime but is marked as waiting for tuning
    assert untuned[("omp", "standard")].tune_id == g.tune_id and untuned[("omp", "standard")].recipe_id is None


def test_a_tuning_trial_is_the_group_dense_cell_with_the_candidate_under_its_own_id(tiny_spec_text):
    spec = _two_regime_spec(tiny_spec_text)
    g = next(g for g in tune_groups(spec) if g.base.regime == "adv")
    rec = {"lr": 0.031, "attack_step_size": 0.02, "epochs": 3.0, "weight_decay": 0}
    t = g.trial_cell(rec)
    main = {c.ticket_method: c for c in expand(spec, {g.tune_id: rec}) if c.regime == "adv"}
    assert t.phase == "tune" and t.ticket_method == "dense" and t.recipe_id == recipe_id(rec) == main["dense"].recipe_id
    assert t.cell_id not in {main["dense"].cell_id, g.base.cell_id}
    r = t.regime_spec
    assert (r.optimizer.lr, r.attack.step_size, r.epochs, r.optimizer.weight_decay) == (0.031, 0.02, 3, 0.0)
    assert t.canonical["tune_trial"]["recipe"] == {"attack_step_size": 0.02, "epochs": 3, "lr": 0.031, "weight_decay": 0.0}
    assert t.regime_spec == main["dense"].regime_spec  # the trial trained exactly what the cells then use
    with pytest.raises(ValueError, match="without an attack"):
        apply_recipe(next(g for g in tune_groups(spec) if g.base.regime == "standard").base.regime_spec, {"attack_step_size": 0.01})


def test_the_dense_cell_at_the_tuning_seed_reuses_the_best_trial_and_other_seeds_train(tmp_path, tiny_spec_text):
    from raydw.run.jobs import JobBuilder
    from raydw.run.tuning import reuse_best_trials
    from raydw.store import config_json

    spec = _spec(tiny_spec_text, {"enabled": True, "num_samples": 2, "space": {"lr": LR}}, seeds=[1, 2])
    (g,) = tune_groups(spec)
    rec = {"lr": 0.02}
    best, other = g.trial_cell(rec), g.trial_cell({"lr": 0.01})
    store = Store(str(tmp_path))
    for t, sa in ((best, 0.9), (other, 0.5)):
        store.write_row("trials", {"cell_id": t.cell_id, "status": "done", "phase": "tune", "tune_id": g.tune_id,
                                   "ticket_method": "dense", "seed": 1, "sa": sa, "sa_at_sa_best": sa, "val_sa_best": sa,
                                   "config": config_json(t.canonical)})
        for e in range(2):
            store.write_row("epochs", {"cell_id": t.cell_id, "epoch": e, "val_sa": sa - 0.1 * (1 - e)},
                            name=f"{t.cell_id}.e{e:04d}")
    store.write_row("recipes", {"tune_id": g.tune_id, "recipe": config_json(rec), "best_cell_id": best.cell_id})
    cells = Plan.of(spec, store).cells
    dense = {c.seed: c for c in cells if c.ticket_method == "dense"}
    lines: list[str] = []
    builder = JobBuilder(spec, store)
    assert reuse_best_trials(spec, store, cells, set(), builder, lines.append) == {dense[1].cell_id}  # seed 2 trains
    row = store.get("trials", dense[1].cell_id)
    assert (row["status"], row["sa"], row["phase"], row["reused_from"]) == ("done", 0.9, "main", best.cell_id)
    assert (row["recipe_id"], row["tune_id"]) == (dense[1].recipe_id, g.tune_id)
    assert json.loads(row["config"]) == json.loads(config_json(dense[1].canonical))
    ep = results.load(str(tmp_path), "epochs")
    assert ep[ep.cell_id == dense[1].cell_id].val_sa.round(6).tolist() == [0.8, 0.9]  # the best trial's curve
    assert "is this cell" in lines[0]
    # Already stored: nothing to do. A best trial whose run differs from the cell in anything (here its epochs): no reuse.
    assert reuse_best_trials(spec, store, cells, {dense[1].cell_id}, builder, lines.append) == set()
    changed = json.loads(store.get("trials", best.cell_id)["config"])
    changed["regime"]["epochs"] = 3
    store.write_row("trials", {**store.get("trials", best.cell_id), "config": config_json(changed)})
    assert reuse_best_trials(spec, store, cells, set(), builder, lines.append) == set()


def test_choose_takes_the_best_done_trial_and_scores_failures_zero():
    from raydw.run.tuning import FAILED_SCORE, choose, score

    rows = [{"cell_id": "a", "status": "done", "val_ra_best": 0.41}, {"cell_id": "b", "status": "failed", "val_ra_best": None},
            {"cell_id": "c", "status": "done", "val_ra_best": 0.57}, {"cell_id": "d", "status": "done", "val_ra_best": 0.57}]
    assert choose(rows, "val_ra")["cell_id"] == "c"  # a tie keeps the earlier trial
    assert score(rows[1], "val_ra") == FAILED_SCORE == 0.0 and score(rows[0], "val_ra") == 0.41
    assert choose([rows[1]], "val_ra") is None


# -- the store ----------------------------------------------------------------------------------------
def test_old_trials_rows_without_phase_read_as_main(tmp_path):
    store = Store(str(tmp_path))
    old = pa.table({"cell_id": ["old1"], "status": ["done"], "sa": [0.5]})  # written before the phase column
    (tmp_path / "trials").mkdir()
    pq.write_table(old, tmp_path / "trials" / "old1.parquet")
    store.write_row("trials", {"cell_id": "t1", "status": "done", "phase": "tune", "tune_id": "g"})
    store.write_row("trials", {"cell_id": "m1", "status": "done", "phase": "main"})
    assert sorted(results.load(str(tmp_path)).cell_id) == ["m1", "old1"]
    assert list(results.load(str(tmp_path), phase="tune").cell_id) == ["t1"]
    assert len(results.load(str(tmp_path), phase=None)) == 3
    assert list(results.load(str(tmp_path), columns=["cell_id"]).columns) == ["cell_id"]
    with pytest.raises(ValueError, match="phase"):
        results.load(str(tmp_path), phase="mian")


# -- a real tuned sweep ---------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_tuned_sweep_stores_trials_and_recipe_and_tickets_use_it(ray_session, tiny_store, tiny_spec_text):
    from raydw.run.sweep import run_sweep

    spec = _spec(tiny_spec_text, {"enabled": True, "num_samples": 2, "seed": 3, "space": {"lr": LR}})
    store = str(tiny_store)
    lines: list[str] = []
    summary = run_sweep(spec, storage=store, out=lines.append)
    assert summary.done == summary.total == 2, lines

    tune = results.load(store, phase="tune")
    assert len(tune) == 2 and set(tune.phase) == {"tune"} and set(tune.status) == {"done"}
    assert set(tune.ticket_method) == {"dense"} and tune.cell_id.is_unique
    lrs = [json.loads(c)["regime"]["optimizer"]["lr"] for c in tune.config]
    assert all(0.005 <= x <= 0.05 for x in lrs) and lrs[0] != lrs[1]  # Optuna proposed two recipes from the space

    (rec,) = results.load(store, "recipes").to_dict("records")
    (g,) = tune_groups(spec)
    assert rec["tune_id"] == g.tune_id == tune.tune_id.iloc[0] and rec["trials"] == 2 and rec["failed"] == 0
    assert rec["metric"] == "val_sa" and rec["value"] == pytest.approx(tune.val_sa_best.max())
    best = tune.loc[tune.val_sa_best.idxmax()]
    assert rec["best_cell_id"] == best.cell_id and rec["recipe_id"] == best.recipe_id and rec["optuna_seed"] == 3
    chosen = json.loads(rec["recipe"])["lr"]

    main = results.load(store)
    assert set(main.ticket_method) == {"dense", "omp"} and (main.phase == "main").all() and set(main.status) == {"done"}
    assert (main.recipe_id == rec["recipe_id"]).all() and (main.tune_id == g.tune_id).all()
    assert [json.loads(c)["regime"]["optimizer"]["lr"] for c in main.config] == [chosen, chosen]
    assert set(main.cell_id).isdisjoint(tune.cell_id)
    assert set(main.cell_id).isdisjoint(c.cell_id for c in expand(_spec(tiny_spec_text)))  # not the untuned cells
    ep = results.load(store, "epochs")
    assert set(ep.cell_id) == set(main.cell_id) | set(tune.cell_id)  # tuning trials trained like cells
    # The dense cell is the best trial run again, so it is that trial's rows, not a second training run.
    dense = main[main.ticket_method == "dense"].iloc[0]
    assert dense.reused_from == best.cell_id and dense.sa == best.sa and summary.ran == 1, lines
    assert any("is this cell" in s for s in lines), lines
    assert main[main.ticket_method == "omp"].reused_from.isna().all()

    # Rerun: nothing is tuned or run again.
    again = run_sweep(spec, storage=store, out=lambda s: None)
    assert again.ran == 0 and len(results.load(store, phase=None)) == 4
    assert results.load(store, "recipes").recipe_id.tolist() == [rec["recipe_id"]]
    # Resume: with the recipe row gone, the stored trials are the whole budget: the same recipe, no new trial.
    Store(store).fs.delete_file(Store(store).path("recipes", f"{g.tune_id}.parquet"))
    out: list[str] = []
    third = run_sweep(spec, storage=store, out=out.append)
    assert third.ran == 0 and len(results.load(store, phase=None)) == 4, out
    assert results.load(store, "recipes").recipe_id.tolist() == [rec["recipe_id"]]
    assert any("2 of 2 trials stored, 0 to run" in s for s in out), out
