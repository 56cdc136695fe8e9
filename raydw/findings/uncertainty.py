"""Intervals for ticket minus dense, from stored per-example test outcomes: two sources of variation, each measured.

One comparison is Delta = mean over the ticket's seeds of its accuracy - mean over the dense model's seeds of
its accuracy, every accuracy measured on the same test images. Its variance has two parts:
- the test-set sample: a seeded paired bootstrap over test images (ONE draw of images per resample, shared by
  every cell of the dataset, so ticket and dense stay paired by test image and every seed sees the same images);
  its part is the variance of the resampled seed-averaged Delta (Efron & Tibshirani 1993, ch. 6);
- training randomness: the spread of the per-seed accuracies, var / seeds for each side with 2 or more seeds.
The interval is Delta +- t x sqrt(sum), with Welch-Satterthwaite degrees of freedom for the seed parts (Welch 1947;
Satterthwaite 1946). A plain two-level percentile bootstrap (resample seeds, then images) was measured first and
dropped: with 3 seeds whose spread dominated it covered a known Delta in 86 % of simulated settings for a nominal
95 % (it resamples the few seeds it has, and uses a normal quantile where a t is due). docs/findings.md gives the
coverage of this one.

Speed: a resample of the test images is a vector of counts (how often each image is drawn), so the accuracy of
every cell under every resample is one matrix product (resamples x images) @ (images x cells) per dataset,
done in chunks to bound memory. Torch-free.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass

import numpy as np

_CHUNK = 250  # image resamples per matrix product: 250 x 26,032 SVHN images in float32 is 26 MB


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 2000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if not 100 <= int(self.resamples) <= 100_000:
            raise ValueError(f"resamples must be in [100, 100000], got {self.resamples}")
        if not 0.5 < float(self.level) < 1:
            raise ValueError(f"level must be in (0.5, 1), got {self.level}")

    def rng(self, *key) -> np.random.Generator:
        """A generator of its own for every dataset: results do not depend on the order of the table or on the
        other cells in it."""
        digest = hashlib.sha256(repr((self.seed, *key)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def resampled_accuracy(bits: dict[str, np.ndarray], boot: Bootstrap, dataset: str) -> dict[str, np.ndarray]:
    """{series key: bool per test image} of ONE dataset -> {key: accuracy under each of boot.resamples image draws}."""
    if not bits:
        return {}
    keys = list(bits)
    n = len(bits[keys[0]])
    if any(len(bits[k]) != n for k in keys):
        sizes = sorted({len(b) for b in bits.values()})
        raise ValueError(f"{dataset}: per-example outcomes of different lengths {sizes}: not the same test set")
    mat = np.stack([bits[k] for k in keys], axis=1).astype(np.float32)  # images x series
    out = np.empty((boot.resamples, len(keys)), dtype=np.float64)
    for start, counts in _counts(boot, dataset, n):
        out[start:start + len(counts)] = (counts.astype(np.float32) @ mat) / n
    return {k: out[:, i] for i, k in enumerate(keys)}


# The image draws of the last few (bootstrap, dataset, test-set size), kept as uint8 counts: drawing them (random
# integers and a bincount) was ~85 % of a resampling, and one process asks for the same draws again and again (every
# look of an adaptive sweep, every verdict table and report of one store). Up to 64 MB each (2,000 resamples of
# 26,032 SVHN test images is 52 MB); a larger draw, or one with a count over 255, is drawn afresh each time.
_DRAWS: dict[tuple, np.ndarray] = {}
_DRAWS_KEPT = 3
_DRAWS_MAX_BYTES = 64 * 2**20
_DRAWS_LOCK = threading.Lock()


def _counts(boot: Bootstrap, dataset: str, n: int):
    """(first resample, counts: resamples x images) chunks of the image draws: how often each image is drawn."""
    key = (boot.seed, boot.resamples, dataset, n)
    with _DRAWS_LOCK:
        kept = _DRAWS.get(key)
    if kept is not None:
        yield from ((s, kept[s:s + _CHUNK]) for s in range(0, boot.resamples, _CHUNK))
        return
    keep = np.empty((boot.resamples, n), dtype=np.uint8) if boot.resamples * n <= _DRAWS_MAX_BYTES else None
    rng = boot.rng("images", dataset)
    for start in range(0, boot.resamples, _CHUNK):
        b = min(_CHUNK, boot.resamples - start)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        if keep is not None:
            if counts.max() > 255:
                keep = None
            else:
                keep[start:start + b] = counts
        yield start, counts
    if keep is not None:
        with _DRAWS_LOCK:
            _DRAWS[key] = keep
            while len(_DRAWS) > _DRAWS_KEPT:
                _DRAWS.pop(next(iter(_DRAWS)))


def delta_interval(ticket: list[tuple[float, np.ndarray]], dense: list[tuple[float, np.ndarray]],
                   level: float) -> tuple[float, float]:
    """Interval of Delta = mean over ticket seeds - mean over dense seeds. Each side is a list, one per seed, of
    (its accuracy on the test set, its accuracies under the shared image resamples). Each side's seed part is its
    own spread (seed_variance 'per_comparison'); delta_stats with families gives the pooled one."""
    return interval(delta_stats(ticket, dense), level)


# -- seed variance pooled over a family of cells ------------------------------------------------------
HOMOGENEITY_ALPHA = 0.05  # Bartlett's test: below this p the family's spreads are not pooled


@dataclass(frozen=True)
class SeedVariance:
    """The seed-to-seed variance of one family of cells (docs/findings.md, "Seed variance pooled by family").

    var: the training-randomness variance of one cell's accuracy (accuracy units squared, >= 0): the pooled mean
    square of the per-seed accuracies less the image x seed interaction that the image bootstrap already counts.
    ms: that pooled mean square, the chi-square part behind var (df degrees of freedom). p: Bartlett's test of
    equal spreads over the family's replicated cells (nan with fewer than two of them); pooled: var may stand in for
    every cell of the family."""
    var: float
    ms: float
    df: int
    cells: int
    p: float
    pooled: bool

    @property
    def sd(self) -> float:
        return float(np.sqrt(self.var))


def seed_stats(bits: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(accuracy per seed, image x seed interaction mean square / images) of one cell's k >= 2 seeds on one test set.

    A seed's accuracy on a fixed test set moves with training randomness (what a new seed would change in the
    population accuracy) AND with which images that seed happens to get right: per image, ticket-vs-seed noise that
    averages to interaction / images. The image bootstrap already counts that noise, so the seed part must not count
    it twice: the two-way (seeds x images) ANOVA's residual mean square estimates it (Searle, Casella & McCulloch
    1992, ch. 4, a random two-way layout without replication)."""
    b = np.stack(bits).astype(np.float64)  # seeds x images
    k, n = b.shape
    acc = b.mean(axis=1)
    per_image = b.mean(axis=0)
    ss_res = float((b ** 2).sum() - n * (acc ** 2).sum() - k * (per_image ** 2).sum() + k * n * b.mean() ** 2)
    return acc, max(ss_res, 0.0) / ((k - 1) * (n - 1)) / n


