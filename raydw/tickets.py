"""Stage 1 and 2 of a sweep, Ray-free: register pre-trained weights and compute each ticket's mask once.

Every step first asks the store whether its output exists (open_lth's rule), so rerunning is resuming.
"""
from __future__ import annotations

import json

from raydw.cells import pretrained_id, pretraining_arch
from raydw.mask_keys import imp_rounds_needed, mask_params, stored_imp_rounds  # noqa: F401 - used here and by callers
from raydw.models.build import build_net
from raydw.models.catalog import IMAGENET_MEAN, IMAGENET_STD, PRETRAINED, local_weights_path
from raydw.models.convert import load_strict, read_checkpoint, sha256_file, to_torchvision
from raydw.pruning.magnitude import one_shot, random_mask
from raydw.pruning.mask import Mask
from raydw.pruning.importer import read_checkpoint_masks
from raydw.spec import ImpSpec, PretrainingSpec, TicketSpec
from raydw.store import Store
from raydw.train.setup import load_pretrained, save_pretrained

def register_weights(store: Store, p: PretrainingSpec, trust: bool = False) -> dict:
    """Copy a checkpoint (registry entry or local path) into the store as a weights-only torchvision state."""
    pid = pretrained_id(p)
    row = store.get("pretrained", pid)
    if row is not None:
        return row
    path = local_weights_path(p.weights)
    if not path.exists():
        hint = f"`raydw fetch {p.weights}`" if p.weights in PRETRAINED else "check the path"
        raise FileNotFoundError(f"pre-training {p.name}: weights file {path} not found ({hint})")
    entry = PRETRAINED.get(p.weights)
    arch = pretraining_arch(p)
    net = build_net(arch, 1000, 3)
    load_strict(net, to_torchvision(read_checkpoint(path, trust=trust), entry.format if entry else None), str(path))
    row = {"pretrained_id": pid, "name": p.name, "arch": arch, "kind": entry.kind if entry else "unknown",
           "source": f"{p.weights} (sha256 {sha256_file(path)})", "dataset": "imagenet", "num_classes": 1000,
           "in_chans": 3, "mean": list(entry.mean if entry else IMAGENET_MEAN),
           "std": list(entry.std if entry else IMAGENET_STD), "config": json.dumps({"weights": p.weights})}
    return save_pretrained(store, row, net)


def _mask_key(pid: str, method: str, params: dict, target: float) -> tuple:
    return (pid, method, json.dumps(params, sort_keys=True), round(target, 9))


def existing_masks(store: Store) -> dict[tuple, dict]:
    t = store.read_table("masks", columns=["mask_id", "pretrained_id", "method", "params", "target_sparsity", "sparsity"])
    return {_mask_key(r["pretrained_id"], r["method"], json.loads(r["params"]), r["target_sparsity"]): r for r in t.to_pylist()}


def ensure_masks(store: Store, p: PretrainingSpec, tickets: TicketSpec, log=print) -> dict[float, dict]:
    """target sparsity -> mask row (mask_id, sparsity) for every non-dense level of one pre-training.

    omp, random and import are computed here (seconds); imp masks come from its Ray Train job (run first by the
    sweep driver) and are only looked up.
    """
    pid = pretrained_id(p)
    params = mask_params(tickets, p.name)
    have = existing_masks(store)
    out: dict[float, dict] = {}
    net = None
    for rnd, target in tickets.levels():
        if rnd == 0 or target == 0.0:
            continue
        if tickets.method == "imp":
            rows = stored_imp_rounds(store, pid, params)
            if rnd not in rows:
                raise RuntimeError(f"IMP round {rnd} of {p.name} is not in the store; its IMP job did not finish")
            out[target] = rows[rnd]
            continue
        key = _mask_key(pid, tickets.method, params, target)
        if key in have:
            out[target] = have[key]
            continue
        if net is None:
            _, net = load_pretrained(store, pid)
        if tickets.method == "omp":
            mask = one_shot(net, target, tickets.prunable)
        elif tickets.method == "random":
            mask = random_mask(net, target, seed=tickets.seed, prunable=tickets.prunable, layerwise=tickets.layerwise)
        else:  # import: one mask file per pre-training, at the one level the spec names
            mask = read_checkpoint_masks(tickets.files[p.name], net, tickets.prunable)
            if abs(mask.sparsity() - target) > 0.005:
                raise ValueError(f"tickets.files.{p.name}: {tickets.files[p.name]} has sparsity {mask.sparsity():.4f}, "
                                 f"but the spec's level is {target:.4f}; set tickets.sparsities: [{mask.sparsity():.4f}]")
        row = mask_row(mask, p.name, pid, tickets.method, params, rnd, target)
        store.write_row("masks", row)
        log(f"  mask {row['mask_id']}: {p.name} {tickets.method} target {target:.4f} -> {row['sparsity']:.4f}")
        out[target] = row
    return out


def mask_id(mask: Mask, pid: str, method: str, params_json: str, rnd: int | None, target: float) -> str:
    """A masks row's key: the bits' content hash AND how they were made (pre-trained model, method, params, round,
    target). One row per provenance: importing the bits of a stored OMP mask makes a second row and never rewrites the
    first, whose cells keep pointing at a row that describes their own ticket (issue 14, cause 2).

    Rows stored before this key existed keep their bits-only ids: they are found by their provenance columns
    (existing_masks, stored_imp_rounds), never by recomputing an id, so old stores read and resume as before."""
    import hashlib

    prov = json.dumps([mask.id, pid, method, params_json, rnd, round(float(target), 9)])
    return hashlib.sha256(prov.encode()).hexdigest()[:16]


def mask_row(mask: Mask, pretraining: str, pid: str, method: str, params: dict, rnd: int | None, target: float) -> dict:
    bits, layout = mask.packed()
    params_json = json.dumps(params, sort_keys=True)
    return {"mask_id": mask_id(mask, pid, method, params_json, rnd, target), "pretraining": pretraining, "pretrained_id": pid, "method": method,
            "params": params_json, "round": rnd, "target_sparsity": target,
            "sparsity": mask.sparsity(), "prunable": params.get("prunable", "paper"), "n_prunable": mask.numel(),
            "n_kept": mask.kept(), "layer_density": json.dumps(mask.layer_density()), "layout": json.dumps(layout),
            "bits": bits}

