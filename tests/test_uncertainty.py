"""Intervals of ticket - dense from per-example outcomes: coverage on simulated data with a known difference, the
three states of the equivalence rule on hand-made stores, fixed-sequence extreme sparsity, and old rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raydw import outcomes
from raydw.findings.analysis import extreme, verdicts
from raydw.findings.text import format_verdicts
from raydw.cli import main
from raydw.store import Store
from raydw.findings.uncertainty import Bootstrap, delta_interval, resampled_accuracy

N = 400  # test images of the hand-made stores


def _pair(rng, n: int, p_dense: float, delta: float, agree: float = 0.8):
    """Correct-bits of a dense model and a ticket on n images drawn from a population where the ticket's accuracy
    is p_dense + delta; the two agree on most images (paired outcomes, as two fine-tunings of one network do)."""
    dense = rng.random(n) < p_dense
    # Keep agree of the dense outcomes, redraw the rest so the ticket's marginal is p_dense + delta exactly.
    keep = rng.random(n) < agree
    p_redraw = (p_dense + delta - agree * p_dense) / (1 - agree)
    ticket = np.where(keep, dense, rng.random(n) < p_redraw)
    return ticket, dense


def _interval(bits_t: list, bits_d: list, boot: Bootstrap, name: str) -> tuple[float, float]:
    acc = resampled_accuracy({**{("t", i): b for i, b in enumerate(bits_t)}, **{("d", i): b for i, b in enumerate(bits_d)}},
                             boot, name)
    side = lambda m, bits: [(b.mean(), acc[(m, i)]) for i, b in enumerate(bits)]  # noqa: E731
    return delta_interval(side("t", bits_t), side("d", bits_d), boot.level)


def test_the_95_percent_interval_covers_a_known_difference_in_93_to_97_percent_of_1000_simulated_stores():
    """Each simulated store is analysed as raydw analyses every store: bootstrap seed 0 on its test set (the same image
    draws for every store, kept by resampled_accuracy): 953 covered. With a bootstrap seed of its own per store, as
    this test had before, 957, and 291 of 300 in the three-seed test below either way (both forms run with this
    file's helpers, 2026-12-07); the shared draws cut the two tests from ~18 to ~1.4 CPU-s."""
    rng = np.random.default_rng(12345)
    true_delta, covered, stores = -0.02, 0, 1000
    for _ in range(stores):
        ticket, dense = _pair(rng, 500, 0.70, true_delta)
        lo, hi = _interval([ticket], [dense], Bootstrap(1000, 0.95, seed=0), "sim")
        covered += lo <= true_delta <= hi
    assert 930 <= covered <= 970, f"coverage {covered / stores:.3f}"


def _seeded_setting(rng, k: int, n: int, seed_sd: float, true_delta: float):
    """k seeds per side on n images; each seed shifts its model by a normal effect (training randomness), so the
    true Delta is an expectation over seeds and images: a probit model, correct = [z + a + u_seed + e > 0]."""
    from scipy.stats import norm

    se, a_d = 0.3, 0.95
    tot = np.sqrt(1 + seed_sd ** 2 + se ** 2)
    a_t = norm.ppf(norm.cdf(a_d / tot) + true_delta) * tot
    z = rng.standard_normal(n)  # image difficulty, shared: the pairing
    draw = lambda a: [z + a + seed_sd * rng.standard_normal() + se * rng.standard_normal(n) > 0 for _ in range(k)]  # noqa: E731
    return draw(a_t), draw(a_d)


def test_with_three_seeds_whose_spread_dominates_the_interval_still_covers_near_95_percent():
    """The case a plain two-level percentile bootstrap got wrong (86 % measured): CIFAR-sized test set, models that
    agree on most images, a seed-to-seed SD of about 1 point per model."""
    rng = np.random.default_rng(2024)
    covered, settings, true_delta = 0, 300, -0.01
    for _ in range(settings):
        t, d = _seeded_setting(rng, 3, 10_000, 0.05, true_delta)
        lo, hi = _interval(t, d, Bootstrap(200, 0.95, seed=0), "s")  # seed 0 for every store, as above
        covered += lo <= true_delta <= hi
    assert covered / settings >= 0.92, f"coverage {covered / settings:.3f}"


def test_the_direct_t_quantile_and_bartlett_equal_scipy_stats():
    """uncertainty.t_quantile and bartlett_p skip scipy.stats' argument handling (most of a verdict table's time);
    they must give scipy.stats' numbers, at fractional, small and infinite df and for 2 to 6 samples of 2 to 5."""
    from scipy.stats import bartlett, t as student_t

    from raydw.findings.uncertainty import bartlett_p, t_quantile

    for df in (0.7, 1, 2, 2.5, 3, 7.3, 30, 1e4, np.inf):
        for q in (0.5, 0.9, 0.975, 0.995, 1 - 0.05 / 10):
            assert t_quantile(q, df) == pytest.approx(float(student_t.ppf(q, df)), rel=1e-12, abs=1e-12), (q, df)
    rng = np.random.default_rng(3)
    for _ in range(200):
        samples = [rng.normal(0, rng.uniform(0.1, 3), size=rng.integers(2, 6)) for _ in range(rng.integers(2, 7))]
        assert bartlett_p(samples) == pytest.approx(float(bartlett(*samples).pvalue), rel=1e-9, abs=1e-15)


def test_kept_image_draws_give_the_same_resamples_as_fresh_ones():
    """resampled_accuracy keeps the last image draws (uncertainty._DRAWS): other outcomes on the same test set and
    bootstrap must get exactly what fresh draws give them, over a last chunk shorter than the others (300 = 250 + 50)."""
    from raydw.findings import uncertainty

    rng = np.random.default_rng(5)
    boot = Bootstrap(300, 0.95, seed=11)
    first, other = ({k: rng.random(500) < p for k in "ab"} for p in (0.7, 0.6))
    uncertainty._DRAWS.clear()
    resampled_accuracy(other, boot, "ds")
    assert len(uncertainty._DRAWS) == 1
    kept = resampled_accuracy(first, boot, "ds")
    uncertainty._DRAWS.clear()
    fresh = resampled_accuracy(first, boot, "ds")
    assert all(np.array_equal(kept[k], fresh[k]) for k in first)
    assert not np.array_equal(fresh["a"], resampled_accuracy(first, Bootstrap(300, 0.95, seed=12), "ds")["a"])


def test_seed_to_seed_variation_widens_the_interval_and_one_seed_has_none_to_estimate():
    rng = np.random.default_rng(7)
    boot = Bootstrap(resamples=1000)
    t, d = _pair(rng, 2000, 0.8, 0.0)
    acc = resampled_accuracy({"t": t, "d": d}, boot, "x")
    one = delta_interval([(t.mean(), acc["t"])], [(d.mean(), acc["d"])], boot.level)
    # Three ticket seeds 4 points apart on the same images: the seed part must add width.
    spread = [(t.mean() + s, acc["t"] + s) for s in (-0.04, 0.0, 0.04)]
    three = delta_interval(spread, [(d.mean(), acc["d"])] * 3, boot.level)
    assert (three[1] - three[0]) > 3 * (one[1] - one[0])
    assert delta_interval([(t.mean(), acc["t"])], [(d.mean(), acc["d"])], boot.level) == one


def test_outcomes_round_trip_through_their_packed_and_text_forms():
    bits = np.random.default_rng(0).random(10_001) < 0.3
    assert (outcomes.unpack(outcomes.pack(bits), len(bits)) == bits).all()
    assert outcomes.from_text(outcomes.to_text(outcomes.pack(bits))) == outcomes.pack(bits)
    assert len(outcomes.pack(np.zeros(10_000, bool))) == 1250  # CIFAR's test set: 1,250 bytes per outcome


# -- hand-made stores with per-example outcomes ------------------------------------------------------
def put(store: Store, *, pre="ST", method="omp", k=1, regime="adversarial", seed=1, clean=None, robust=None):
    """One done trials row whose sa / ra are the means of its stored bits (at the SA-best and RA-best epochs)."""
    dense = method == "dense"
    k = 0 if dense else k
    cid = f"{pre}-{method}-{k}-{regime}-{seed}"
    row = {"cell_id": cid, "sweep": "t", "status": "done", "error": "", "pretraining": pre, "ticket_method": method,
           "ticket_round": k, "target_sparsity": 1 - 0.8 ** k, "sparsity": 1 - 0.8 ** k, "dataset": "digits",
           "regime": regime, "regime_kind": regime, "data_fraction": 1.0, "seed": seed, "sa": clean.mean(),
           "sa_last": clean.mean(), "wall_s": 1.0, "workers": 1, "device": "cpu"}
    if clean is not None:
        row.update({"test_n": len(clean), outcomes.column("clean", "sa_best"): outcomes.pack(clean),
                    outcomes.column("clean", "last"): outcomes.pack(clean)})
    if robust is not None:
        row.update({"ra": robust.mean(), "ra_last": robust.mean(), outcomes.column("robust", "ra_best"): outcomes.pack(robust),
                    outcomes.column("robust", "last"): outcomes.pack(robust)})
    store.write_row("trials", row)


def flip(bits: np.ndarray, n_wrong: int, n_right: int = 0, start: int = 0) -> np.ndarray:
    """bits with n_wrong correct images made wrong and n_right wrong ones made right (deterministic)."""
    out = bits.copy()
    right, wrong = np.flatnonzero(out), np.flatnonzero(~out)
    out[right[start:start + n_wrong]] = False
    out[wrong[start:start + n_right]] = True
    return out


BASE = np.random.default_rng(3).random(N) < 0.75  # the dense model: 75 % of the 400 images right


def put_setting(store, k, seeds, ticket_bits, pre="ST"):
    for s in seeds:
        put(store, pre=pre, method="dense", regime="standard", seed=s, clean=BASE)
        put(store, pre=pre, method="dense", regime="adversarial", seed=s, clean=BASE, robust=BASE)
    for s in seeds:
        put(store, pre=pre, k=k, regime="standard", seed=s, clean=ticket_bits)
        put(store, pre=pre, k=k, regime="adversarial", seed=s, clean=ticket_bits, robust=ticket_bits)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "store"))