def pool_seed_variance(cells: list[tuple[np.ndarray, float]], alpha: float = HOMOGENEITY_ALPHA) -> SeedVariance:
    """One family's SeedVariance from its replicated cells, each (accuracy per seed, interaction / images) from
    seed_stats. Pooled with the degrees of freedom sum(k_i - 1); Bartlett (1937) tests the equal spreads it assumes."""
    cells = [(np.asarray(a, float), i) for a, i in cells if len(a) >= 2]
    df = sum(len(a) - 1 for a, _ in cells)
    if not df:
        return SeedVariance(np.nan, np.nan, 0, 0, np.nan, False)
    ms = sum((len(a) - 1) * float(a.var(ddof=1)) for a, _ in cells) / df
    interaction = sum((len(a) - 1) * i for a, i in cells) / df
    spread = [a for a, _ in cells if a.var() > 0]
    if len(cells) < 2 or not ms > 0:
        p = np.nan  # one cell, or no spread anywhere: nothing to compare
    elif len(spread) < len(cells):
        p = 0.0  # some cells repeat exactly while others spread: not one variance (Bartlett's log(0))
    else:
        p = bartlett_p([a for a, _ in cells])
    return SeedVariance(max(ms - interaction, 0.0), ms, df, len(cells), p, not p < alpha)


