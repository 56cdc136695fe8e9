"""ExtremeSearch on synthetic verdict oracles (level -> True/False/None): answers, levels run, resume, parallel use.

No Ray, no torch: every test drives the search to completion in a plain loop and takes milliseconds.
"""
from __future__ import annotations

import json
import math
import random

import pytest

from raydw.planning.search import ExtremeSearch, max_levels_run

K12 = list(range(1, 13))  # IMP rounds 1..12 (sparsity 1-0.8^k)


def threshold(t):
    """Monotone oracle: levels 1..t win, the rest lose (t = 0: none wins)."""
    return lambda level: level <= t


def table(verdicts: dict):
    return lambda level: verdicts[level]


def drive(search: ExtremeSearch, oracle) -> list:
    """Run the search one level at a time to the end; return the levels in the order proposed."""
    proposed = []
    for _ in range(10 * len(search.levels) + 10):
        if search.done():
            return proposed
        got = search.propose()
        assert len(got) == 1, f"a one-at-a-time caller with nothing in flight must get exactly one level, got {got}"
        proposed += got
        search.record(got[0], oracle(got[0]))
    raise AssertionError("search did not terminate")


def drive_parallel(search: ExtremeSearch, oracle, slots: int, rng: random.Random) -> list:
    """Keep up to `slots` levels in flight, finishing them in random order; check every proposal on the way."""
    proposed, in_flight = [], []
    for _ in range(10 * len(search.levels) + 10):
        if search.done():
            return proposed
        decided = set(search.answer()["run"])
        got = search.propose(slots - len(in_flight))
        assert len(got) <= slots - len(in_flight)
        assert not set(got) & decided, f"proposed decided levels {set(got) & decided}"
        assert not set(got) & set(in_flight), f"proposed levels in flight {set(got) & set(in_flight)}"
        assert len(set(got)) == len(got)
        proposed += got
        in_flight += got
        assert in_flight, "not done, nothing in flight, and nothing proposed: the search is stuck"
        level = in_flight.pop(rng.randrange(len(in_flight)))
        search.record(level, oracle(level))
    raise AssertionError("search did not terminate")


def full_grid(levels, oracle) -> tuple:
    """The answer from every level: (largest win, largest level with every level up to it a win)."""
    v = {lv: oracle(lv) for lv in levels}
    wins = [lv for lv in levels if v[lv] is True]
    contig = None
    for lv in levels:
        if v[lv] is not True:
            break
        contig = lv
    return (max(wins) if wins else None), contig


# -- monotone verdicts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 12, 16, 33])
def test_monotone_verdicts_give_the_threshold_as_both_answers_for_every_threshold(k):
    levels = list(range(1, k + 1))
    for t in range(k + 1):
        s = ExtremeSearch(levels)
        drive(s, threshold(t))
        a = s.answer()
        expect = t if t else None
        assert (a["max_win"], a["max_contig_win"]) == (expect, expect), f"K={k} t={t}: {a}"
        assert a["consistent"] is True and a["unknown"] == []


def test_monotone_search_runs_at_most_2_ceil_log2_k_plus_1_levels():
    for k in range(1, 70):
        bound = min(k, 2 * math.ceil(math.log2(k)) + 1) if k > 1 else 1
        assert max_levels_run(k) == bound
        for t in range(k + 1):
            s = ExtremeSearch(range(1, k + 1))
            drive(s, threshold(t))
            assert len(s.answer()["run"]) <= bound, f"K={k} t={t} ran {s.answer()['run']}"


def test_the_paper_grid_runs_at_most_8_of_12_levels_for_any_threshold():
    runs = []
    for t in range(13):
        s = ExtremeSearch(K12)
        drive(s, threshold(t))
        runs.append(len(s.answer()["run"]))
    assert max(runs) == 8 and sum(runs) / len(runs) < 6  # 5.7 on average


def test_a_threshold_at_round_10_runs_the_gallop_then_bisects_between_8_and_12():
    s = ExtremeSearch(K12)
    assert drive(s, threshold(10)) == [1, 2, 4, 8, 12, 10, 11]
    assert s.answer()["saved"] == 5 and s.answer()["first_loss"] == 11


def test_all_win_runs_only_the_gallop_levels_and_answers_the_top_level():
    s = ExtremeSearch(K12)
    assert drive(s, threshold(12)) == [1, 2, 4, 8, 12]
    a = s.answer()
    assert a["max_win"] == a["max_contig_win"] == 12 and a["saved"] == 7 and a["first_loss"] is None


def test_none_win_answers_none_after_level_1_and_the_check_of_level_2():
    s = ExtremeSearch(K12)
    assert drive(s, threshold(0)) == [1, 2]
    a = s.answer()
    assert a["max_win"] is None and a["max_contig_win"] is None and a["first_loss"] == 1 and a["consistent"]


