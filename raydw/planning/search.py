"""Extreme double-win search: find a group's largest double-win level while running as few levels as possible.

Pure Python, no Ray, no torch, deterministic. One `ExtremeSearch` per group (pre-training, dataset, data fraction,
ticket method) over that group's ascending levels (IMP rounds k = 1..K, i.e. sparsities 1-0.8^k). The caller runs
the levels it is given, one verdict per level (True: the level's cells are double-win, False: they are not, None:
cells failed or missing), and records them back::

    s = ExtremeSearch(range(1, 13), known=verdicts_already_in_store)
    while not s.done():
        for level in s.propose():
            s.record(level, run_level(level))
    s.answer()   # {"max_win": ..., "max_contig_win": ..., "run": [...], "saved": ..., ...}

Assumption: the verdict is monotone in sparsity (wins up to some level, losses above it). Strategy, as a pure
function of the verdicts recorded so far (so a search rebuilt from the same verdicts continues identically):

1. gallop from the low end: level indices 0, 1, 3, 7, 15, ... (1st, 2nd, 4th, 8th, ... level), then the top
   level, until the first loss;
2. bisect between the highest win below the first loss and the first loss, until they are neighbours;
3. check the level just above the first loss (if it exists and has not run), which catches a one-level blip
   (a win above a loss) and flags it as inconsistent.

Unknown verdicts (None) count as losses for navigation, so the search always terminates; they are never counted
as wins and are listed under "unknown". Re-recording a bool for an unknown level (a retry) is allowed and the search
continues from the updated verdicts. With K levels and a monotone verdict at most `max_levels_run(K)` =
min(K, 2*ceil(log2 K) + 1) levels run (8 of 12 in the worst case for K = 12; checked for every K < 520).

`verify="full"`: once the search above is done, every remaining level is proposed too, so the answer is the
full grid's (largest win anywhere, largest contiguous win from the bottom) and no assumption is left.
"""
from __future__ import annotations

from collections import deque
from typing import Hashable, Iterator, Literal, Mapping, Sequence

__all__ = ["ExtremeSearch", "max_levels_run"]

_MAX_NODES = 4096  # cap on the hypothetical-verdict tree walked by propose(max_n > 1)


def max_levels_run(k: int) -> int:
    """The most levels the search (verify="none", one level at a time) runs on K levels with a monotone verdict."""
    return 0 if k <= 0 else min(k, 2 * (k - 1).bit_length() + 1)  # (k-1).bit_length() == ceil(log2 k)


def _as_verdict(level, win) -> bool | None:
    """True/False/None; numpy booleans become bool, pandas' NA and NaN (a verdicts table's missing) become None."""
    if win is None or isinstance(win, bool):
        return win
    if type(win).__module__ == "numpy" and type(win).__name__ in ("bool", "bool_"):
        return bool(win)
    if repr(win) == "<NA>" or (isinstance(win, float) and win != win):
        return None
    raise TypeError(f"verdict for level {level!r} must be True, False or None, got {win!r}")


def _gallop(n: int) -> Iterator[int]:
    """Indices 0, 1, 3, 7, ... below n, then n - 1."""
    i = 1
    while i - 1 < n - 1:
        yield i - 1
        i *= 2
    yield n - 1


def _next_index(n: int, v: Mapping[int, bool | None]) -> int | None:
    """The sequential strategy's next level index given verdicts by index, or None when the search is done."""
    first_loss = min((i for i, x in v.items() if x is not True), default=n)
    last_win = max((i for i, x in v.items() if x is True and i < first_loss), default=-1)
    if first_loss == n:  # no loss yet: gallop
        if last_win == n - 1:
            return None
        return next(g for g in _gallop(n) if g > last_win)
    if first_loss - last_win > 1:  # bisect
        return (last_win + first_loss) // 2
    check = first_loss + 1  # neighbours known: one look beyond the first loss
    return check if check < n and check not in v else None


