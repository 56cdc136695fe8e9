"""Build what a cell or a pre-training recipe trains on, from the store: model, mask, device data. Ray-free.

Everything a worker needs comes from the store (shared storage on a cluster), never the driver's disk.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import torch

from raydw.cells import Cell
from raydw.data import catalog, sources
from raydw.data.device import Split, Transform
from raydw.models.build import Normalized, build_net, replace_head
from raydw.pruning.mask import Mask
from raydw.spec import AttackSpec, RecipeSpec, RegimeSpec, OptimizerSpec
from raydw.store import Store
from raydw.data.device import Data


def load_pretrained(store: Store, pretrained_id: str) -> tuple[dict, torch.nn.Module]:
    """(pretrained row, net with the source head) loaded strictly from the store's weights-only file."""
    row = store.get("pretrained", pretrained_id)
    if row is None:
        raise FileNotFoundError(f"pre-trained model {pretrained_id} is not in {store.uri}/pretrained")
    blob = store.read_bytes(*store.weights_parts(pretrained_id))
    if hashlib.sha256(blob).hexdigest() != row["weights_sha256"]:
        raise ValueError(f"weights of {pretrained_id} in the store do not match their recorded sha256")
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    net = build_net(row["arch"], row["num_classes"], row["in_chans"])
    net.load_state_dict(state, strict=True)  # never strict=False: a silent random init would train
    return row, net


def save_pretrained(store: Store, row: dict, net: torch.nn.Module) -> dict:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    blob = buf.getvalue()
    store.write_bytes(store.weights_parts(row["pretrained_id"]), blob)
    row = {**row, "weights_path": store.path(*store.weights_parts(row["pretrained_id"])),
           "weights_sha256": hashlib.sha256(blob).hexdigest()}
    store.write_row("pretrained", row)
    return row


def load_mask(store: Store, mask_id: str | None) -> Mask | None:
    if mask_id is None:
        return None
    row = store.get("masks", mask_id)
    if row is None:
        raise FileNotFoundError(f"mask {mask_id} is not in {store.uri}/masks")
    return Mask.unpack(row["bits"], row["layout"])


def source_data(dataset: str, root: str | None, device, rank: int = 0, world: int = 1, workers: int = 0) -> Data:
    """A pre-training task's data for IMP: all of its training pool; ImageNet streamed from its ImageFolder."""
    if dataset in catalog.STREAMED:
        from raydw.data import imagefolder

        return imagefolder.load(root, device, rank, world, workers)
    return load_data(dataset, root, "native", np.arange(catalog.get(dataset).pool), device, rank, world)


def load_data(dataset: str, root: str | None, protocol: str, train_idx: np.ndarray, device, rank: int = 0, world: int = 1) -> Data:
    info = catalog.get(dataset)
    raw = sources.read(dataset, root)
    pool_x, pool_y = raw.train_x[: info.pool], raw.train_y[: info.pool]
    val_x, val_y = raw.train_x[info.pool: info.pool + info.val], raw.train_y[info.pool: info.pool + info.val]
    train = Split.from_numpy(pool_x[train_idx], pool_y[train_idx], device).shard(rank, world)
    return Data(train=train, val=Split.from_numpy(val_x, val_y, device).shard(rank, world),
                test=Split.from_numpy(raw.test_x, raw.test_y, device).shard(rank, world),
                transform=Transform(dataset, protocol, info.size), train_images=len(train_idx))


def cell_model(store: Store, cell: Cell, mask_id: str | None) -> tuple[Normalized, Mask | None, dict]:
    """The ticket: pre-trained weights, a fresh seeded head for the downstream classes, the mask applied."""
    row, net = load_pretrained(store, cell.pretrained_id)
    info = catalog.get(cell.dataset)
    if row["in_chans"] != info.channels:
        raise ValueError(f"{cell.pretraining} takes {row['in_chans']}-channel input but {cell.dataset} has {info.channels}")
    replace_head(net, info.num_classes, generator=torch.Generator().manual_seed(cell.seed))
    mean, std = (info.mean, info.std) if cell.normalization == "downstream" else (tuple(row["mean"]), tuple(row["std"]))
    mask = load_mask(store, mask_id)
    if mask is not None:
        mask.check(net)
    return Normalized(net, mean, std), mask, row


def recipe_regime(r: RecipeSpec) -> RegimeSpec:
    """A pre-training recipe as a training regime on its source task (same loop as the cells)."""
    opt = OptimizerSpec(lr=r.lr, weight_decay=r.weight_decay, schedule="cosine")
    attack = None
    if r.kind == "fast_adversarial":  # Wong et al.: FGSM from a random start, step 1.25 eps
        attack = AttackSpec(method="fgsm_rs", eps=r.eps, step_size=1.25 * r.eps, steps=1)
    elif r.kind == "pgd_adversarial":  # Madry et al.: PGD, step 2.5 eps / steps
        attack = AttackSpec(method="pgd", eps=r.eps, step_size=2.5 * r.eps / r.pgd_steps, steps=r.pgd_steps)
    return RegimeSpec(kind="standard" if attack is None else "adversarial", epochs=r.epochs, batch_size=r.batch_size,
                      optimizer=opt, attack=attack, validate_ra=False)


def recipe_eval_attack(r: RecipeSpec) -> AttackSpec:
    return AttackSpec(method="pgd", eps=r.eps, step_size=r.eps / 4, steps=10)
