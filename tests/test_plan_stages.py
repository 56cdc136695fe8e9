"""One plan, every stage: the dry run, `raydw status`, the cost plan, the input check, the end-of-sweep summary and
the sweep's own job list agree, on a store holding a bit of everything (Ray-free).

The store: pre-training ST stored, AT not; ST's IMP round 1 stored, round 2 not (AT's none); among ST's untuned
(standard-regime) cells one done, one failed, one stopped, the rest with no row; the adversarial regime tuned and
its groups without a recipe (their cells wait). Early stopping on and off: a stopped cell is final only when on.
"""
from __future__ import annotations

import re
import time

import pytest
import yaml

from raydw.reporting import status
from raydw.cells import pretrained_id
from raydw.planning.cost_source import source_jobs
from raydw.planning.dryrun import dry_run
from raydw.planning.inputs import missing_inputs
from raydw.planning.plan import Plan
from raydw.planning.schedule import sweep_tasks
from raydw.spec import parse_spec
from raydw.store import TRIALS, Store
from raydw.reporting.summary import end_of_sweep
from raydw.tickets.registry import get, params_json


def _spec(text: str, storage: str, early_stop: bool):
    d = yaml.safe_load(text)
    d["storage"] = storage
    d["pretrainings"].append({"name": "AT", "recipe": {"kind": "pgd_adversarial", "arch": "resnet_tiny", "dataset": "mnist5k",
                                                      "epochs": 1, "eps": 0.1, "pgd_steps": 2}})
    d["tickets"] = [{"method": "imp", "rounds": [1, 2], "imp": {"dataset": "mnist5k", "epochs_per_round": 1}},
                    {"method": "omp", "sparsities": [0.5]}]
    d["regimes"]["adversarial"] = {"kind": "adversarial", "epochs": 1, "batch_size": 32, "data_fractions": [1.0], "optimizer": {"lr": 0.01},
                                   "attack": {"eps": 0.1, "step_size": 0.05, "steps": 2}}
    d["tune"] = {"enabled": True, "num_samples": 2, "regimes": ["adversarial"], "space": {"lr": {"kind": "loguniform", "low": 0.001, "high": 0.1}}}
    if early_stop:
        d["early_stop"] = {"enabled": True}
    return parse_spec(d)


def _store(spec) -> tuple[Store, dict[str, str]]:
    store = Store(spec.storage)
    st = spec.pretrainings[0]
    store.write_row("pretrained", {"pretrained_id": pretrained_id(st), "name": "ST", "arch": "resnet_tiny", "kind": "standard"})
    params = get("imp").params(spec.tickets[0], "ST")
    store.write_row("masks", {"mask_id": "r1", "pretrained_id": pretrained_id(st), "method": "imp", "params": params_json(params),
                              "round": 1, "target_sparsity": 0.2, "sparsity": 0.2, "bits": b""})
    cells = [c for c in Plan.of(spec, store).cells if c.pretraining == "ST" and c.tune_id is None]
    states = dict(zip((c.cell_id for c in cells), ("done", "failed", "stopped", "done")))
    for c in cells:
        if c.cell_id in states:
            row = {k: v for k, v in c.row_fields().items() if k in TRIALS.names}
            store.write_row("trials", {**row, "status": states[c.cell_id], "error": "boom" if states[c.cell_id] == "failed" else None})
    return store, states


class _Builder:
    """The sweep's job list needs a builder only to build released jobs; listing them builds nothing."""


