"""Seed variance pooled by family (docs/findings.md, "Seed variance pooled by family"): the pooled interval's
coverage at 1 and 3 ticket seeds on simulated families with a known Delta, the homogeneity check's fallback, and
what the verdicts table says about the seed part of each interval."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from raydw import outcomes
from raydw.findings.analysis import verdicts
from raydw.findings.text import format_verdicts
from raydw.store import Store
from raydw.findings.uncertainty import Bootstrap, delta_stats, interval, pool_seed_variance, resampled_accuracy, seed_stats

from test_uncertainty import one


def simulated_family(rng, n: int, ticket_seeds: int, levels: int, seed_sd: float, true_delta: float,
                     dense_seeds: int = 3, image_noise: float = 0.3) -> dict:
    """{(model, seed): correct bits} of one family: a dense model with dense_seeds seeds and `levels` tickets with
    ticket_seeds each, on n shared images (probit model, correct = [z_image + a + u_seed + e > 0], as
    tests/test_uncertainty.py's _seeded_setting). Every ticket's true Delta (over seeds and images) is true_delta."""
    tot = np.sqrt(1 + seed_sd ** 2 + image_noise ** 2)
    a_d = 0.95
    a_t = norm.ppf(norm.cdf(a_d / tot) + true_delta) * tot
    z = rng.standard_normal(n)

    def draw(a, k):
        return [z + a + seed_sd * rng.standard_normal() + image_noise * rng.standard_normal(n) > 0 for _ in range(k)]

    bits = {("d", j): b for j, b in enumerate(draw(a_d, dense_seeds))}
    for lvl in range(levels):
        bits.update({(lvl, j): b for j, b in enumerate(draw(a_t, ticket_seeds))})
    return bits


def coverage(k: int, settings: int, seed_sd: float, pooled: bool = True, n: int = 1000, levels: int = 2) -> float:
    """Share of families whose first ticket's 95 % interval covers the true Delta (one comparison per family: the
    families are independent, so the binomial band applies)."""
    rng = np.random.default_rng(4242 + k)
    true_delta, covered = -0.01, 0
    for s in range(settings):
        bits = simulated_family(rng, n, k, levels, seed_sd, true_delta)
        acc = resampled_accuracy(bits, Bootstrap(100, 0.95, seed=s), f"fam{s}")
        side = lambda m, kk: [(bits[(m, j)].mean(), acc[(m, j)]) for j in range(kk)]  # noqa: E731
        replicated = ["d", *(range(levels) if k >= 2 else [])]
        fam = pool_seed_variance([seed_stats([bits[(g, j)] for j in range(3 if g == "d" else k)]) for g in replicated])
        fam = fam if pooled else None
        lo, hi = interval(delta_stats(side(0, k), side("d", 3), fam, fam), 0.95)
        covered += lo <= true_delta <= hi
    return covered / settings


BAND = lambda n: 3 * np.sqrt(0.05 * 0.95 / n)  # noqa: E731


@pytest.mark.parametrize("k", [1, 3])
def test_the_pooled_interval_covers_a_known_delta_at_the_nominal_level(k):
    """Seed SD about 1 point per model, 1,000 images: the seed part matters. At one ticket seed the interval borrows
    the family's spread (the dense model's 3 seeds; at 3 seeds every cell's), and covers as nominal."""
    settings = 300
    c = coverage(k, settings, seed_sd=0.05)
    assert abs(c - 0.95) <= BAND(settings), f"coverage {c:.3f} at {k} seed(s), band 0.95 +- {BAND(settings):.3f}"


def test_without_pooling_one_seed_covers_only_the_test_images():
    """The same families, each comparison on its own seeds: one ticket seed has no seed part (the 36 % of the
    interval-coverage benchmark): the reason the pooled estimate exists."""
    assert coverage(1, 100, seed_sd=0.05, pooled=False) < 0.85


def test_spreads_that_differ_are_not_pooled():
    rng = np.random.default_rng(1)
    same = [rng.normal(0.8, 0.01, 3) for _ in range(6)]
    assert pool_seed_variance([(a, 0.0) for a in same]).pooled
    wild = [*same, np.array([0.5, 0.8, 0.65])]  # one cell spreads 15 points where the others spread 1
    fam = pool_seed_variance([(a, 0.0) for a in wild])
    assert not fam.pooled and fam.p < 0.05 and fam.df == 14
    frozen = [np.array([0.0, 0.0]), np.array([0.7, 0.75])]  # RA 0 on every seed beside a cell that spreads
    assert not pool_seed_variance([(a, 0.0) for a in frozen]).pooled