class ExtremeSearch:
    """Find the extreme double-win level of one group by running as few levels as possible.

    levels: the group's levels, strictly ascending (IMP rounds, or sparsities: any sortable hashable values).
    verify: "none" stops when the monotone answer is pinned down; "full" then proposes every remaining level.
    known: verdicts already in the store (resume); they are never proposed again. Leave a failed level (None) out
        of `known` to have it proposed again, or record a bool for it later.

    See the module docstring for the strategy and the guarantee.
    """

    def __init__(self, levels: Sequence[Hashable], verify: Literal["none", "full"] = "none",
                 known: Mapping[Hashable, bool | None] | None = None):
        levels = list(levels)
        if any(not a < b for a, b in zip(levels, levels[1:])):
            raise ValueError(f"levels must be strictly ascending, got {levels}")
        if verify not in ("none", "full"):
            raise ValueError(f"verify must be 'none' or 'full', got {verify!r}")
        self.levels = levels
        self.verify = verify
        self._index = {lv: i for i, lv in enumerate(levels)}
        self._v: dict[int, bool | None] = {}
        self._running: set[int] = set()
        for level, win in (known or {}).items():
            self.record(level, win)

    # -- recording -------------------------------------------------------------------------------------------------
    def record(self, level: Hashable, win: bool | None) -> None:
        """Record a level's verdict: True (double-win), False (not), None (cells failed or missing: unknown).

        A bool may replace an earlier None (a retry); None never replaces a bool (a failed re-run loses nothing);
        a bool contradicting an earlier bool is an error.
        """
        i = self._idx(level)
        win = _as_verdict(level, win)
        old = self._v.get(i)
        if old is not None and win is not None and win != old:
            raise ValueError(f"level {level!r} already recorded as {old}, got {win}")
        if old is None:
            self._v[i] = win
        self._running.discard(i)

    def _idx(self, level: Hashable) -> int:
        try:
            return self._index[level]
        except (KeyError, TypeError):
            raise ValueError(f"unknown level {level!r}; levels are {self.levels}") from None

    # -- proposing -------------------------------------------------------------------------------------------------
    def propose(self, max_n: int = 1) -> list:
        """Up to max_n levels to run next, none of them decided or already proposed and not yet recorded.

        The first is the sequential strategy's next level (unless it is in flight); the others are speculative: the
        levels the strategy would need next under either outcome of the levels in flight or just proposed (walked
        breadth first, win before loss). A caller running one level at a time never has a level in flight when it
        asks, so it only gets sequential levels. With verify="full", spare slots go to the lowest remaining levels.
        Returns [] when the search is done, or when every level it may still need is in flight.
        The returned levels count as in flight until recorded.
        """
        if max_n < 1:
            return []
        n = len(self.levels)
        out: list[int] = []
        seen_states = 0
        queue: deque[dict[int, bool | None]] = deque([dict(self._v)])
        while queue and len(out) < max_n and seen_states < _MAX_NODES:
            state = queue.popleft()
            seen_states += 1
            nxt = _next_index(n, state)
            if nxt is None:
                continue
            if nxt not in self._running and nxt not in out:
                out.append(nxt)
            queue.append({**state, nxt: True})
            queue.append({**state, nxt: False})
        if self.verify == "full":
            for i in range(n):
                if len(out) >= max_n:
                    break
                if i not in self._v and i not in self._running and i not in out:
                    out.append(i)
        self._running.update(out)
        return [self.levels[i] for i in out]

    def done(self) -> bool:
        """True once no further level is needed (levels still in flight, if any, are not needed for the answer)."""
        if _next_index(len(self.levels), self._v) is not None:
            return False
        return self.verify == "none" or len(self._v) == len(self.levels)

    @property
    def in_flight(self) -> list:
        """Levels proposed and not yet recorded (after done(), these may be cancelled)."""
        return [self.levels[i] for i in sorted(self._running)]

    # -- answering -------------------------------------------------------------------------------------------------
    def answer(self) -> dict:
        """The answer from the verdicts recorded so far (final once done()).

        max_win: the largest level seen to win (None: none did). max_contig_win: the largest level that wins with
        no loss or unknown recorded at or below it (levels not run below it are assumed wins, by monotonicity).
        Both are None-safe: an unknown verdict is never a win. consistent: False when a recorded win lies above a
        recorded loss (the verdict is not monotone; then levels not run may disagree with the assumption too).
        """
        n = len(self.levels)
        v = self._v
        wins = [i for i, x in v.items() if x is True]
        first_loss = min((i for i, x in v.items() if x is not True), default=n)
        contig = [i for i in wins if i < first_loss]
        lowest_false = min((i for i, x in v.items() if x is False), default=n)
        lv = self.levels
        return {
            "max_win": lv[max(wins)] if wins else None,
            "max_contig_win": lv[max(contig)] if contig else None,
            "first_loss": lv[first_loss] if first_loss < n else None,
            "run": [lv[i] for i in sorted(v)],
            "saved": n - len(v) - len(self._running - v.keys()),
            "unknown": [lv[i] for i in sorted(i for i, x in v.items() if x is None)],
            "consistent": not any(i > lowest_false for i in wins),
            "assumption": "none (full grid)" if len(v) == n else "monotone",
            "done": self.done(),
        }

    # -- resume ----------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        """JSON-ready state: levels, verify and the recorded verdicts (levels in flight are not kept)."""
        return {"levels": list(self.levels), "verify": self.verify,
                "verdicts": [[self.levels[i], self._v[i]] for i in sorted(self._v)]}

    @classmethod
    def from_state(cls, state: Mapping) -> "ExtremeSearch":
        """Rebuild a search from state(); it continues exactly as the original would have (the same as passing the
        verdicts as known=)."""
        return cls(state["levels"], state.get("verify", "none"), known={lv: w for lv, w in state["verdicts"]})