@pytest.mark.parametrize("early_stop", [False, True])
def test_every_surface_reads_the_same_plan_for_every_stage(tmp_path, tiny_spec_text, early_stop):
    spec = _spec(tiny_spec_text, str(tmp_path / "store"), early_stop)
    store, states = _store(spec)
    p = Plan.of(spec, store)
    final = {"done", "stopped"} if early_stop else {"done"}

    # the plan itself
    n = p.counts()
    assert (n["done"], n["failed"], n["stopped"]) == (2, 1, 1)
    assert n["waiting"] == len(p.waiting) > 0 and all(c.regime == "adversarial" for c in p.cells if c.cell_id in p.waiting)
    assert len(p.done) == sum(s in final for s in states.values())
    todo = len(p.cells) - len(p.done) - len(p.waiting)
    assert len(p.todo) == todo
    assert [i.spec.name for i in p.pretrain_jobs()] == ["AT"]
    assert {(i.pretraining.name, tuple(i.to_make)) for i in p.imp_jobs()} == {("ST", (2,)), ("AT", (1, 2))}
    assert [t.state for t in p.tuning] == ["to tune", "to tune"]  # ST and AT, adversarial f=1

    # the sweep's job list (what it hands Ray Tune), and what each cell waits for
    tasks = sweep_tasks(p, _Builder())
    kinds = [t.kind for t in tasks]
    assert (kinds.count("pretrain"), kinds.count("imp"), kinds.count("cell")) == (1, 2, todo)
    imp_cells = [t for t in tasks if t.kind == "cell" and t.needs.imp is not None]
    assert imp_cells and all(t.needs.imp.round in (1, 2) for t in imp_cells)
    assert not [t for t in tasks if t.kind == "cell" and t.needs.met(p.view) and t.needs.imp and t.needs.imp.round == 2]
    if early_stop:
        assert all(t.needs.cell for t in tasks if t.kind == "cell" and "dense" not in t.label)

    # the dry run: its head line, its table, its cost plan
    said = dry_run(spec, store.uri)
    assert f"{len(p.cells)} cells, {len(p.done)} done, {todo} to run, {len(p.waiting)} waiting for a tuned recipe" in said
    table = [ln for ln in said.splitlines() if ln[:16] in {c.cell_id for c in p.cells}]
    assert sum(ln.rstrip().endswith("tune first") for ln in table) == len(p.waiting)
    assert sum(bool(re.search(r"todo( \(\w+\))?$", ln.rstrip())) for ln in table) == todo
    assert "source-task jobs (3 to run)" in said  # AT's recipe, ST's IMP round 2, AT's IMP rounds
    assert "pre-training ST: stored, nothing to train" in said
    assert "  to tune ST digits adversarial f=1: 0 of 2 trials stored" in said

    # the cost plan alone
    jobs, free = source_jobs(p)
    assert [j.label.split(":")[0] for j in jobs] == ["IMP ST", "pre-training AT", "IMP AT"] and free == {"stored": ["ST"]}

    # raydw status
    st = status.collect(store.uri, spec)
    assert (st.to_run, st.waiting, st.done, st.failed, st.stopped) == (todo, len(p.waiting), 2, 1, 1)
    assert st.groups == 2 and st.groups_tuned == 0
    assert re.search(rf"^to run: {todo} cells", status.render(st, store.uri), re.M)

    # the input check asks for the AT recipe's source data only where it is packaged: nothing missing here
    assert missing_inputs(spec, plan=p) == []

    # the end-of-sweep summary
    lines: list[str] = []
    s = end_of_sweep(p, store, 0, time.time(), lines.append)
    assert (s.done, s.failed, s.stopped, s.left, s.waiting) == (2, 1, 1, todo, len(p.waiting)) and not s.complete
    assert f"2/{len(p.cells)} cells done, 1 failed, 1 stopped early" in lines[0]
    assert ("they run again" in lines[0]) is (not early_stop)


def test_a_stopped_cell_completes_a_sweep_only_while_early_stopping_is_on(tmp_path, tiny_spec_text):
    """The summary used to count a stopped cell as final with early stopping off, where the plan reruns it."""
    for early_stop in (True, False):
        d = yaml.safe_load(tiny_spec_text)
        d["storage"] = str(tmp_path / f"s{early_stop}")
        if early_stop:
            d["early_stop"] = {"enabled": True}
        spec = parse_spec(d)
        store = Store(spec.storage)
        for i, c in enumerate(Plan.of(spec, store).cells):
            row = {k: v for k, v in c.row_fields().items() if k in TRIALS.names}
            store.write_row("trials", {**row, "status": "stopped" if i == 1 else "done"})
        s = end_of_sweep(Plan.of(spec, store), store, 0, time.time(), lambda *_: None)
        assert s.complete is early_stop and s.left == (0 if early_stop else 1)


def test_a_group_with_its_budget_stored_but_no_recipe_is_tuned_again_unless_every_trial_failed():
    """A sweep stopped between its last trial and the recipe: tuning runs no trial and writes the recipe from the
    stored ones (the Ray test in test_tuning deletes the recipe); only a budget of failed trials is "spent"."""
    from raydw.planning.plan import TuneItem
    assert TuneItem(None, None, trials=2, budget=2, done=1).state == "to tune"
    assert TuneItem(None, None, trials=2, budget=2, done=0).state == "spent"
    assert TuneItem(None, None, trials=1, budget=2, done=0).state == "to tune"
    assert TuneItem(None, {"lr": 0.1}, trials=0, budget=2).state == "tuned"
