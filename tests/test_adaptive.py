"""`search: extreme` wired to the store: the gate releases levels as the search asks, records verdicts from
finished cells, and resumes from the store without running a cell twice (no Ray: cells finish by writing rows)."""
from __future__ import annotations

import yaml

from raydw.cells import expand
from raydw.run.adaptive import LevelGate
from raydw.spec import parse_spec
from raydw.store import Store

SPEC = """
name: search
pretrainings:
  - {name: ST, recipe: {kind: standard, arch: resnet_tiny, dataset: mnist5k, epochs: 1}}
tickets: {method: omp, rounds: [1, 2, 3, 4, 5, 6, 7, 8]}
search: {mode: extreme}
data: {datasets: [digits]}
regimes:
  standard: {kind: standard, epochs: 1, batch_size: 64, optimizer: {lr: 0.01}}
  adversarial:
    kind: adversarial
    epochs: 1
    batch_size: 64
    optimizer: {lr: 0.01}
    attack: {eps: 0.1, step_size: 0.05, steps: 2}
eval: {attack: {eps: 0.1, step_size: 0.05, steps: 2}}
"""


def _finish(store, cell, wins_up_to: int) -> None:
    """Write the row a finished cell would: a ticket at or below round `wins_up_to` beats the dense model."""
    win = cell.ticket_method == "dense" or cell.ticket_round <= wins_up_to
    store.write_row("trials", {**{k: getattr(cell, k) for k in ("cell_id", "pretraining", "ticket_method", "ticket_round",
                                                              "target_sparsity", "dataset", "regime", "regime_kind",
                                                              "data_fraction", "seed")},
                               "sparsity": cell.target_sparsity, "status": "done",
                               "sa": 0.9 if win else 0.5, "ra": 0.4 if win else 0.1})


def _drive(store, spec, cells, wins_up_to, stop_after=None):
    by_id = {c.cell_id: c for c in cells}
    ran: list[str] = []
    gate = LevelGate(spec, cells, store)
    for c in cells:  # dense cells are never gated
        if c.ticket_method == "dense" and store.get("trials", c.cell_id) is None:
            _finish(store, c, wins_up_to)
    while True:
        gate.update()
        todo = [i for i in sorted(gate.released) if store.get("trials", i) is None]
        if not todo or (stop_after is not None and len(ran) >= stop_after):
            return gate, ran
        for i in todo:
            _finish(store, by_id[i], wins_up_to)
            ran.append(i)


def _setup(tmp_path):
    spec = parse_spec(yaml.safe_load(SPEC))
    return spec, expand(spec), Store(str(tmp_path))


def test_search_finds_the_extreme_level_running_fewer_cells_than_the_grid(tmp_path):
    spec, cells, store = _setup(tmp_path)
    gate, ran = _drive(store, spec, cells, wins_up_to=5)
    row = gate.rows("search")[0]
    assert abs(row["max_win"] - (1 - 0.8 ** 5)) < 1e-9
    assert row["max_contig_win"] == row["max_win"] and row["consistent"] and row["done"]
    ticket_cells = sum(c.ticket_method != "dense" for c in cells)  # 8 levels x 2 regimes
    assert len(ran) < ticket_cells and row["cells_saved"] == ticket_cells - len(ran)
    assert len(ran) == 2 * len(yaml.safe_load(row["levels_run"]))  # both regimes of each level run


def test_no_winning_level_is_reported_as_none(tmp_path):
    spec, cells, store = _setup(tmp_path)
    gate, _ = _drive(store, spec, cells, wins_up_to=0)
    assert gate.rows("search")[0]["max_win"] is None


def test_a_resumed_search_runs_no_cell_twice_and_reaches_the_same_answer(tmp_path):
    spec, cells, store = _setup(tmp_path / "a")
    _, first = _drive(store, spec, cells, wins_up_to=6, stop_after=4)
    gate, second = _drive(store, spec, cells, wins_up_to=6)  # a new driver: state comes from the store alone
    assert not set(first) & set(second)
    spec2, cells2, store2 = _setup(tmp_path / "b")
    whole, _ = _drive(store2, spec2, cells2, wins_up_to=6)
    assert gate.rows("search")[0]["max_win"] == whole.rows("search")[0]["max_win"]
    assert gate.rows("search")[0]["levels_run"] == whole.rows("search")[0]["levels_run"]


def test_the_search_judges_only_its_own_cells_when_the_store_holds_another_run(tmp_path):
    spec, cells, store = _setup(tmp_path)
    # Another run of the same grid in this store (say, with another lr): its dense cells are far better, so if
    # they entered the verdicts (or were averaged as seeds) no level would win, and the analysis refuses the mix.
    for c in cells:
        if c.ticket_method == "dense":
            _finish(store, c, 0)
            store.write_row("trials", {**store.get("trials", c.cell_id), "cell_id": f"other-{c.cell_id}", "sa": 1.0, "ra": 1.0})
    gate, _ = _drive(store, spec, cells, wins_up_to=5)
    assert abs(gate.rows("search")[0]["max_win"] - (1 - 0.8 ** 5)) < 1e-9
