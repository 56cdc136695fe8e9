"""Stage 2 of a sweep, Ray-free: each ticket's masks computed once per (pre-training, ticket spec), as masks rows.

Every step first asks the store whether its output exists (open_lth's rule), so rerunning is resuming. omp,
random and import masks are made here by their registry method; IMP's come from its Ray Train job and are only
looked up.
"""
from __future__ import annotations

import json

from raydw.cells import pretrained_id
from raydw.ids import digest, level
from raydw.pruning.mask import Mask
from raydw.spec import PretrainingSpec, TicketSpec
from raydw.store import Store
from raydw.tickets import registry
from raydw.tickets.lookup import existing_masks, stored_imp_rounds
from raydw.tickets.registry import mask_key, params_json
from raydw.train.setup import load_pretrained


def ensure_masks(store: Store, p: PretrainingSpec, tickets: TicketSpec, log=print) -> dict[float, dict]:
    """target sparsity -> mask row (mask_id, sparsity) for every non-dense level of one pre-training."""
    pid = pretrained_id(p)
    method = registry.get(tickets.method)
    params = method.params(tickets, p.name)
    have = existing_masks(store)
    out: dict[float, dict] = {}
    net = None
    rounds = stored_imp_rounds(store, pid, params) if method.needs_job else {}  # read once, not per level
    for rnd, target in tickets.levels():
        if rnd == 0 or target == 0.0:
            continue
        if method.needs_job:
            if rnd not in rounds:
                raise RuntimeError(f"IMP round {rnd} of {p.name} is not in the store; its IMP job did not finish")
            out[target] = rounds[rnd]
            continue
        key = mask_key(pid, tickets.method, params, target)
        if key in have:
            out[target] = have[key]
            continue
        if net is None:
            _, net = load_pretrained(store, pid)
        row = mask_row(method.make(net, tickets, p.name, target), p.name, pid, tickets.method, params, rnd, target)
        store.write_row("masks", row)
        log(f"  mask {row['mask_id']}: {p.name} {tickets.method} target {target:.4f} -> {row['sparsity']:.4f}")
        out[target] = row
    return out


def mask_id(mask: Mask, pid: str, method: str, params: dict, rnd: int | None, target: float) -> str:
    """A masks row's key: the bits' content hash AND how they were made (pre-trained model, method, params, round,
    target). One row per provenance: importing the bits of a stored OMP mask makes a second row and never rewrites the
    first, whose cells keep pointing at a row that describes their own ticket.

    Rows stored before this key existed keep their bits-only ids: they are found by their provenance columns
    (existing_masks, stored_imp_rounds), never by recomputing an id, so old stores read and resume as before."""
    return digest(json.dumps([mask.id, pid, method, params_json(params), rnd, level(target)]))


def mask_row(mask: Mask, pretraining: str, pid: str, method: str, params: dict, rnd: int | None, target: float) -> dict:
    bits, layout = mask.packed()
    return {"mask_id": mask_id(mask, pid, method, params, rnd, target), "pretraining": pretraining, "pretrained_id": pid,
            "method": method, "params": params_json(params), "round": rnd, "target_sparsity": target,
            "sparsity": mask.sparsity(), "prunable": params.get("prunable", "paper"), "n_prunable": mask.numel(),
            "n_kept": mask.kept(), "layer_density": json.dumps(mask.layer_density()), "layout": json.dumps(layout),
            "bits": bits}
