"""Global unstructured L1 magnitude pruning, the paper's criterion (torch's global_unstructured + L1Unstructured).

Implemented on plain tensors with the same operations torch uses (concatenate the unpruned entries in
parameter order, `topk(largest=False)` of their magnitudes, `round(amount * remaining)`), so the masks are
identical to torch's, ties included, without ever installing prune hooks.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from raydw.pruning.mask import Mask


@torch.no_grad()
def prune_remaining(net: nn.Module, mask: Mask, amount: float) -> Mask:
    """Remove `amount` of the *remaining* weights with the smallest |w| across all masked layers (one IMP step).

    Layers are concatenated in `mask.names` (sorted) order: torch gives the same mask, ties included, when it is
    handed the parameters in that order (topk breaks ties by position).
    """
    if not 0 <= amount <= 1:
        raise ValueError(f"amount is a fraction of the remaining weights in [0, 1], got {amount}")
    mask.check(net)
    params = dict(net.named_parameters())
    names = mask.names
    scores = torch.cat([params[n].detach().abs().reshape(-1).float().cpu() for n in names])
    keep = torch.cat([mask.tensors[n].reshape(-1) for n in names])
    remaining = scores[keep]
    k = round(amount * remaining.numel())
    if k > 0:
        drop_local = torch.topk(remaining, k=k, largest=False).indices
        keep_idx = torch.nonzero(keep).squeeze(1)
        keep = keep.clone()
        keep[keep_idx[drop_local]] = False
    out, i = {}, 0
    for n in names:
        m = mask.tensors[n].numel()
        out[n] = keep[i: i + m].reshape(mask.tensors[n].shape).clone()
        i += m
    return Mask(out)


def one_shot(net: nn.Module, sparsity: float, prunable: str = "paper") -> Mask:
    """OMP: prune the pre-trained weights to `sparsity` of the prunable set in one step."""
    return prune_remaining(net, Mask.ones(net, prunable), sparsity)


def imp_kept(total: int, rate: float, k: int) -> int:
    """Weights IMP keeps after k rounds: each round removes round(rate * remaining), as torch rounds it."""
    kept = total
    for _ in range(k):
        kept -= round(rate * kept)
    return kept


def imp_sparsity(total: int, rate: float, k: int) -> float:
    """Round k's exact sparsity over `total` prunable weights (1-(1-rate)^k up to one weight per round).

    Give this to `one_shot` / `random_mask` to match an IMP round's pruned count exactly.
    """
    return 1 - imp_kept(total, rate, k) / total


def random_mask(net: nn.Module, sparsity: float, seed: int, prunable: str = "paper", layerwise: bool = False) -> Mask:
    """A seeded random mask at `sparsity`: global (one draw over the whole set) or layer-wise (each layer alike).

    Global removes exactly round(sparsity * total); layer-wise removes round(sparsity * layer size) per layer,
    so its total may differ from the global count by rounding (at most half a weight per layer).
    """
    g = torch.Generator().manual_seed(seed)
    base = Mask.ones(net, prunable)
    if layerwise:
        out = {}
        for n in base.names:
            t = base.tensors[n]
            k = round(sparsity * t.numel())
            keep = torch.ones(t.numel(), dtype=torch.bool)
            keep[torch.randperm(t.numel(), generator=g)[:k]] = False
            out[n] = keep.reshape(t.shape)
        return Mask(out)
    total = base.numel()
    keep = torch.ones(total, dtype=torch.bool)
    keep[torch.randperm(total, generator=g)[: round(sparsity * total)]] = False
    out, i = {}, 0
    for n in base.names:
        m = base.tensors[n].numel()
        out[n] = keep[i: i + m].reshape(base.tensors[n].shape)
        i += m
    return Mask(out)


def random_like(mask: Mask, seed: int) -> Mask:
    """A seeded random mask with `mask`'s exact per-layer kept counts (random pruning at a ticket's layer-wise
    sparsity): separates "which weights" from "how many per layer"."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in mask.names:
        t = mask.tensors[n]
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        keep[torch.randperm(t.numel(), generator=g)[: int(t.sum())]] = True
        out[n] = keep.reshape(t.shape)
    return Mask(out)
