"""Stage 1 of a sweep for `weights:` pre-trainings: a checkpoint file registered in the store as a torchvision state.

Every published layout (raydw.models.convert) is converted on the way in, strictly (every key and shape), so a
cell never fine-tunes a half-loaded model. A stored model is never registered again (rerun is resume).
"""
from __future__ import annotations

import json

from raydw.cells import pretrained_id, pretraining_arch
from raydw.models.build import build_net
from raydw.models.catalog import IMAGENET_MEAN, IMAGENET_STD, PRETRAINED, local_weights_path
from raydw.models.convert import load_strict, read_checkpoint, sha256_file, to_torchvision
from raydw.spec import PretrainingSpec
from raydw.store import Store
from raydw.train.setup import save_pretrained


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
