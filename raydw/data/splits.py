"""The paper's splits and the data-fraction index sets (numpy only).

Pool = the first `pool` training indices, validation = the next `val`, test = the official test set
(the paper's `dataset.py`). A data fraction f trains on `int(pool * f)` pool indices chosen by a named method.
"""
from __future__ import annotations

import hashlib

import numpy as np

from raydw.data import sources
from raydw.data.catalog import get as get_info

FRACTION_METHODS = ("first_n", "stratified")


def split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
    info = get_info(name)
    return np.arange(info.pool), np.arange(info.pool, info.pool + info.val)


def fraction_indices(labels_pool: np.ndarray, fraction: float, method: str, seed: int) -> np.ndarray:
    """Indices into the pool for one data fraction.

    first_n: the first int(N*f) indices (the paper's `--data_number`; deterministic, not stratified, no seed).
    stratified: the same count, split over classes in proportion to their pool frequency (largest remainder),
    drawn without replacement with `seed`; sorted so the order does not depend on the draw.
    """
    n_pool = len(labels_pool)
    n = int(n_pool * fraction)
    if n < 1:
        raise ValueError(f"data fraction {fraction} of a {n_pool}-image pool selects no image")
    if method == "first_n":
        return np.arange(n)
    if method != "stratified":
        raise ValueError(f"unknown fraction method {method!r}; known: {FRACTION_METHODS}")
    classes, counts = np.unique(labels_pool, return_counts=True)
    quota = counts / n_pool * n
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels_pool == c), size=t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def index_set_id(dataset: str, indices: np.ndarray) -> str:
    h = hashlib.sha256(dataset.encode() + b"\0" + np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def index_set(cell_like_dataset: str, fraction: float, method: str, seed: int,
              root: str | None = None) -> tuple[str, np.ndarray]:
    """(id, pool indices) of a data fraction; the seed matters only for stratified draws, which read the labels
    from `root` (data.root: CIFAR, SVHN and the other downloaded datasets live there)."""
    info = get_info(cell_like_dataset)
    if method == "first_n":
        idx = np.arange(int(info.pool * fraction))
    else:
        raw = sources.read(cell_like_dataset, root)
        idx = fraction_indices(raw.train_y[: info.pool], fraction, method, seed)
    if len(idx) < 1:
        raise ValueError(f"data fraction {fraction} of {cell_like_dataset} ({info.pool} pool images) selects no image")
    return index_set_id(cell_like_dataset, idx), idx
