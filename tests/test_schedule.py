"""The scheduler without Ray: jobs released as their inputs appear in a real store, longest chains first.

Each test plays Ray Tune's part: it asks `next()` for work, "runs" a released job by writing the row that job
would store (its pre-trained model, an IMP round), and says `ended()`. The jobs are not built here (the builder
returns the task's key); what is tested is the order and the waiting.
"""
from __future__ import annotations

import yaml

from raydw.cells import pretrained_id
from raydw.planning.plan import Plan
from raydw.planning.schedule import FINISHED, Scheduler, sweep_tasks
from raydw.spec import parse_spec
from raydw.store import Store
from raydw.tickets.registry import get, params_json


class Keys:
    """A builder that names what it would build."""

    def pretrain(self, p):
        return f"pretrain {p.name}"

    def imp(self, item):
        return f"imp {item.pretraining.name}"

    def cell(self, c, view, dense_cell_id=None):
        return c.cell_id


def _spec(text: str, storage: str, **more):
    d = yaml.safe_load(text)
    d["storage"] = storage
    d["tickets"] = [{"method": "imp", "rounds": [1, 2], "imp": {"dataset": "mnist5k", "epochs_per_round": 1}},
                    {"method": "random", "sparsities": [0.5]}]
    d.update(more)
    return parse_spec(d)


def _store_pretrained(store: Store, spec) -> None:
    p = spec.pretrainings[0]
    store.write_row("pretrained", {"pretrained_id": pretrained_id(p), "name": p.name, "arch": "resnet_tiny", "kind": "standard"})


def _store_round(store: Store, spec, k: int) -> None:
    p = spec.pretrainings[0]
    params = params_json(get("imp").params(spec.tickets[0], p.name))
    store.write_row("masks", {"mask_id": f"r{k}", "pretrained_id": pretrained_id(p), "method": "imp", "params": params,
                              "round": k, "target_sparsity": 1 - 0.8 ** k, "sparsity": 1 - 0.8 ** k, "bits": b""})


def _drain(s: Scheduler) -> list[str]:
    """Everything released now, one trial at a time, as a Tune with free slots would ask."""
    out = []
    while isinstance(got := s.next(), list):
        out += [t.kind if t.kind != "cell" else t.label for t, _ in got]
    return out


def test_each_stage_starts_when_its_input_is_stored_and_round_one_cells_go_first(tmp_path, tiny_spec_text):
    spec = _spec(tiny_spec_text, str(tmp_path / "s"))
    store = Store(spec.storage)
    plan = Plan.of(spec, store)
    s = Scheduler(sweep_tasks(plan, Keys()), store)

    assert _drain(s) == ["pretrain"]  # nothing else can start before the model exists
    assert s.next() is None  # the pre-training runs: wait, do not finish
    _store_pretrained(store, spec)
    s.ended()
    released = _drain(s)
    assert released[0] == "imp"  # the longest chain first
    cells = [r for r in released[1:]]
    assert cells and not any(" imp " in c for c in cells)  # dense and random cells: their inputs exist
    _store_round(store, spec, 1)
    s.ended()
    round1 = _drain(s)
    assert round1 and all(" imp s=0.200" in c for c in round1)  # round 1's cells run while round 2 is found
    _store_round(store, spec, 2)
    s.ended()
    last = _drain(s)
    assert last and all(" imp s=0.360" in c for c in last)
    for _ in range(8):
        s.ended()
    assert s.next() == FINISHED and s.blocked() == []


def test_a_round_never_stored_blocks_its_cells_with_the_reason(tmp_path, tiny_spec_text):
    spec = _spec(tiny_spec_text, str(tmp_path / "s"))
    store = Store(spec.storage)
    _store_pretrained(store, spec)
    _store_round(store, spec, 1)
    s = Scheduler(sweep_tasks(Plan.of(spec, store), Keys()), store)
    released = _drain(s)
    assert released[0] == "imp" and any(" imp s=0.200" in c for c in released)
    for _ in released:
        s.ended()  # the IMP job ended without storing round 2 (it failed)
    assert s.next() == FINISHED
    blocked = s.blocked()
    assert blocked and all(t.why_blocked == "IMP round 2 was not stored (its IMP job failed?)" for t in blocked)


def test_ready_cells_are_packed_and_other_jobs_never_join_a_pack(tmp_path, tiny_spec_text):
    spec = _spec(tiny_spec_text, str(tmp_path / "s"), seeds=[1, 2])
    store = Store(spec.storage)
    _store_pretrained(store, spec)
    s = Scheduler(sweep_tasks(Plan.of(spec, store), Keys()), store, cells_per_run=3)
    first = s.next()
    assert [t.kind for t, _ in first] == ["imp"]
    packs = []
    while isinstance(got := s.next(), list):
        packs.append([t.kind for t, _ in got])
    assert packs == [["cell"] * 3, ["cell"]]  # 4 ready cells (dense and random, 2 seeds); IMP cells wait for rounds


