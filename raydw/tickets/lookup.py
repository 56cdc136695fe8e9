"""Masks already in the store, found by their key (registry.mask_key) without computing anything.

Torch-free, so `raydw sweep --dry-run` and the pre-run input check can ask what a sweep still needs.
"""
from __future__ import annotations

import json

from raydw.store import Store
from raydw.tickets.registry import mask_key, params_json

MASK_COLUMNS = ["mask_id", "pretrained_id", "method", "params", "round", "target_sparsity", "sparsity"]


def existing_masks(store: Store) -> dict[tuple, dict]:
    """mask_key -> masks row (id, level, sparsity) of every stored mask."""
    t = store.read_table("masks", columns=MASK_COLUMNS)
    return {mask_key(r["pretrained_id"], r["method"], json.loads(r["params"]), r["target_sparsity"]): r for r in t.to_pylist()}


def stored_imp_rounds(store: Store, pid: str, params: dict) -> dict[int, dict]:
    """IMP round -> mask row already in the store for this pre-training and recipe."""
    key = params_json(params)
    t = store.read_table("masks", columns=MASK_COLUMNS)
    return {r["round"]: r for r in t.to_pylist() if r["pretrained_id"] == pid and r["method"] == "imp" and r["params"] == key}
