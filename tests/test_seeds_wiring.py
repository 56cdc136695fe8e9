"""Adaptive seeds wired into the sweep (issue 26), Ray-free: the plan asks for a round at a time, the scheduler's
SeedGate releases the next round only once the current one is stored, a store whose verdicts are all decided or at
their maximum has nothing to run, and a killed sweep resumes without running a seed twice.

The store is written by hand: a spec's own cells (so their ids are the plan's) with per-example outcome bits, as a
finished cell writes them (raydw.outcomes), from a model of known accuracy per ticket level.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from raydw import outcomes
from raydw.planning.dryrun import dry_run
from raydw.planning.plan import Plan
from raydw.planning.schedule import FINISHED, Scheduler, sweep_tasks
from raydw.planning.seedgate import SeedGate
from raydw.spec import load_spec, parse_spec
from raydw.reporting.status import summary
from raydw.store import Store
from raydw.reporting.summary import end_of_sweep

DEMO = Path(__file__).resolve().parents[1] / "raydw" / "sweeps" / "demo.yaml"
N = 400
BASE = np.random.default_rng(0).random(N)
ACC = {0: 0.80, 3: 0.60, 7: 0.78, 9: 0.50}  # dense, a clear loss (decided at look 1), 2 points below at a 3-point margin
# (open); k=9 only where the extreme search is given it as a third level


def _spec(storage: str, **seeds):
    d = load_spec(DEMO).model_dump(mode="json", exclude_defaults=True)
    d["pretrainings"] = d["pretrainings"][:1]  # ST only
    d["regimes"]["adversarial"]["data_fractions"] = [1.0]
    d["seeds"] = {"adaptive": {"start": 1, "replicate": 3, "max": 3, **seeds}}
    d["storage"] = storage
    d["verdicts"]["resamples"] = 200  # the states here are far from their bounds; 200 keeps each replay quick
    return parse_spec(d)


def _finish(store: Store, c, status: str = "done") -> None:
    """The row a finished cell writes: its accuracy and which test images it got right (clean, and robust)."""
    rng = np.random.default_rng(1000 * (c.ticket_round or 0) + 10 * c.seed + (c.regime_kind == "adversarial"))
    bits = BASE + 0.03 * rng.standard_normal(N) < ACC[c.ticket_round or 0]
    row = {**c.row_fields(), "sweep": "t", "status": status, "error": "" if status == "done" else "killed",
           "sparsity": c.target_sparsity, "sa": bits.mean(), "sa_last": bits.mean(), "wall_s": 1.0, "workers": 1,
           "device": "cpu", "test_n": N, outcomes.column("clean", "sa_best"): outcomes.pack(bits)}
    if c.regime_kind == "adversarial":
        row.update({"ra": bits.mean(), outcomes.column("robust", "ra_best"): outcomes.pack(bits)})
    store.write_row("trials", row)


class _Cells:
    """The builder the scheduler calls for a released cell: here the cell itself (what runs it is the test)."""

    def cell(self, c, view, dense_cell_id=None):
        return c


def _sweep(spec, store: Store, stop_after: int | None = None) -> list:
    """What `raydw sweep` does between its plan and its summary, without Ray: every released cell 'runs' (its row is
    written) and ends; the SeedGate releases rounds. stop_after: kill the sweep after that many cells."""
    plan = Plan.of(spec, store)
    for item in plan.pretrainings:  # the cells' one input: their pre-trained model, stored
        store.write_row("pretrained", {"pretrained_id": item.pretrained_id, "name": item.spec.name, "arch": "resnet_tiny",
                                       "kind": "standard"})
    gate = SeedGate(plan, store)
    sched = Scheduler(sweep_tasks(plan, _Cells()), store, gate)
    ran = []
    while (got := sched.next()) != FINISHED:
        assert got is not None  # every released cell ends at once here: nothing is ever in flight when asked
        for _, c in got:
            if stop_after is not None and len(ran) == stop_after:
                return ran
            _finish(store, c)
            ran.append(c)
        sched.ended()
    return ran


@pytest.fixture
def spec(tmp_path):
    return _spec(str(tmp_path / "store"))


# The tests that copy `swept`: on one pytest-xdist worker (`--dist loadgroup`), so the sweep is made once.
on_the_swept_worker = pytest.mark.xdist_group("swept")


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, frozenset]:
    """(a store `_sweep` ran to its end, the ids of the cells it ran), made once: the tests that start from a finished
    adaptive sweep copy it (`_swept_copy`). Each `_sweep` took 5 s serially at load ~3; the cell ids do not depend
    on the store's path, so a copy is the store the test's own sweep would have written."""
    spec = _spec(str(tmp_path_factory.mktemp("swept") / "store"))
    ran = _sweep(spec, Store(spec.storage))
    return Path(spec.storage), frozenset(c.cell_id for c in ran)


def _swept_copy(swept, spec) -> Store:
    import shutil

    shutil.copytree(swept[0], spec.storage)
    return Store(spec.storage)


def _rank(c) -> int:
    return c.seed  # default seed values: 1..max


def test_a_fresh_plan_runs_round_one_and_says_what_may_follow(spec):
    p = Plan.of(spec, Store(spec.storage))
    assert len(p.cells) == 18  # (dense + 2 levels) x (standard, adversarial) x 3 seeds
    assert {(c.ticket_method, c.seed) for c in p.todo} == {("dense", 1), ("dense", 2), ("dense", 3), ("omp", 1)}
    assert len(p.todo) == 6 + 4 and len(p.more) == 8 and not p.not_needed
    assert "10 to run now, up to 8 more while verdicts stay open" in p.headline()
    said = dry_run(spec, spec.storage)
    assert "10 to run now, up to 8 more while verdicts stay open" in said and "may follow" in said


def test_the_gate_releases_rounds_in_order_and_only_for_open_comparisons(spec):
    store = Store(spec.storage)
    ran = _sweep(spec, store)
    ids = [c.cell_id for c in ran]
    assert len(ids) == len(set(ids))  # no cell twice
    tickets = [c for c in ran if c.ticket_method != "dense"]
    # round 1 (every ticket at seed 1 and dense at 1-3) before any seed 2, every seed 2 before any seed 3
    first_late = next(i for i, c in enumerate(ran) if c.ticket_method != "dense" and c.seed > 1)
    assert all(c.seed == 1 or c.ticket_method == "dense" for c in ran[:first_late]) and first_late == 10
    seeds_in_order = [c.seed for c in tickets]
    assert seeds_in_order == sorted(seeds_in_order)
    # the clear loss (k=3) stops after one seed, the level 2 points below the dense model gets its seeds 2 and 3
    assert sorted((c.ticket_round, c.seed) for c in tickets) == [(3, 1), (3, 1), (7, 1), (7, 1), (7, 2), (7, 2), (7, 3), (7, 3)]
    p = Plan.of(spec, store)
    assert not p.todo and len(p.not_needed) == 4  # k=3 at seeds 2, 3 (standard and adversarial)
    stopped = dict(zip(p.seeds.replay.verdicts["ticket_round"], p.seeds.replay.verdicts["stopped"]))
    assert stopped == {3: "decided at look 1", 7: "at max (3 seeds)"}


@on_the_swept_worker
def test_a_store_decided_or_at_max_runs_nothing_and_the_summary_calls_it_complete(spec, swept):
    store = _swept_copy(swept, spec)
    assert _sweep(spec, store) == []  # the rerun: no cell released, nothing written
    lines = []
    s = end_of_sweep(Plan.of(spec, store), store, 0, 0.0, lines.append)
    text = "\n".join(lines)
    assert s.complete and s.skipped == 4 and s.left == 0
    assert "4 not needed (their verdicts decided or at the seed maximum)" in text
    assert "ticket levels: 1 decided, 1 at max" in text
    assert "decided at look 1" in text and "at max (3 seeds)" in text and "seed SD" in text
    st = summary(store.uri, spec)
    assert "to run: 0 cells" in st and "4 not needed" in st
    # The sweep's report reuses the verdicts its summary computed: the page is the one `raydw report` would write.
    from raydw.findings.analysis import verdict_settings
    from raydw.findings.sequential import Design
    from raydw.reporting.report import write_report

    fresh = write_report(store.uri, spec.storage + "-report", cells={c.cell_id for c in Plan.of(spec, store).cells},
                         design=Design.of(spec.adaptive_seeds()), **verdict_settings(spec))
    untimed = lambda p: re.sub(r"generated [^.]*\.", "", p.read_text())  # noqa: E731
    assert untimed(fresh) == untimed(Path(store.path("report")) / "index.html")


@on_the_swept_worker
def test_a_killed_adaptive_sweep_resumes_without_running_a_seed_twice(spec, swept):
    store = Store(spec.storage)
    whole = swept[1]  # the cells of a sweep never killed
    first = _sweep(spec, store, stop_after=11)  # killed in round 2: one of its two cells stored
    assert len(first) == 11
    second = _sweep(spec, store)
    ids = [c.cell_id for c in first + second]
    assert len(ids) == len(set(ids)), "a seed ran twice"
    assert set(ids) == whole  # the same cells as a sweep never killed
    assert not Plan.of(spec, store).todo


def test_a_failed_cell_of_a_round_is_retried_not_skipped(spec):
    store = Store(spec.storage)
    p = Plan.of(spec, store)
    for c in p.todo:
        _finish(store, c, "failed" if (c.ticket_round, c.regime_kind, c.seed) == (7, "adversarial", 1) else "done")
    p = Plan.of(spec, store)
    assert [(c.ticket_round, c.regime_kind, c.seed) for c in p.todo] == [(7, "adversarial", 1)]


class _RayStarted(Exception):
    pass


@on_the_swept_worker
def test_raydw_sweep_on_a_decided_store_prints_plan_and_summary_without_starting_ray(spec, swept, monkeypatch):
    from raydw.run import sweep

    _swept_copy(swept, spec)

    def connect(*a, **k):
        raise _RayStarted("the rerun of a decided adaptive sweep started Ray")

    monkeypatch.setattr(sweep, "connect", connect)
    lines: list[str] = []
    s = sweep.run_sweep(spec, out=lines.append)
    text = "\n".join(lines)
    assert s.ran == 0 and s.complete
    assert "0 to run now, up to 0 more while verdicts stay open, 4 not needed (decided)" in text  # the plan
    assert "ticket levels: 1 decided, 1 at max" in text and "at max (3 seeds)" in text  # the summary


@on_the_swept_worker
def test_the_report_shows_per_verdict_its_seeds_family_variance_and_why_it_stopped(spec, swept, tmp_path):
    from raydw.findings.analysis import verdict_settings
    from raydw.reporting.report import write_report
    from raydw.findings.sequential import Design

    store = _swept_copy(swept, spec)
    page = write_report(store.uri, tmp_path / "report", cells={c.cell_id for c in Plan.of(spec, store).cells},
                        design=Design.of(spec.adaptive_seeds()), **verdict_settings(spec))
    html = page.read_text()
    assert "decided at look 1" in html and "at max (3 seeds)" in html  # why each stopped
    assert "Seed variance by family" in html and "split over 3 looks (Bonferroni)" in html
    assert "seed_sd_sa_adv" in html and "<th>seeds</th>" in html


def _extreme(spec):
    return parse_spec({**spec.model_dump(mode="json", exclude_defaults=True), "search": {"mode": "extreme"}})


def _search_sweep(spec, store: Store) -> tuple[list, object]:
    """_sweep with the gates `raydw sweep` builds for `search: extreme` and adaptive seeds (raydw.run.sweep._gates)."""
    from raydw.run.sweep import _gates

    plan = Plan.of(spec, store)
    for item in plan.pretrainings:
        store.write_row("pretrained", {"pretrained_id": item.pretrained_id, "name": item.spec.name, "arch": "resnet_tiny",
                                       "kind": "standard"})
    level, gate = _gates(plan, store)
    sched = Scheduler(sweep_tasks(plan, _Cells(), gated=True), store, gate)
    ran = []
    while (got := sched.next()) != FINISHED:
        for _, c in got:
            _finish(store, c)
            ran.append(c)
        sched.ended()
    return ran, level


def test_the_extreme_search_waits_for_a_levels_seeds_before_it_navigates(spec):
    d = _extreme(spec).model_dump(mode="json", exclude_defaults=True)
    d["tickets"][0]["rounds"] = [3, 7, 9]
    spec = parse_spec(d)
    store = Store(spec.storage)
    ran, level = _search_sweep(spec, store)
    tickets = [(c.ticket_round, c.seed) for c in ran if c.ticket_method != "dense"]
    # the search starts at the lowest level (k=3, a clear loss at one seed), then checks the one above it (k=7), which
    # gets its seeds 2 and 3 (open at 2 points below dense) before the search records it: unknown at its maximum;
    # k=9 is never proposed, so it costs no seed at all
    assert sorted(tickets) == [(3, 1), (3, 1), (7, 1), (7, 1), (7, 2), (7, 2), (7, 3), (7, 3)]
    rows = level.rows("t")
    assert [r["done"] for r in rows] == [True] * len(rows)
    assert all(r["max_win"] is None for r in rows) and all("0.79" in r["unknown"] for r in rows)
    assert all(r["cells_saved"] == 6 for r in rows)  # k=9 never proposed: none of its 2 regimes x 3 seeds ran


def test_an_open_level_stays_in_flight_for_the_search_until_its_seeds_stop(spec):
    from raydw.run.sweep import _gates

    spec = _extreme(spec)
    store = Store(spec.storage)
    for c in Plan.of(_spec(spec.storage), store).todo:  # round 1 stored: k=3 decided, k=7 open (asks for seed 2)
        _finish(store, c)
    level, _ = _gates(Plan.of(spec, store), store)
    for _ in range(3):
        level.update()
    searches = [g["search"] for g in level.groups.values()]
    assert searches and all(s.in_flight == [pytest.approx(0.79, abs=0.001)] for s in searches)
    assert not any(s.done() for s in searches)


@on_the_swept_worker
def test_raydw_verdicts_with_the_spec_replays_the_looks_the_sweep_took(spec, swept, tmp_path, capsys):
    import yaml

    from raydw.cli import main

    store = _swept_copy(swept, spec)
    path = tmp_path / "adaptive.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    assert main(["verdicts", store.uri, "--spec", str(path)]) == 0
    out = capsys.readouterr().out
    assert "decided at look 1" in out and "at max (3 seeds)" in out and "split over 3 looks (Bonferroni)" in out