@pytest.mark.parametrize("win", [True, False])
def test_a_single_level_runs_once(win):
    s = ExtremeSearch([7])
    assert drive(s, lambda lv: win) == [7]
    assert s.answer()["max_win"] == (7 if win else None) and s.answer()["saved"] == 0


def test_levels_may_be_sparsities_rather_than_rounds():
    sparsities = [round(1 - 0.8 ** k, 4) for k in K12]
    s = ExtremeSearch(sparsities)
    drive(s, lambda sp: sp <= 0.8926)
    assert s.answer()["max_contig_win"] == 0.8926


# -- non-monotone verdicts -----------------------------------------------------------------------------------------

def test_a_win_just_above_the_first_loss_is_caught_by_the_neighbour_check_and_flagged():
    v = {lv: lv <= 5 or lv == 7 for lv in K12}  # 6 loses, 7 wins again
    s = ExtremeSearch(K12)
    ran = drive(s, table(v))
    a = s.answer()
    assert 7 in ran and a["consistent"] is False
    assert a["max_contig_win"] == 5 and a["max_win"] == 7 and a["assumption"] == "monotone"


def test_a_dip_the_search_never_ran_goes_unnoticed_without_verify():
    v = {lv: lv in (1, 2, 4) for lv in K12}  # win, win, loss, win, loss...: level 3 is never run
    s = ExtremeSearch(K12)
    ran = drive(s, table(v))
    a = s.answer()
    assert 3 not in ran and a["consistent"] is True
    assert a["max_contig_win"] == 4  # right from what it ran under the monotone assumption, wrong on the full grid


def test_verify_full_finds_the_dip_and_gives_the_full_grid_answer():
    v = {lv: lv in (1, 2, 4) for lv in K12}
    s = ExtremeSearch(K12, verify="full")
    ran = drive(s, table(v))
    a = s.answer()
    assert sorted(ran) == K12
    assert (a["max_win"], a["max_contig_win"], a["consistent"]) == (4, 2, False)
    assert a["assumption"] == "none (full grid)" and a["saved"] == 0


def test_verify_full_answer_equals_the_full_grid_on_random_verdicts_with_failures():
    rng = random.Random(0)
    for _ in range(300):
        v = {lv: rng.choice([True, True, False, None]) for lv in K12}
        s = ExtremeSearch(K12, verify="full")
        ran = drive(s, table(v))
        a = s.answer()
        assert sorted(ran) == K12, "every level runs exactly once"
        assert (a["max_win"], a["max_contig_win"]) == full_grid(K12, table(v)), v
        assert a["unknown"] == [lv for lv in K12 if v[lv] is None]


def test_verify_full_runs_the_search_levels_first():
    s = ExtremeSearch(K12, verify="full")
    ran = drive(s, threshold(10))
    assert ran[:7] == [1, 2, 4, 8, 12, 10, 11] and sorted(ran[7:]) == [3, 5, 6, 7, 9]


def test_any_verdicts_terminate_within_the_level_count_and_max_contig_win_matches_what_ran():
    rng = random.Random(1)
    for _ in range(300):
        v = {lv: rng.choice([True, False, None]) for lv in K12}
        s = ExtremeSearch(K12)
        ran = drive(s, table(v))
        a = s.answer()
        assert len(set(ran)) == len(ran) <= 12
        below = [lv for lv in sorted(ran) if a["first_loss"] is None or lv < a["first_loss"]]
        assert all(v[lv] is True for lv in below) and a["max_contig_win"] == (max(below) if below else None)
        seen_loss = [lv for lv in ran if v[lv] is False]
        assert a["consistent"] == (not any(v[lv] is True and lv > min(seen_loss) for lv in ran) if seen_loss else True)


# -- unknown verdicts (failed or missing cells) --------------------------------------------------------------------

def test_an_unknown_level_counts_as_a_loss_for_navigation_and_is_reported():
    oracle = lambda lv: None if lv == 4 else lv <= 10  # noqa: E731
    s = ExtremeSearch(K12)
    ran = drive(s, oracle)
    a = s.answer()
    assert ran == [1, 2, 4, 3, 5]  # gallop stops at 4, bisects to 3, checks 5 beyond the unknown
    assert a["unknown"] == [4] and a["max_contig_win"] == 3 and a["max_win"] == 5 and a["consistent"] is True


def test_retrying_an_unknown_level_with_a_verdict_reopens_the_search():
    s = ExtremeSearch(K12)
    drive(s, lambda lv: None if lv == 4 else lv <= 10)
    s.record(4, True)
    assert not s.done()
    drive(s, threshold(10))
    a = s.answer()
    assert a["max_contig_win"] == 10 and a["unknown"] == []