def bartlett_p(samples: list[np.ndarray]) -> float:
    """Bartlett's (1937) test of equal variances over k >= 2 samples, each of 2 or more values with some spread: its
    p-value. The statistic as scipy.stats.bartlett computes it, and its chi-square(k - 1) tail by scipy.special: the
    same number (tests/test_uncertainty.py compares them) without scipy.stats' argument handling, ~1 ms a call,
    which was most of a verdict table's time (pool_seed_variance runs once per family per metric per look)."""
    from scipy.special import chdtrc

    n = np.array([len(a) for a in samples], dtype=np.float64)
    var = np.array([np.var(a, ddof=1) for a in samples])
    k, total = len(samples), n.sum()
    pooled = ((n - 1) * var).sum() / (total - k)
    stat = ((total - k) * np.log(pooled) - ((n - 1) * np.log(var)).sum()) / (
        1 + ((1 / (n - 1)).sum() - 1 / (total - k)) / (3 * (k - 1)))
    return float(chdtrc(k - 1, stat))


@functools.lru_cache(maxsize=4096)  # stdtrit inverts the CDF iteratively; a family's df recur in every verdict
def t_quantile(q: float, df: float) -> float:
    """Student's t quantile at probability q with df degrees of freedom (the normal one at df = inf): what
    scipy.stats.t.ppf computes (its _ppf is scipy.special.stdtrit), without its ~0.1 ms of argument handling a call."""
    from scipy.special import ndtri, stdtrit

    return float(ndtri(q)) if np.isposinf(df) else float(stdtrit(df, q))


def delta_stats(ticket: list[tuple[float, np.ndarray]], dense: list[tuple[float, np.ndarray]],
                family_t: SeedVariance | None = None, family_d: SeedVariance | None = None) -> tuple[float, float, float]:
    """(Delta, its standard error, degrees of freedom) of ticket - dense.

    A side with a poolable family takes the family's var / seeds (its single seed included) with the family's df;
    a side without one takes its own spread / seeds with seeds - 1 df (one seed: no seed part, as the paper's
    protocol). The df come by Welch-Satterthwaite (Welch 1947; Satterthwaite 1946); two sides drawing on one family
    share one chi-square, so their parts add before squaring."""
    mt, it, vt, kt = _side(ticket)
    md, id_, vd, kd = _side(dense)
    v_images = float(np.var(it - id_, ddof=1))
    parts: dict = {}  # source -> [variance added, chi-square part, df]
    for name, (fam, v_own, k) in {"t": (family_t, vt, kt), "d": (family_d, vd, kd)}.items():
        if fam is not None and fam.pooled and fam.df > 0:
            p = parts.setdefault(id(fam), [0.0, 0.0, fam.df])
            p[0] += fam.var / k
            p[1] += fam.ms / k
        elif k > 1:
            parts[name] = [v_own, v_own, k - 1]
    v = v_images + sum(p[0] for p in parts.values())
    den = sum(p[1] ** 2 / p[2] for p in parts.values() if p[1] > 0)
    return mt - md, float(np.sqrt(v)), (v ** 2 / den if den > 0 and v > 0 else np.inf)


def interval(stats: tuple[float, float, float], level: float) -> tuple[float, float]:
    """estimate +- t(level, df) x se."""
    estimate, se, df = stats
    if not se > 0:
        return estimate, estimate
    half = t_quantile((1 + level) / 2, df) * se
    return estimate - half, estimate + half


def mean_interval(per_seed: list[tuple[float, np.ndarray]], level: float) -> tuple[float, float]:
    """Interval of one setting's accuracy (mean over its seeds), by the same two parts."""
    m, img, v, k = _side(per_seed)
    return _t_interval(m, float(np.var(img, ddof=1)), [(v, k)], level)


def _side(per_seed: list[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray, float, int]:
    """(mean over seeds, seed-averaged accuracy under each image resample, variance of the seed mean, seeds)."""
    obs = np.array([o for o, _ in per_seed], dtype=np.float64)
    k = len(obs)
    v_seed = float(obs.var(ddof=1)) / k if k >= 2 else 0.0  # one seed: training randomness cannot be estimated
    return float(obs.mean()), np.stack([r for _, r in per_seed]).mean(axis=0), v_seed, k


def _t_interval(estimate: float, v_images: float, seed_parts: list[tuple[float, int]], level: float) -> tuple[float, float]:
    """estimate +- t x sqrt(test-image variance + seed variances), the t's degrees of freedom by Welch-Satterthwaite
    (the image part, from thousands of images, counts as known; each seed part has seeds - 1)."""
    v = v_images + sum(vs for vs, _ in seed_parts)
    if not v > 0:
        return estimate, estimate
    den = sum(vs ** 2 / (k - 1) for vs, k in seed_parts if k > 1 and vs > 0)
    df = v ** 2 / den if den > 0 else np.inf
    half = t_quantile((1 + level) / 2, df) * np.sqrt(v)
    return estimate - half, estimate + half
