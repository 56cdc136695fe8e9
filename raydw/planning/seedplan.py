"""The adaptive-seed part of a sweep's plan: which cells of a `seeds: {adaptive: ...}` spec the design asks for now.

raydw.planning.plan calls `seed_rounds` (it stays the one place that decides what runs); the scheduler's SeedGate calls it
again, through the same definition, after each round's cells are stored. The rounds are raydw.findings.sequential.replay's:
round 1 is every ticket cell's first `start` seeds and every dense cell's first `replicate`; a comparison still
inconclusive after round r asks for its next seed (docs/findings.md, "Adaptive seeds"). What runs now (`asked`):
round 1, every cell with a row (a failed one is retried, as everywhere) and the cells the next round lacks. What may
follow (`more`): the seeds up to `max` of the comparisons still open. The rest is not needed: its comparisons are
decided (or have stopped at their maximum). Rerun = resume: the seeds stored are looks already taken.

Reads the trials table (per-example outcomes included) with pandas; torch- and Ray-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from raydw.findings import analysis
from raydw.cells import Cell
from raydw.findings.sequential import Design, cells_of, replay

_DIGITS = 9  # levels and fractions are compared after rounding, as raydw.findings.analysis compares them


def setting_key(pretraining, dataset, regime, fraction, method, sparsity) -> tuple:
    return (pretraining, dataset, regime, round(float(fraction), _DIGITS), method,
            0.0 if method == "dense" else round(float(sparsity), _DIGITS))


def cell_setting(c: Cell) -> tuple:
    return setting_key(c.pretraining, c.dataset, c.regime, c.data_fraction, c.ticket_method, c.target_sparsity)


@dataclass(frozen=True)
class SeedRounds:
    """Where an adaptive sweep stands. `replay`: raydw.findings.sequential.Replay of the stored rows (None: no row yet);
    `asked`: cell ids the design runs now or has run; `more`: cell ids that may follow while verdicts stay open;
    `not_needed`: cell ids without a row that no open comparison can ask for."""

    design: Design
    replay: object | None
    asked: frozenset[str]
    more: frozenset[str]
    not_needed: frozenset[str]

    @property
    def round(self) -> int:
        """The last round looked at (0: round 1 is not complete)."""
        return 0 if self.replay is None else self.replay.round

    def levels(self) -> dict[str, int]:
        """How many ticket levels stopped why: decided, at max, open, missing (round 1 incomplete: all open)."""
        if self.replay is None or self.replay.round == 0:
            return {}
        out: dict[str, int] = {}
        for s in self.replay.verdicts["stopped"]:
            k = "decided" if s.startswith("decided") else "at max" if s.startswith("at max") else \
                "open" if s.startswith("open") else "missing"
            out[k] = out.get(k, 0) + 1
        return out

    def describe(self) -> str:
        """One line: the design, the round, the levels by why they stopped."""
        d = self.design
        lv = self.levels()
        stand = ", ".join(f"{n} {k}" for k, n in lv.items()) if lv else "no look yet"
        return (f"adaptive seeds (start {d.start}, dense replicate {d.replicate}, max {d.max}; {d.rounds} looks, the error "
                f"split over them): round {self.round} looked at; ticket levels: {stand}")


def verdict_args(spec) -> dict:
    """The spec's verdict settings as raydw.findings.sequential.replay takes them (it sets the rule itself)."""
    v = analysis.verdict_settings(spec)
    return {k: v[k] for k in ("margin", "level", "resamples", "seed", "seed_variance")}


def seed_rounds(spec, cells: list[Cell], store, stored: dict[str, str]) -> SeedRounds:
    """The adaptive design against the store. `cells`: the plan's cells that can run (not waiting for a recipe);
    `stored`: cell_id -> status of the rows the plan's StoreView read (only spec cells are looked at)."""
    design = Design.of(spec.adaptive_seeds())
    rank = {s: i + 1 for i, s in enumerate(design.seeds)}
    first = {c.cell_id for c in cells if rank[c.seed] <= (design.replicate if c.ticket_method == "dense" else design.start)}
    have = {c.cell_id for c in cells if c.cell_id in stored}
    if not have:  # nothing looked at: round 1 runs, every other cell may follow
        return SeedRounds(design, None, frozenset(first), frozenset(c.cell_id for c in cells) - first, frozenset())
    rep = replay(store.uri, design, cells=have, **verdict_args(spec))
    by_key = {(cell_setting(c), rank[c.seed]): c.cell_id for c in cells}
    nxt = {by_key[k] for k in (((setting_key(*r[:6]), int(r[6])) for r in rep.next_cells.itertuples(index=False)))
           if k in by_key}
    asked = frozenset(first | have | nxt)
    if rep.round == 0:
        more = frozenset(c.cell_id for c in cells) - asked
    else:
        open_settings = _open_settings(rep)
        more = frozenset(c.cell_id for c in cells if c.cell_id not in asked and cell_setting(c) in open_settings)
    return SeedRounds(design, rep, asked, more, frozenset(c.cell_id for c in cells) - asked - more)


def _open_settings(rep) -> set[tuple]:
    """The (ticket and dense) settings behind the metrics still inconclusive of the levels still open."""
    regimes = rep.verdicts.attrs.get("regimes", {})
    out: set = set()
    for row in rep.verdicts.to_dict("records"):
        if not str(row["stopped"]).startswith("open"):
            continue
        for m in analysis.METRICS:
            if row[f"state_{m}"] != "inconclusive" or regimes.get("standard" if m == "sa_std" else "adversarial") is None:
                continue
            out.update(setting_key(*s) for s in cells_of(row, m, regimes))
    return out