def test_a_failed_rerun_does_not_erase_a_known_verdict():
    s = ExtremeSearch(K12, known={1: True})
    s.record(1, None)
    assert s.answer()["max_win"] == 1 and s.answer()["unknown"] == []


def test_a_contradicting_verdict_for_a_decided_level_is_an_error():
    s = ExtremeSearch(K12, known={1: True})
    with pytest.raises(ValueError, match="already recorded"):
        s.record(1, False)


def test_verdicts_from_a_pandas_table_are_accepted_with_na_as_unknown():
    import numpy as np
    import pandas as pd

    s = ExtremeSearch(K12, known={1: np.bool_(True), 2: pd.NA, 3: float("nan"), 4: np.bool_(False)})
    a = s.answer()
    assert a["max_win"] == 1 and a["unknown"] == [2, 3] and a["first_loss"] == 2 and a["consistent"]
    with pytest.raises(TypeError, match="True, False or None"):
        s.record(5, "yes")


def test_unknown_levels_and_unsorted_levels_are_rejected():
    with pytest.raises(ValueError, match="unknown level"):
        ExtremeSearch(K12, known={13: True})
    with pytest.raises(ValueError, match="ascending"):
        ExtremeSearch([1, 3, 2])


# -- resume --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verify", ["none", "full"])
def test_a_resumed_search_never_reruns_a_level_and_answers_as_an_uninterrupted_one(verify):
    rng = random.Random(2)
    oracles = [threshold(t) for t in range(13)] + [table({lv: rng.choice([True, False, None]) for lv in K12})
                                                   for _ in range(20)]
    for oracle in oracles:
        whole = ExtremeSearch(K12, verify=verify)
        order = drive(whole, oracle)
        for cut in range(len(order) + 1):
            first = ExtremeSearch(K12, verify=verify)
            for lv in order[:cut]:
                assert first.propose() == [lv]
                first.record(lv, oracle(lv))
            resumed = ExtremeSearch(K12, verify=verify, known={lv: oracle(lv) for lv in order[:cut]})
            rest = drive(resumed, oracle)
            assert not set(rest) & set(order[:cut]), "a level already in the store was proposed again"
            assert order[:cut] + rest == order
            assert resumed.answer() == whole.answer()


def test_state_round_trips_through_json_and_continues_the_same_way():
    s = ExtremeSearch(K12)
    for _ in range(3):
        (lv,) = s.propose()
        s.record(lv, threshold(10)(lv))
    back = ExtremeSearch.from_state(json.loads(json.dumps(s.state())))
    assert back.state() == s.state()
    assert drive(back, threshold(10)) == [8, 12, 10, 11]


def test_a_level_in_flight_when_state_was_saved_is_proposed_again_after_resume():
    s = ExtremeSearch(K12, known={1: True})
    assert s.propose() == [2]
    assert ExtremeSearch.from_state(s.state()).propose() == [2]


# -- parallel proposals --------------------------------------------------------------------------------------------

def test_parallel_proposals_never_propose_a_decided_or_running_level():
    rng = random.Random(3)
    oracles = [threshold(t) for t in range(13)] + [table({lv: rng.choice([True, False, None]) for lv in K12})
                                                   for _ in range(50)]
    for verify in ("none", "full"):
        for oracle in oracles:
            s = ExtremeSearch(K12, verify=verify)
            ran = drive_parallel(s, oracle, slots=3, rng=rng)
            assert len(set(ran)) == len(ran)


def test_parallel_search_on_monotone_verdicts_gives_the_threshold():
    rng = random.Random(4)
    for t in range(13):
        s = ExtremeSearch(K12)
        drive_parallel(s, threshold(t), slots=3, rng=rng)
        assert s.answer()["max_contig_win"] == s.answer()["max_win"] == (t or None)


def test_the_first_parallel_proposal_is_the_sequential_level_then_speculation_on_its_outcomes():
    s = ExtremeSearch(K12, known={1: True, 2: True, 4: True})
    got = s.propose(3)
    assert got[0] == 8  # the gallop's next level
    assert set(got[1:]) == {12, 6}  # 8 wins -> 12; 8 loses -> bisect to 6


def test_propose_waits_while_the_only_level_still_needed_is_in_flight():
    s = ExtremeSearch([5])
    assert s.propose(3) == [5]
    assert s.propose(3) == [] and not s.done() and s.in_flight == [5]
    s.record(5, True)
    assert s.done() and s.propose(3) == [] and s.in_flight == []


def test_speculative_levels_still_in_flight_when_done_are_listed_for_cancelling():
    s = ExtremeSearch(K12, known={1: True, 2: True, 4: True})
    assert s.propose(3) == [8, 12, 6]
    s.record(8, True)
    s.record(12, True)  # all win: the speculative bisection level 6 is no longer needed
    assert s.done() and s.in_flight == [6] and s.answer()["max_contig_win"] == 12 and s.answer()["saved"] == 6