def one(v: pd.DataFrame, **where) -> dict:
    for c, x in where.items():
        v = v[v[c] == x]
    assert len(v) == 1
    return v.iloc[0].to_dict()


def test_equivalence_says_match_for_a_ticket_equal_to_dense(store):
    put_setting(store, 1, [1, 2, 3], BASE)  # the same outcomes: Delta is 0, the interval a point
    r = one(verdicts(store.uri, rule="equivalence", margin=1.0))
    assert r["state_sa_std"] == r["state_ra_adv"] == "match" and r["verdict"] == "double-win"
    assert r["delta_ra_adv"] == 0 and r["lo_ra_adv"] == 0 == r["hi_ra_adv"] and r["seeds"] == 3


def test_equivalence_says_no_match_for_a_clear_loss_and_inconclusive_for_a_small_one(store):
    put_setting(store, 1, [1], flip(BASE, 60))  # 15 points worse, on 400 images: clearly beyond a 1-point margin
    put_setting(store, 2, [1], flip(BASE, 6, 2))  # 1 point worse: the interval straddles -1
    v = verdicts(store.uri, rule="equivalence", margin=1.0)
    lose, near = one(v, ticket_round=1), one(v, ticket_round=2)
    assert lose["state_sa_std"] == "no match" and lose["verdict"] == "not double-win" and lose["hi_sa_std"] < -0.01
    assert near["state_sa_std"] == "inconclusive" and near["verdict"] == "inconclusive"
    assert near["lo_sa_std"] < -0.01 < near["hi_sa_std"]
    assert near["delta_sa_std"] == pytest.approx(-0.01)
    # The paper's strict rule calls the small loss a plain "no": the interval is shown beside it all the same.
    strict = one(verdicts(store.uri, rule="strict"), ticket_round=2)
    assert strict["state_sa_std"] == "no match" and strict["lo_sa_std"] == near["lo_sa_std"]


