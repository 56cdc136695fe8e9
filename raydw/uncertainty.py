"""Intervals for ticket minus dense, from stored per-example test outcomes: a seeded two-level bootstrap.

One comparison is Delta = mean over the ticket's seeds of its accuracy - mean over the dense model's seeds of
its accuracy, every accuracy measured on the same test images. Each resample draws the seeds of each side with
replacement (seed-to-seed variation: with one seed there is nothing to draw), then the test images with
replacement, ONE draw of images shared by every cell of the dataset (so ticket and dense stay paired by test
image, and every seed sees the same images), and recomputes Delta; the interval is the percentile interval of
the resampled Deltas (Efron & Tibshirani 1993, ch. 13; the hierarchical "resample the top level, then the
bottom" scheme of Davison & Hinkley 1997, sect. 3.8). docs/findings.md says what it does and does not cover.

Speed: a resample of the test images is a vector of counts (how often each image is drawn), so the accuracy of
every cell under every resample is one matrix product (resamples x images) @ (images x cells) per dataset,
done in chunks to bound memory. Torch-free.
"""
from __future__ import annotations

import hashlib
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
        """A generator of its own for every dataset and comparison: results do not depend on the order of the table."""
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
    rng = boot.rng("images", dataset)
    out = np.empty((boot.resamples, len(keys)), dtype=np.float64)
    for start in range(0, boot.resamples, _CHUNK):
        b = min(_CHUNK, boot.resamples - start)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        out[start:start + b] = (counts.astype(np.float32) @ mat) / n
    return {k: out[:, i] for i, k in enumerate(keys)}


def delta_interval(ticket: list[np.ndarray], dense: list[np.ndarray], boot: Bootstrap, key) -> tuple[float, float]:
    """Percentile interval of Delta from each side's per-seed resampled accuracies (resamples,) per seed."""
    rng = boot.rng("seeds", key)
    d = _seed_resampled_mean(ticket, rng) - _seed_resampled_mean(dense, rng)
    a = (1 - boot.level) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return float(lo), float(hi)


def _seed_resampled_mean(per_seed: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    acc = np.stack(per_seed)  # seeds x resamples
    k, b = acc.shape
    if k == 1:
        return acc[0]
    pick = rng.integers(0, k, size=(k, b))  # each resample draws k seeds with replacement
    return np.take_along_axis(acc, pick, axis=0).mean(axis=0)


def mean_interval(per_seed: list[np.ndarray], boot: Bootstrap, key) -> tuple[float, float]:
    """Percentile interval of one setting's accuracy (mean over its seeds), same two-level resampling."""
    m = _seed_resampled_mean(per_seed, boot.rng("seeds", key))
    a = (1 - boot.level) / 2
    lo, hi = np.quantile(m, [a, 1 - a])
    return float(lo), float(hi)
