"""Adaptive seeds (raydw/findings/sequential.py): the decision rule at each look, its false-match rate over all the looks
of a comparison (simulated: at most the nominal level), and the rounds read back from a store: decided levels
stop, open ones ask for their next seed, a killed round is finished (never rerun), and a store where every
verdict is decided or at its maximum asks for nothing."""
from __future__ import annotations

import numpy as np
import pytest

from raydw.findings.sequential import Design, adjusted_level, decide, replay
from raydw.store import Store
from raydw.findings.uncertainty import delta_stats, pool_seed_variance

from test_seeds_pooled import _put


def test_decide_splits_the_error_over_the_planned_looks():
    # One look: the plain equivalence rule, t(0.975) ~ 1.96 at large df; five looks: t(0.995) ~ 2.58.
    assert decide(1, 1, -0.005, 0.0025, np.inf, 1, 0.05) == "match"          # -0.5 - 0.49 > -1
    assert decide(1, 5, -0.005, 0.0025, np.inf, 1, 0.05) == "inconclusive"   # -0.5 - 0.64 < -1
    assert decide(5, 5, -0.03, 0.005, np.inf, 1, 0.05) == "no match"         # -3 + 1.3 < -1
    assert decide(1, 5, 0.0, 0.0, 3, 1, 0.05) == "match"                     # no variance at all
    assert adjusted_level(0.95, 5) == pytest.approx(0.99)
    with pytest.raises(ValueError, match=r"look 6 is outside the planned looks 1..5"):
        decide(6, 5, 0.0, 0.01, 10, 1, 0.05)


def test_design_orders_seeds_and_bounds_each_round():
    d = Design(start=1, replicate=3, max=5)
    assert d.seeds == [1, 2, 3, 4, 5] and d.rounds == 5
    assert [d.bounds(r) for r in (1, 3, 4, 5)] == [(1, 3), (3, 3), (4, 4), (5, 5)]
    assert Design(2, 2, 4, values=(7, 8, 9, 10)).seeds == [7, 8, 9, 10]
    with pytest.raises(ValueError, match="values lists 2 seeds, max is 4"):
        Design(1, 1, 4, values=(1, 2))


def false_match_rate(sims: int, max_looks_of_rule: int, seed_sd=0.01, image_sd=0.003, margin=1.0) -> float:
    """Share of comparisons with true Delta = -margin (the hardest true loss) called 'match' at ANY of 5 looks.
    Each family: a dense model with 3 seeds and 3 tickets that all get one more seed per look (1..5); the seed part
    pooled by raydw's own pool_seed_variance, Delta's se and df by delta_stats, the state by decide."""
    rng = np.random.default_rng(77 + max_looks_of_rule)
    false = 0
    for _ in range(sims):
        dense = rng.normal(0.80, seed_sd, 3)
        tickets = rng.normal(0.80 - margin / 100, seed_sd, (3, 5))
        shared = rng.normal(0, image_sd, 100)  # the image part: one draw of 100 'resamples' shared by all seeds
        side = lambda accs: [(a, a + shared) for a in accs]  # noqa: E731
        for look in range(1, 6):
            cells = [(dense, 0.0), *[(t[:look], 0.0) for t in tickets if look >= 2]]
            fam = pool_seed_variance(cells)
            # the ticket's resamples differ from the dense ones by an independent image-part draw
            t_side = [(a, a + shared + d) for a, d in zip(tickets[0, :look], [rng.normal(0, image_sd, 100)] * look)]
            delta, se, df = delta_stats(t_side, side(dense), fam, fam)
            if decide(min(look, max_looks_of_rule), max_looks_of_rule, delta, se, df, margin, 0.05) == "match":
                false += 1
                break
    return false / sims


SIMS, NOMINAL = 800, 0.025  # each one-sided test at 2.5 %; the band is 3 binomial SDs of 800 comparisons
BAND_FM = 3 * np.sqrt(NOMINAL * (1 - NOMINAL) / SIMS)


def test_the_false_match_rate_over_five_looks_stays_at_the_nominal_level():
    rate = false_match_rate(SIMS, 5)
    assert rate <= NOMINAL + BAND_FM, f"false-match rate {rate:.4f} with the error split over 5 looks"


def test_deciding_every_look_at_the_full_level_breaks_it():
    """The same comparisons decided at 2.5 % at every look (no split): the simulation must see the difference,
    or the test above could not fail."""
    rate = false_match_rate(SIMS, 1)
    assert rate > NOMINAL + BAND_FM, f"without the split the rate is {rate:.4f}"


# -- rounds read back from a store ------------------------------------------------------------------
N = 400
BASE = np.random.default_rng(0).random(N)


