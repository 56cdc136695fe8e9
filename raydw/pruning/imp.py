"""IMP with rewinding to the pre-trained weights, as Double-Win-LTH's main_std.py / main_adv.py run it.

Ray-free: `imp` drives the rounds; the per-round training is a `train_round` callable, which
`raydw.train.imp_rounds.fit_round` builds from the training loop (pruning/ never imports train/).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from raydw.pruning.magnitude import imp_kept, prune_remaining
from raydw.pruning.mask import BoundMask, Mask, prunable_names

# train_round(net, bound_mask, k): train `net` in place for round k under the bound mask, fresh optimizer.
TrainRound = Callable[[nn.Module, BoundMask, int], object]
OnRound = Callable[[int, Mask], None]


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """θ_pre: a CPU copy of the whole state dict (weights, BN running stats, head), detached from the net."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def rewind(net: nn.Module, theta_pre: dict[str, torch.Tensor], mask: Mask) -> BoundMask:
    """Reset every weight and BN statistic to θ_pre, then zero the pruned weights (pruning_with_rewind)."""
    net.load_state_dict(theta_pre, strict=True)
    bound = mask.bind(net)
    bound.apply_()
    return bound


def imp(net: nn.Module, rounds: int, rate: float, train_round: TrainRound, prunable: str = "paper",
        start: tuple[int, Mask] | None = None, on_round: OnRound | None = None) -> dict[int, Mask]:
    """Masks of IMP rounds 1..`rounds` (round k: sparsity 1-(1-rate)^k), as {k: mask}.

    `net` holds the pre-trained weights (torchvision names; pass `model.net` of a Normalized model): they are
    θ_pre. Round 1 is magnitude pruning of θ_pre before any training; round k+1 prunes `rate` of the remaining
    weights of the net trained in round k from θ_pre under mask k. Round `rounds` is never trained: only its
    mask is a ticket. `on_round(k, mask)` gets each new mask as soon as it exists. `start=(k, mask_k)` resumes
    after a stored round k: no earlier round is computed again. The net is returned rewound to θ_pre, dense.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1 (round k has sparsity 1-(1-rate)^k), got {rounds}")
    if not 0 < rate < 1:
        raise ValueError(f"rate is the fraction of the remaining weights pruned per round, in (0, 1), got {rate}")
    theta_pre = snapshot(net)
    if start is None:
        k, mask = 1, prune_remaining(net, Mask.ones(net, prunable), rate)
        if on_round is not None:
            on_round(k, mask)
    else:
        k, mask = start
        _check_start(net, k, mask, rounds, rate, prunable)
    masks = {k: mask}
    try:
        while k < rounds:
            bound = rewind(net, theta_pre, mask)
            train_round(net, bound, k)
            mask = prune_remaining(net, mask, rate)  # magnitudes of the *trained* weights
            k += 1
            masks[k] = mask
            if on_round is not None:
                on_round(k, mask)
    finally:
        net.load_state_dict(theta_pre, strict=True)  # hand the net back as it came: pre-trained and dense
    return masks


def _check_start(net: nn.Module, k: int, mask: Mask, rounds: int, rate: float, prunable: str) -> None:
    """A resume point must be a round-k mask of this net's prunable set, else later rounds would be wrong."""
    if not 1 <= k <= rounds:
        raise ValueError(f"cannot resume after round {k}: rounds run 1..{rounds}")
    mask.check(net)
    expected = sorted(prunable_names(net, prunable))
    if mask.names != expected:
        extra = sorted(set(mask.names) - set(expected))
        missing = sorted(set(expected) - set(mask.names))
        raise ValueError(f"resume mask does not cover the {prunable!r} prunable set; "
                         f"extra: {extra}; missing: {missing}")
    want = imp_kept(mask.numel(), rate, k)
    if mask.kept() != want:
        raise ValueError(f"resume mask keeps {mask.kept()} of {mask.numel()} weights, but IMP round {k} at rate "
                         f"{rate} keeps {want}: is it round {k}'s mask, and the same rate?")
