"""A real adaptive sweep (issue 26), Ray Tune + Ray Train: the tiny spec with `seeds: {adaptive: ...}` runs round 1
only (the dense cell at its replicate seeds, the ticket at its first), the seed gate ends the run, and the rerun starts
nothing. Its one level has no adversarial regime, so its verdict is missing and asks for no further seed
(tests/test_seeds_wiring.py covers the rounds themselves, Ray-free)."""
from __future__ import annotations

import pytest
import yaml

from raydw.findings import results
from raydw.spec import parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_a_tiny_adaptive_sweep_runs_round_one_and_its_rerun_runs_nothing(ray_session, tiny_store, tiny_spec_text):
    from raydw.run.sweep import run_sweep

    d = yaml.safe_load(tiny_spec_text)
    d["seeds"] = {"adaptive": {"start": 1, "replicate": 2, "max": 2}}
    d["verdicts"] = {"rule": "equivalence", "margin": 5, "resamples": 200}
    d["resources"] = {"max_concurrent_cells": 1, "cells_per_run": 3}  # round 1 in one Train run (each more ~10 CPU-s)
    spec = parse_spec(d)
    lines: list[str] = []
    s = run_sweep(spec, storage=str(tiny_store), out=lines.append)
    text = "\n".join(lines)
    df = results.load(str(tiny_store))
    assert sorted(zip(df.ticket_method, df.seed)) == [("dense", 1), ("dense", 2), ("omp", 1)]
    assert (df.status == "done").all() and s.ran == 3 and s.complete
    assert "3 to run now, up to 1 more while verdicts stay open" in text
    assert "1 not needed (their verdicts decided or at the seed maximum)" in text and "ticket levels: 1 missing" in text
    again: list[str] = []
    assert run_sweep(spec, storage=str(tiny_store), out=again.append).ran == 0
    assert "0 to run now" in again[0] and len(results.load(str(tiny_store))) == 3