def _bits(p: float, seed: int) -> np.ndarray:
    """A model right on the images easier than p, each seed moving the threshold a little (shared difficulty)."""
    return BASE + 0.03 * np.random.default_rng(seed).standard_normal(N) < p


LEVELS = {1: 0.80, 2: 0.60, 3: 0.78}  # ticket round -> accuracy: about equal, a clear loss, 2 points below


def _round(store, seeds, rounds=(1, 3), dense=(1, 2, 3)):
    for regime in ("standard", "adversarial"):
        for s in dense:
            _put(store, "digits", regime, _bits(0.8, 100 + s), "ST", s, method="dense")
        for k in rounds:
            for s in seeds:
                _put(store, "digits", regime, _bits(LEVELS[k], 10 * k + s), "ST", s, k=k)


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(str(tmp_path / "store"))
    _round(s, [1], rounds=(1, 2, 3))
    return s


def _state(rep, k):
    return rep.verdicts.set_index("ticket_round").loc[k]


def test_round_one_decides_the_clear_loss_and_asks_a_second_seed_for_the_others(store):
    rep = replay(store.uri, Design(1, 3, 5), margin=3, resamples=200)
    assert rep.round == 1
    assert _state(rep, 2)["verdict"] == "not double-win" and _state(rep, 2)["stopped"] == "decided at look 1"
    assert _state(rep, 1)["stopped"] == "open: next ticket seed 2"
    nxt = rep.next_cells
    assert sorted(zip(nxt["target_sparsity"].round(3), nxt["regime"], nxt["seed_rank"])) == [
        (0.2, "adversarial", 2), (0.2, "standard", 2), (0.488, "adversarial", 2), (0.488, "standard", 2)]


def test_the_table_says_why_each_level_stopped_and_at_which_level_it_looked(store):
    from raydw.findings.text import format_verdicts

    text = format_verdicts(replay(store.uri, Design(1, 3, 5), margin=3, resamples=200).verdicts)
    assert "decided at look 1" in text and "open: next ticket seed 2" in text
    assert "[99 % interval" in text  # 95 % split over 5 looks


def test_a_killed_round_is_finished_and_nothing_is_asked_twice(store):
    # Round 2 was killed after the level k=1's two cells: only k=3's are asked for, and round 1 still stands.
    for regime in ("standard", "adversarial"):
        _put(store, "digits", regime, _bits(LEVELS[1], 12), "ST", 2, k=1)
    rep = replay(store.uri, Design(1, 3, 5), margin=3, resamples=200)
    assert rep.round == 1
    assert sorted(zip(rep.next_cells["target_sparsity"].round(3), rep.next_cells["seed_rank"])) == [(0.488, 2), (0.488, 2)]


def test_a_store_decided_or_at_its_maximum_asks_for_nothing_and_says_why(store):
    design = Design(1, 3, 3)  # at most 3 seeds: three looks
    _round(store, [2, 3])  # the two open levels get seeds 2 and 3; the clear loss stays at 1 seed
    rep = replay(store.uri, design, margin=3, resamples=200)
    assert rep.round in (2, 3) and rep.next_cells.empty
    assert _state(rep, 2)["stopped"] == "decided at look 1" and _state(rep, 2)["seeds"] == 1
    assert all(s.startswith("decided at look") or s == "at max (3 seeds)" for s in rep.verdicts["stopped"])
    again = replay(store.uri, design, margin=3, resamples=200)  # a rerun reads the same store: the same answer
    assert again.next_cells.empty and list(again.verdicts["stopped"]) == list(rep.verdicts["stopped"])


def test_a_look_without_a_seed_part_decides_nothing(store):
    """Adversarial pass 2: with one dense seed before the first look (replicate 1) no cell of round 1 is replicated,
    so each interval covers the test images only; the clear loss was 'decided at look 1' on it (and an RA 'match'
    frozen), where the Bonferroni split bounds the error only of intervals that carry the seed variation."""
    rep = replay(store.uri, Design(1, 1, 3), margin=3, resamples=200)
    assert rep.round == 1
    assert (rep.verdicts["verdict"] == "inconclusive").all(), rep.verdicts[["ticket_round", "verdict", "stopped"]]
    assert set(rep.verdicts["stopped"]) == {"open: next ticket seed 2"}


def test_a_level_decided_at_look_1_says_the_seeds_behind_it_though_more_are_stored(store):
    """Adversarial pass 2: a store of a fixed 3-seed run read with the adaptive design said 'seeds 3' beside
    'decided at look 1' (the row of the last round evaluated); the verdict stands on the seeds of its look."""
    _round(store, [2, 3], rounds=(1, 2, 3))  # every level has 3 seeds stored
    rep = replay(store.uri, Design(1, 3, 3), margin=3, resamples=200)
    assert _state(rep, 2)["stopped"] == "decided at look 1" and _state(rep, 2)["seeds"] == 1