def test_a_job_that_cannot_be_built_blocks_only_itself(tmp_path, tiny_spec_text):
    spec = _spec(tiny_spec_text, str(tmp_path / "s"), tickets={"method": "omp", "sparsities": [0.5]})
    store = Store(spec.storage)
    _store_pretrained(store, spec)

    class Broken(Keys):
        def cell(self, c, view, dense_cell_id=None):
            if c.ticket_method != "dense":
                raise ValueError("no such mask")
            return c.cell_id

    s = Scheduler(sweep_tasks(Plan.of(spec, store), Broken()), store)
    released = _drain(s)
    assert released and all("dense" in c for c in released)
    for _ in released:
        s.ended()
    assert s.next() == FINISHED
    assert [t.why_blocked for t in s.blocked()] == ["ValueError: no such mask"]


def test_early_stopping_tickets_wait_for_their_dense_cell(tmp_path, tiny_spec_text):
    spec = _spec(tiny_spec_text, str(tmp_path / "s"), tickets={"method": "omp", "sparsities": [0.5]},
                 early_stop={"enabled": True})
    store = Store(spec.storage)
    _store_pretrained(store, spec)
    plan = Plan.of(spec, store)
    s = Scheduler(sweep_tasks(plan, Keys()), store)
    released = _drain(s)
    assert released and all("dense" in c for c in released)
    from raydw.store import TRIALS

    for c in (c for c in plan.cells if c.ticket_method == "dense"):
        store.write_row("trials", {**{k: v for k, v in c.row_fields().items() if k in TRIALS.names}, "status": "done"})
    s.ended()
    assert [c for c in _drain(s) if "omp" in c]


def test_the_store_is_read_again_only_when_nothing_is_ready(tmp_path, tiny_spec_text, monkeypatch):
    """Inputs only appear during a sweep, so while cells are ready the scheduler hands them out from what it last
    read: for a store whose inputs are all there, one read to start and one to find nothing left, however many
    trials end (it re-read after each: 13 reads for these 12 cells)."""
    from raydw.planning import schedule

    store = Store(str(tmp_path / "S"))
    spec = _spec(tiny_spec_text, store.uri, seeds=[1, 2, 3])
    _store_pretrained(store, spec)
    for k in (1, 2):
        _store_round(store, spec, k)
    todo = Plan.of(spec, store).todo
    tasks = sweep_tasks(Plan.of(spec, store), Keys())
    reads = []
    real = schedule.StoreView.read
    monkeypatch.setattr(schedule.StoreView, "read", classmethod(lambda cls, *a, **k: reads.append(a) or real(*a, **k)))
    s = Scheduler(tasks, store)
    handed = 0
    while isinstance(got := s.next(), list):
        handed += len(got)
        s.ended()
    assert handed == len(todo) > 3 and len(reads) == 2, (handed, len(reads))


def test_stages_not_started_are_named_for_the_time_left_estimate(tmp_path, tiny_spec_text):
    """The estimate is made from finished cells; a pre-training or IMP job not started yet is said beside it."""
    store = Store(str(tmp_path / "S"))
    spec = _spec(tiny_spec_text, store.uri)
    s = Scheduler(sweep_tasks(Plan.of(spec, store), Keys()), store)
    assert s.not_started() == "; 1 pre-training(s) and 1 IMP job(s) not started yet, not in the estimate"
    s.next()  # the pre-training is released
    assert s.not_started() == "; 1 IMP job(s) not started yet, not in the estimate"
    _store_pretrained(store, spec)
    s.ended()
    s.next()
    assert s.not_started() == ""


def test_a_round_found_after_a_trial_ends_goes_ahead_of_cells_ready_all_along(tmp_path, tiny_spec_text):
    """While a job waits for an input the store is read again after every ended trial, so the cells of a round
    that just appeared take the next slot by priority (the Ray test in test_tickets_ray, without Ray)."""
    store = Store(str(tmp_path / "S"))
    spec = _spec(tiny_spec_text, store.uri)
    _store_pretrained(store, spec)
    s = Scheduler(sweep_tasks(Plan.of(spec, store), Keys()), store)
    assert [t.kind for t, _ in s.next()] == ["imp"]
    first = s.next()
    assert [t.kind for t, _ in first] == ["cell"] and "imp" not in first[0][0].label  # round 1 is not there yet
    _store_round(store, spec, 1)
    s.ended()
    got = s.next()
    assert got[0][0].label.startswith("ST imp s=0.200"), got[0][0].label  # round 1: sparsity 1 - 0.8