def test_a_wider_margin_turns_the_small_loss_into_a_match(store):
    put_setting(store, 2, [1], flip(BASE, 6, 2))
    assert one(verdicts(store.uri, rule="equivalence", margin=8.0))["verdict"] == "double-win"


def test_intervals_are_reproducible_and_change_with_the_bootstrap_seed(store):
    put_setting(store, 2, [1], flip(BASE, 6, 2))
    a = one(verdicts(store.uri, rule="equivalence", seed=0))
    b = one(verdicts(store.uri, rule="equivalence", seed=0))
    c = one(verdicts(store.uri, rule="equivalence", seed=1))
    assert a["lo_sa_std"] == b["lo_sa_std"] and a["lo_sa_std"] != c["lo_sa_std"]


def test_extreme_under_equivalence_stops_at_the_first_level_not_conclusively_double_win(store):
    put_setting(store, 1, [1], BASE)
    put_setting(store, 2, [1], flip(BASE, 6, 2))  # inconclusive
    # k=3 matches again, but fixed-sequence testing never reaches it: the answer is k=1
    for regime, robust in (("standard", None), ("adversarial", BASE)):
        put(store, k=3, regime=regime, clean=BASE, robust=robust)
    e = one(extreme(store.uri, rule="equivalence", margin=1.0))
    assert e["max_contig_round_dw"] == 1 and e["max_round_dw"] == 3 and e["rule"] == "equivalence"
    assert e["contig_stops_at"].startswith("s=0.360 (k=2) inconclusive") and e["levels_inconclusive"] == 1
    assert e["seeds"] == 1


