"""The sweep's progress line: its time-left estimate counts the pace of cells after the first finished trial."""
from __future__ import annotations

import re

from raydw.run import tuner


def _run(monkeypatch, trials: list[tuple[float, int]], total: int) -> list[str]:
    """trials: (the time it ends, how many cells it finished); the lines printed."""
    said, now = [], [0.0]
    monkeypatch.setattr(tuner, "say", said.append)
    monkeypatch.setattr(tuner.time, "time", lambda: now[0])
    p = tuner.Progress(total, lambda trial: [(f"cell {i}", "SA 0.5") for i in range(trial)])
    for t, cells in trials:
        now[0] = t
        p.on_trial_complete(0, [], cells)
    return said


def _left(line: str) -> float | None:
    m = re.search(r"~([\d.]+) min left", line)
    return float(m.group(1)) if m else None


def test_packed_cells_that_end_together_do_not_shorten_the_estimate(monkeypatch):
    # Packs of 5 cells, one every 60 s after the first: 12 s a cell, so 10 cells left after the second = 2 min.
    said = _run(monkeypatch, [(100.0, 5), (160.0, 5), (220.0, 5)], total=20)
    assert [_left(s) for s in said[:5]] == [None] * 5  # no pace yet
    assert _left(said[9]) == 2.0  # 60 s for 5 cells, 10 left (was 60 s / 9 cells: 1.1 min)
    assert _left(said[14]) == 1.0


def test_one_cell_trials_keep_their_estimate(monkeypatch):
    said = _run(monkeypatch, [(50.0, 1), (80.0, 1), (110.0, 1)], total=5)
    assert [_left(s) for s in said] == [None, 1.5, 1.0]  # 30 s a cell


def test_a_total_that_grows_as_rounds_are_released_is_the_lines_denominator(monkeypatch):
    """Adaptive seeds and the extreme search release cells as they go: the count is read at each line, so a
    second round's cells read '[4/5]', not '[4/3]' (the demo printed '[31/30]') and keep their estimate."""
    total = [3]
    said, now = [], [0.0]
    monkeypatch.setattr(tuner, "say", said.append)
    monkeypatch.setattr(tuner.time, "time", lambda: now[0])
    p = tuner.Progress(lambda: total[0], lambda trial: [(f"cell {i}", "SA 0.5") for i in range(trial)])
    for t, cells in [(10.0, 1), (20.0, 1), (30.0, 1)]:
        now[0] = t
        p.on_trial_complete(0, [], cells)
    total[0] = 5  # round 2 released two more cells
    now[0] = 40.0
    p.on_trial_complete(0, [], 1)
    assert said[2].startswith("[3/3]") and said[3].startswith("[4/5]") and _left(said[3]) is not None
