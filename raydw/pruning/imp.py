"""IMP with rewinding to the pre-trained weights, as Double-Win-LTH's main_std.py / main_adv.py run it.

Ray-free: `imp` drives the rounds, `fit_round` builds the per-round training from `raydw.train.loop.fit`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from raydw.pruning.magnitude import imp_kept, prune_remaining
from raydw.pruning.mask import BoundMask, Mask, prunable_names
from raydw.spec import AttackSpec, ImpSpec, OptimizerSpec, RegimeSpec
from raydw.train.loop import Data, Outcome, fit

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


def round_seed(seed: int, k: int) -> int:
    """Each round gets its own data order (the paper's sampler sees global epochs), reproducible from (seed, k)."""
    return seed * 1000 + k


def imp_regime(epochs_per_round: int = 30, batch_size: int = 2048, lr: float = 5e-4, weight_decay: float = 1e-4,
               attack: AttackSpec | None = None) -> RegimeSpec:
    """The paper's IMP re-training: SGD momentum 0.9, constant lr, wd on all parameters, clean val SA only.

    `attack` makes it adversarial IMP (main_adv.py: PGD-3, eps 8/255, step 2*eps/3, trained on PGD examples only).
    """
    opt = OptimizerSpec(lr=lr, momentum=0.9, weight_decay=weight_decay, schedule="constant")
    return RegimeSpec(kind="standard" if attack is None else "adversarial", epochs=epochs_per_round,
                      batch_size=batch_size, optimizer=opt, attack=attack, validate_ra=False)


def spec_regime(spec: ImpSpec, pretraining: str) -> RegimeSpec:
    """The re-training regime a sweep's `tickets.imp` gives one pre-training (its regime may be per pre-training)."""
    adversarial = spec.regime_for(pretraining) == "adversarial"
    return RegimeSpec(kind="adversarial" if adversarial else "standard", epochs=spec.epochs_per_round,
                      batch_size=spec.batch_size, optimizer=spec.optimizer,
                      attack=spec.attack if adversarial else None, validate_ra=False)


def fit_round(model: nn.Module, data: Data, regime: RegimeSpec, seed: int, eval_attack: AttackSpec | None = None,
              autocast: bool = False, ddp: nn.Module | None = None,
              on_epoch: Callable[[int, dict, Callable[[], dict]], None] | None = None,
              on_fit: Callable[[int, Outcome], None] | None = None,
              resume: tuple[int, dict] | None = None) -> TrainRound:
    """The `train_round` for `imp`: one `raydw.train.loop.fit` per round on `model` (a Normalized wrapper of
    the net `imp` prunes), with a fresh optimizer and schedule each round (fit builds them).

    `data` holds the source task. `on_epoch(k, record, state_fn)` and `on_fit(k, outcome)` let the caller
    report progress and checkpoint; `resume=(k, state)` continues round k from a `state_fn()` state saved
    mid-round (give `imp` start=(k, mask_k) with it). `eval_attack=None` validates and tests clean SA only,
    as the paper's IMP does.
    """
    def train_round(net: nn.Module, bound: BoundMask, k: int) -> None:
        if getattr(model, "net", model) is not net:
            raise ValueError("fit_round's model must wrap the very net imp prunes (Normalized(net, ...).net is net)")
        hook = None if on_epoch is None else (lambda rec, state_fn: on_epoch(k, rec, state_fn))
        state = resume[1] if resume is not None and resume[0] == k else None
        out = fit(model, bound, data, regime, eval_attack, round_seed(seed, k), on_epoch=hook, resume=state,
                  autocast=autocast, ddp=ddp)
        if on_fit is not None:
            on_fit(k, out)

    return train_round
