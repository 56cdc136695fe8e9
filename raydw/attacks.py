"""L-inf PGD and FGSM with random start, in [0,1] pixel space (the model normalizes its own input).

Attacks take input gradients only (`torch.autograd.grad` w.r.t. the perturbation): no parameter gradients
are computed or accumulated, which saves about 30 % of a PGD step (shared/docs/offline-data.md).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from raydw.ids import lookup


@contextmanager
def _mode(model: nn.Module, train: bool):
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
        random_start: bool = True, train_mode: bool = False, generator: torch.Generator | None = None,
        autocast: bool = False) -> torch.Tensor:
    """Untargeted L-inf PGD on cross-entropy: x_adv in the eps-ball around x and in [0,1].

    train_mode=True crafts with BatchNorm in train mode, as the paper's adversarial fine-tuning does
    (its BN running statistics then also see the PGD iterates).
    """
    x = x.detach()
    if random_start:
        delta = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
        delta = (x + delta).clamp_(0, 1) - x
    else:
        delta = torch.zeros_like(x)
    with _mode(model, train_mode):
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = delta + step_size * grad.sign()
                delta = delta.clamp_(-eps, eps)
                delta = (x + delta).clamp_(0, 1) - x
    return (x + delta).detach()


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float,
            train_mode: bool = True, generator: torch.Generator | None = None, autocast: bool = False) -> torch.Tensor:
    """FGSM from a uniform random start (Wong et al. 2020, 'fast is better than free'); step 1.25 eps there."""
    return pgd(model, x, y, eps, step_size, steps=1, random_start=True, train_mode=train_mode,
               generator=generator, autocast=autocast)


ATTACKS = {"pgd": pgd, "fgsm_rs": fgsm_rs}


def get(name: str):
    return lookup(ATTACKS, name, "attack")


def from_spec(model: nn.Module, x, y, spec, train: bool, generator=None, autocast: bool = False) -> torch.Tensor:
    """Run an AttackSpec. Training attacks use the spec's BN mode; evaluation attacks always eval mode."""
    train_mode = train and spec.bn_mode == "train"
    if spec.method == "fgsm_rs":
        return fgsm_rs(model, x, y, spec.eps, spec.step_size, train_mode=train_mode, generator=generator, autocast=autocast)
    return pgd(model, x, y, spec.eps, spec.step_size, spec.steps, spec.random_start, train_mode=train_mode,
               generator=generator, autocast=autocast)