def test_rows_without_per_example_outcomes_say_so_instead_of_failing(store):
    put_setting(store, 1, [1], BASE)
    # An old row (written before the outcomes existed): a ticket at k=2 with values but no bits.
    for regime in ("standard", "adversarial"):
        store.write_row("trials", {"cell_id": f"old-{regime}", "sweep": "t", "status": "done", "pretraining": "ST",
                                   "ticket_method": "omp", "ticket_round": 2, "target_sparsity": 0.36, "sparsity": 0.36,
                                   "dataset": "digits", "regime": regime, "regime_kind": regime, "data_fraction": 1.0,
                                   "seed": 1, "sa": 0.9, "ra": 0.9 if regime == "adversarial" else None})
    eq = one(verdicts(store.uri, rule="equivalence"), ticket_round=2)
    assert eq["state_sa_std"] == "missing" and "no per-example data" in eq["reason"] and eq["verdict"] == "missing"
    strict = one(verdicts(store.uri, rule="strict"), ticket_round=2)
    assert strict["verdict"] == "double-win" and np.isnan(strict["lo_sa_std"])  # the paper's rule needs no bits
    assert "[no bits]" in format_verdicts(verdicts(store.uri))


def test_the_verdicts_command_prints_delta_its_interval_and_the_state(store, capsys):
    put_setting(store, 2, [1, 2, 3], flip(BASE, 6, 2))
    assert main(["verdicts", store.uri, "--rule", "equivalence"]) == 0
    out = capsys.readouterr().out
    assert "rule equivalence, margin 1 points" in out and "-1.0 [" in out and "incon." in out
    assert "extreme double-win sparsity (rule equivalence" in out


def test_intervals_do_not_depend_on_the_other_cells_of_the_store(store, tmp_path):
    put_setting(store, 2, [1, 2], flip(BASE, 6, 2))
    alone = one(verdicts(store.uri, rule="equivalence"))
    put_setting(store, 2, [1, 2], flip(BASE, 20, 2), pre="AT")  # another pre-training joins the store
    both = one(verdicts(store.uri, rule="equivalence"), pretraining="ST")
    assert (alone["lo_sa_std"], alone["hi_ra_adv"]) == (both["lo_sa_std"], both["hi_ra_adv"])


def test_a_cell_of_another_test_set_size_is_named_and_the_rest_decided(store):
    put_setting(store, 1, [1], BASE)
    short = BASE[:300]
    for regime, robust in (("standard", None), ("adversarial", short)):
        put(store, k=2, regime=regime, clean=short, robust=robust)
    v = verdicts(store.uri, rule="equivalence")
    assert one(v, ticket_round=1)["verdict"] == "double-win"
    bad = one(v, ticket_round=2)
    assert bad["verdict"] == "missing" and "has 300 test outcomes, the other digits cells 400" in bad["reason"]
    assert one(verdicts(store.uri, rule="strict"), ticket_round=2)["verdict"] != "missing"  # strict needs no bits


def test_a_stopped_ticket_seed_withholds_the_interval_too(store):
    put_setting(store, 1, [1, 2], BASE)
    store.write_row("trials", {**store.get("trials", "ST-omp-1-adversarial-2"), "status": "stopped", "error": "stopped"})
    r = one(verdicts(store.uri, rule="equivalence"))
    assert r["state_sa_adv"] == "no match" and np.isnan(r["lo_sa_adv"]) and r["verdict"] == "not double-win"