def test_the_pooled_variance_removes_the_image_noise_the_bootstrap_already_counts():
    """Seeds that differ only by which images they get right (no training randomness): the per-seed accuracies
    still spread by about sqrt(p(1-p)/n), all of it image noise; the family variance left is near zero."""
    rng = np.random.default_rng(5)
    cells = [seed_stats([rng.random(2000) < 0.8 for _ in range(3)]) for _ in range(8)]
    fam = pool_seed_variance(cells)
    assert fam.ms == pytest.approx(0.8 * 0.2 / 2000, rel=0.5) and fam.var < fam.ms / 4


# -- the verdicts table ------------------------------------------------------------------------------
N = 400


def _seeded_bits(rng, p: float, k: int, seed_sd: float = 0.06) -> list[np.ndarray]:
    """k seeds of one model on the shared 400 images: its accuracy moves seed to seed by about seed_sd."""
    return [rng.random(N) < p + seed_sd * rng.standard_normal() for _ in range(k)]


def _store(tmp_path, ticket_seeds: int, pre=("ST",), datasets=("digits",)) -> Store:
    store = Store(str(tmp_path / "store"))
    for p in pre:
        rng = np.random.default_rng(sum(map(ord, p)))  # str hash() changes per process
        for ds in datasets:
            for regime in ("standard", "adversarial"):
                for s, b in enumerate(_seeded_bits(rng, 0.8, 3), 1):
                    _put(store, ds, pre=p, method="dense", regime=regime, seed=s, bits=b)
                for s, b in enumerate(_seeded_bits(rng, 0.79, ticket_seeds), 1):
                    _put(store, ds, pre=p, k=1, regime=regime, seed=s, bits=b)
    return store


def _put(store, ds, regime, bits, pre, seed, method="omp", k=1):
    """One done row with its outcomes (the row of tests/test_uncertainty.put, on dataset ds)."""
    k = 0 if method == "dense" else k
    row = {"cell_id": f"{pre}-{method}-{k}-{regime}-{seed}-{ds}", "sweep": "t", "status": "done", "error": "",
           "pretraining": pre, "ticket_method": method, "ticket_round": k, "target_sparsity": 1 - 0.8 ** k,
           "sparsity": 1 - 0.8 ** k, "dataset": ds, "regime": regime, "regime_kind": regime, "data_fraction": 1.0,
           "seed": seed, "sa": bits.mean(), "sa_last": bits.mean(), "wall_s": 1.0, "workers": 1, "device": "cpu",
           "test_n": N, outcomes.column("clean", "sa_best"): outcomes.pack(bits)}
    if regime == "adversarial":
        row.update({"ra": bits.mean(), outcomes.column("robust", "ra_best"): outcomes.pack(bits)})
    store.write_row("trials", row)


def test_a_single_seed_ticket_gets_the_family_seed_part_and_the_table_says_so(tmp_path):
    store = _store(tmp_path, ticket_seeds=1)
    pooled = one(verdicts(store.uri, rule="equivalence", margin=3))
    own = one(verdicts(store.uri, rule="equivalence", margin=3, seed_variance="per_comparison"))
    assert pooled["seed_source_sa_adv"] == "family of 1 replicated cells" and pooled["seed_df_sa_adv"] == 2
    assert pooled["seed_sd_sa_adv"] > 0 and np.isnan(own["seed_sd_sa_adv"])
    assert own["seed_source_sa_adv"] == "own seeds; none for the 1-seed side"
    assert (pooled["hi_sa_adv"] - pooled["lo_sa_adv"]) > (own["hi_sa_adv"] - own["lo_sa_adv"])
    text = format_verdicts(verdicts(store.uri, rule="equivalence", margin=3))
    assert "seed SD" in text and "stopped" in text and "pooled seed variance by family" in text


def test_a_family_is_a_dataset_regime_fraction_and_value_every_pretraining_alike(tmp_path):
    """Cells of another dataset never move an interval; another pre-training's cells of the same dataset join its
    family (pooled by design: more degrees of freedom)."""
    alone = one(verdicts(_store(tmp_path / "a", 1).uri, rule="equivalence"))
    other_ds = verdicts(_store(tmp_path / "b", 1, datasets=("digits", "svhn")).uri, rule="equivalence")
    assert one(other_ds, dataset="digits")["lo_sa_adv"] == alone["lo_sa_adv"]
    two_pre = one(verdicts(_store(tmp_path / "c", 1, pre=("ST", "AT")).uri, rule="equivalence"), pretraining="ST")
    assert two_pre["seed_df_sa_adv"] == 4 and two_pre["lo_sa_adv"] != alone["lo_sa_adv"]


def test_seed_variance_names_its_choices():
    from raydw.findings.analysis import AnalysisError

    with pytest.raises(AnalysisError, match=r"seed_variance 'pool' is not one of \['pooled', 'per_comparison'\]"):
        verdicts(Store("/nonexistent-raydw-store").uri, seed_variance="pool")
