"""One plan against the store (raydw.planning.plan): `raydw status`, the dry run and the sweep say the same cells are left.

A store holds one cell of each state (done, failed, stopped, and cells with no row). With early stopping off, a
stopped cell runs again in full; with it on, stopped is final. Each surface is read as a user reads it (its text),
and the sweep is stopped right after it has planned (before it would start Ray).
"""
from __future__ import annotations

import re

import pytest
import yaml

from raydw.reporting import status
from raydw.planning.dryrun import dry_run
from raydw.planning.plan import plan
from raydw.spec import parse_spec
from raydw.store import TRIALS, Store


class _Planned(Exception):
    """Raised where the sweep would connect to Ray: its plan is printed by then."""


def _spec(text: str, storage: str, early_stop: bool):
    d = yaml.safe_load(text)
    d["storage"] = storage
    d["tickets"] = {"method": "omp", "sparsities": [0.3, 0.5, 0.7]}
    d["seeds"] = [1, 2]
    if early_stop:
        d["early_stop"] = {"enabled": True}
    return parse_spec(d)


def _store_with_every_state(spec) -> tuple[Store, dict[str, str]]:
    store = Store(spec.storage)
    cells = plan(spec, store).cells
    states = {cells[0].cell_id: "done", cells[1].cell_id: "failed", cells[2].cell_id: "stopped",
              cells[3].cell_id: "done"}  # the rest: no row (missing)
    for c in cells:
        if c.cell_id in states:
            row = {k: v for k, v in c.row_fields().items() if k in TRIALS.names}
            store.write_row("trials", {**row, "status": states[c.cell_id], "error": None})
    store.write_row("trials", {"cell_id": "elsewhere", "status": "done"})  # another spec's cell: not counted
    return store, states


@pytest.mark.parametrize("early_stop", [False, True])
def test_status_dry_run_and_sweep_agree_on_what_is_left(tmp_path, tiny_spec_text, monkeypatch, early_stop):
    spec = _spec(tiny_spec_text, str(tmp_path / "store"), early_stop)
    store, states = _store_with_every_state(spec)
    p = plan(spec, store)
    final = {"done", "stopped"} if early_stop else {"done"}
    expected = len(p.cells) - sum(s in final for s in states.values())
    assert len(p.todo) == expected and len(p.cells) == 8 and p.missing == 4

    said_status = status.summary(store.uri, spec)
    assert re.search(rf"^to run: {expected} cells", said_status, re.M), said_status

    said_dry = dry_run(spec, store.uri)
    assert f"8 cells, {8 - expected} done, {expected} to run" in said_dry.splitlines()[0]
    table = [ln for ln in said_dry.splitlines() if ln[:16] in {c.cell_id for c in p.cells}]
    assert sum(ln.rstrip().endswith(("todo", ")")) for ln in table) == expected

    from raydw.run import sweep

    def planned(*a, **k):
        raise _Planned

    monkeypatch.setattr(sweep, "connect", planned)
    lines: list[str] = []
    with pytest.raises(_Planned):
        sweep.run_sweep(spec, out=lines.append)
    assert f"8 cells, {8 - expected} already done, {expected} to run" in lines[0]
