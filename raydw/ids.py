"""Ids and keys: the one hashing helper, the encodings ids are hashed from, the rounding of levels, and the one
registry lookup.

Every content id raydw makes (a cell, a recipe, a tuning group, a pre-trained model, a mask and its provenance) is
`digest(...)`: the first 16 hex digits of a sha256. What each id hashes is fixed: a new encoding would give every
stored row a new id and a rerun would start over, so each keeps the encoding it was first written with (below).
Dependency-free, so every layer may import it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TypeVar

ID_HEX = 16  # 64 bits: no collision expected below ~10^9 ids


def digest(data: str | bytes, n: int = ID_HEX) -> str:
    """The first `n` hex digits of the sha256 of `data` (text is hashed as UTF-8)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:n]


def canonical_json(obj) -> str:
    """Sorted keys, no spaces: what cell, recipe, tuning-group and pre-trained ids hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def content_id(obj) -> str:
    """The id of a JSON-able value: digest of its canonical JSON."""
    return digest(canonical_json(obj))


def params_json(params: dict) -> str:
    """The one encoding of a mask's params: the masks table's `params` column and every lookup by it (sorted keys,
    json's default separators, as stored since the first store)."""
    return json.dumps(params, sort_keys=True)


# Levels (target sparsities, data fractions) are compared as keys after rounding: the same level is computed in
# different ways (1 - 0.8**k, a YAML literal, a Parquet float) and differs in the last bits.
LEVEL_DIGITS = 9
# A cell's canonical form rounds its target sparsity to 12 digits. That form is hashed into every cell id, so it
# stays 12 (finer than LEVEL_DIGITS: two levels equal as keys never get one id by accident of rounding).
ID_LEVEL_DIGITS = 12


def level(x) -> float:
    """A level as a key (LEVEL_DIGITS)."""
    return round(float(x), LEVEL_DIGITS)


def id_level(x) -> float:
    """A level as a cell's canonical form holds it (ID_LEVEL_DIGITS)."""
    return round(float(x), ID_LEVEL_DIGITS)


V = TypeVar("V")


def lookup(registry: Mapping[str, V], name: str, what: str) -> V:
    """registry[name], or a KeyError that names the unknown `what` and the known choices (every registry's get)."""
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; known: {sorted(registry)}") from None
