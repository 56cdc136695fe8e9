"""Adaptive seeds while a sweep runs: the gate that releases the next round's cells once a round is stored.

The Scheduler (raydw.planning.schedule) holds every cell the design may still ask for as a gated task; `SeedGate.allows`
says which are released. After cells finish, `update` reads the store again through the planner's own definition
(raydw.planning.seedplan.seed_rounds, as raydw.planning.plan.Plan.of calls it) and releases the cells the next round asks for: the
next seed of the comparisons still inconclusive. A round is looked at only once every cell released for it has a
row, so the gate replays the stored outcomes once per round, not at every poll. Ray-free.
"""
from __future__ import annotations

from raydw.planning.plan import Plan, StoreView
from raydw.planning.seedplan import seed_rounds
from raydw.store import Store


class SeedGate:
    """`within`: another gate (the extreme search's LevelGate) whose released ticket cells are the only ones this
    gate waits for; None: every cell this gate released."""

    def __init__(self, plan: Plan, store: Store, within=None):
        self.spec, self.store, self.within = plan.spec, store, within
        self.cells = [c for c in plan.cells if c.cell_id not in plan.waiting]
        self.ids = {c.cell_id for c in self.cells}
        self.dense = {c.cell_id for c in self.cells if c.ticket_method == "dense"}
        self.rounds = plan.seeds
        self.released: set[str] = set(plan.seeds.asked)
        self._looked_at: int | None = None  # spec rows stored when the rounds were last replayed

    def allows(self, cell_id: str) -> bool:
        return cell_id in self.released

    def waits_for(self) -> set[str]:
        """The released cells that will run: all of them, or with the extreme search the dense ones and the ticket
        cells of the levels it has asked for."""
        if self.within is None:
            return set(self.released)
        return {i for i in self.released if i in self.dense or self.within.allows(i)}

    def update(self, view: StoreView | None = None) -> bool:
        """Release the next round's cells if the current round is stored; True when the rounds were replayed."""
        view = StoreView.read(self.store, ("trials",)) if view is None else view
        stored = {i: s for i, s in view.status.items() if i in self.ids}
        if not self.waits_for() <= stored.keys() or len(stored) == self._looked_at:
            return False  # a round is looked at once all its cells have a row, and only once
        self._looked_at = len(stored)
        self.rounds = seed_rounds(self.spec, self.cells, self.store, stored)
        self.released |= self.rounds.asked
        return True

    def not_needed(self) -> set[str]:
        """Cells the design never asked for: their comparisons are decided (or stopped at the maximum)."""
        return self.ids - self.released


class Gates:
    """Several gates as one: a task runs when every gate allows it; updated in order (the seed gate first, so the
    extreme search reads the verdicts of the round just looked at)."""

    def __init__(self, *gates):
        self.gates = [g for g in gates if g is not None]

    def allows(self, cell_id: str) -> bool:
        return all(g.allows(cell_id) for g in self.gates)

    def update(self) -> None:
        for g in self.gates:
            g.update()
