"""IMP's per-round re-training: the paper's IMP regimes and `fit_round`, the `train_round` that
`raydw.pruning.imp.imp` calls once per round (one `raydw.train.loop.fit` with a fresh optimizer).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from raydw.data.device import Data
from raydw.pruning.imp import TrainRound
from raydw.pruning.mask import BoundMask
from raydw.spec import AttackSpec, ImpSpec, OptimizerSpec, RegimeSpec
from raydw.train.loop import Outcome, fit


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
