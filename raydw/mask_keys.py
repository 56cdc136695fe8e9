"""How a mask is found in the store without computing it: its parameter key and the IMP rounds already stored.

Torch-free, so `raydw sweep --dry-run` and the pre-run input check can ask what a sweep still needs.
"""
from __future__ import annotations

import json

from raydw.spec import ImpSpec, TicketSpec
from raydw.store import Store


def mask_params(tickets: TicketSpec, pretraining: str) -> dict:
    """Everything besides the level that determines a mask (the store's lookup key, with the pre-training)."""
    params: dict = {"prunable": tickets.prunable}
    if tickets.method == "random":
        params.update(seed=tickets.seed, layerwise=tickets.layerwise)
    elif tickets.method == "imp":
        imp = tickets.imp or ImpSpec()
        params.update(rate=tickets.rate, regime=imp.regime_for(pretraining),
                      **imp.model_dump(mode="json", exclude={"per_pretraining", "root", "regime", "workers", "cpus_per_worker"}))
    elif tickets.method == "import":
        params["file"] = tickets.files[pretraining]
    return params


def imp_rounds_needed(tickets: TicketSpec) -> int:
    return max(k for k, _ in tickets.levels() if k)


def stored_imp_rounds(store: Store, pid: str, params: dict) -> dict[int, dict]:
    """IMP round -> mask row already in the store for this pre-training and recipe."""
    key = json.dumps(params, sort_keys=True)
    t = store.read_table("masks", columns=["mask_id", "pretrained_id", "method", "params", "round", "target_sparsity", "sparsity"])
    return {r["round"]: r for r in t.to_pylist() if r["pretrained_id"] == pid and r["method"] == "imp" and r["params"] == key}
