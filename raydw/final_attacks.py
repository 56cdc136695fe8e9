"""Final attacks from optional packages (`eval.final_attack`): per-example robustness of the selected checkpoints.

autoattack: RobustBench's 'standard' L-inf AutoAttack (Croce & Hein, ICML 2020). In order, each on the images
no earlier attack broke: APGD-CE (100 iterations), APGD-T (targeted DLR loss, 9 target classes x 100 iterations),
FAB-T (9 targets x 100 iterations), Square (black-box, 5,000 queries); one restart each. An image counts robust
only if it is clean-correct and no attack flips it.

It is assembled from torchattacks' components with the settings of the reference implementation
(fra31/auto-attack, `set_version('standard')`), not from `torchattacks.AutoAttack`: in torchattacks 3.5.1 that
class passes no iteration count, so its APGD-CE, APGD-T and FAB-T run their default 10 iterations instead of 100
(attacks/autoattack.py:58-98; apgd.py:47, apgdt.py:47, fab.py:58), it targets n_classes - 1 classes (99 on
CIFAR-100; the reference targets 9) and its Square rescales the p schedule (square.py:56,175).

Cost: on an image that survives, AutoAttack runs about 1,900 forward-backward passes (100 + 9 x 100 + 9 x 100)
and 5,000 forward passes, against PGD-20's 20 forward-backward passes; an image broken early costs little, and
on small models the many tiny steps are bound by Python overhead. Measured on a small conv net trained on the
28x28 digits (120 test images, eps 0.055, one CPU thread; tests/test_autoattack.py uses a cheaper 7x7 MLP now):
PGD-20 0.05 s (RA 0.25), AutoAttack 9.2 s (RA 0.20), about 175x; torchattacks.AutoAttack's 10-iteration version
took 4.0 s and left RA 0.208.
Where compute dominates (a ResNet on a GPU; a backward pass ~ 2 forwards), AutoAttack costs about
5 + 175 x (share of images APGD-CE leaves robust) PGD-20 evaluations: ~180x for a fully robust image.

Randomness: every component re-seeds torch's global generators with `seed` (apgd.py:327, apgdt.py:320,
fab.py:657, square.py:466); it runs inside `torch.random.fork_rng`, so the caller's random stream is untouched.
The bits are a function of (seed, batch composition): the same images in the same batches give the same bits
on CPU (CUDA kernels may add their usual nondeterminism).
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable
from raydw.ids import lookup

if TYPE_CHECKING:  # torch is imported lazily: the spec checker imports this module and stays torch-free
    import torch
    import torch.nn as nn


@dataclass(frozen=True)
class FinalAttack:
    package: str  # the distribution it needs
    min_version: tuple[int, int]  # the oldest release whose keyword arguments it uses
    extra: str  # the raydw extra that installs it
    attack: Callable[..., torch.Tensor]  # (model, x, y, eps, n_classes, seed) -> adversarial x, in the eps-ball


def _autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_classes: int,
                seed: int) -> torch.Tensor:
    import torchattacks as ta

    # The reference targets the 9 classes with the highest logits after the true one; the components take
    # n_classes and target n_classes - 1 of them (apgdt.py:65, fab.py:81).
    targets = min(n_classes, 10)
    common = dict(norm="Linf", eps=eps, seed=seed, n_restarts=1)
    aa = ta.MultiAttack([  # attacks only the images every earlier attack left correct (wrappers/multiattack.py:54-74)
        ta.APGD(model, loss="ce", steps=100, **common),
        ta.APGDT(model, steps=100, n_classes=targets, **common),
        ta.FAB(model, steps=100, multi_targeted=True, n_classes=targets, **common),
        ta.Square(model, n_queries=5000, p_init=0.8, loss="margin", resc_schedule=False, **common),
    ])
    return aa(x, y)


FINAL_ATTACKS: dict[str, FinalAttack] = {
    "autoattack": FinalAttack("torchattacks", (3, 5), "autoattack", _autoattack),
}


def get(name: str) -> FinalAttack:
    return lookup(FINAL_ATTACKS, name, "final attack")


def available(name: str) -> str | None:
    """None if `name` can run here, else why not and the install command (for the pre-Ray spec check).

    Reads the installed distribution's metadata only, so the check imports neither torch nor the package."""
    fa = get(name)
    fix = f"pip install 'raydw[{fa.extra}]'"
    try:
        version = importlib.metadata.version(fa.package)
    except importlib.metadata.PackageNotFoundError:
        return f"eval.final_attack {name!r} needs {fa.package}, which is not installed: {fix}"
    try:
        have = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:  # a local build with an odd version string: let the import decide
        return None
    if have < fa.min_version:
        want = ".".join(map(str, fa.min_version))
        return f"eval.final_attack {name!r} needs {fa.package}>={want}, found {version}: {fix}"
    return None


def robust_correct(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_classes: int,
                   seed: int, batch_size: int = 250) -> torch.Tensor:
    """Per image of x ([0,1] pixels, on the model's device): still correctly classified under attack `name`.

    Runs with the model in eval mode and its parameters frozen, and restores both after (module by module).
    `eps` is the L-inf radius in [0,1] pixels, `n_classes` the model's number of outputs (checked)."""
    fa = get(name)
    problem = available(name)
    if problem is not None:
        raise ImportError(problem)
    import torch

    dev = next(model.parameters()).device
    if x.device != dev:
        raise ValueError(f"images are on {x.device}, the model on {dev}")
    if len(y) and (x.min() < 0 or x.max() > 1):
        # The components clamp to [0,1]: normalized inputs would be attacked in the wrong box, silently.
        raise ValueError(f"images must lie in [0,1] (the model normalizes its own input); got "
                         f"[{x.min().item():.3f}, {x.max().item():.3f}]")
    if n_classes < 4:
        raise ValueError(f"{name} needs at least 4 classes (APGD-T's DLR loss reads the 4th-largest logit), "
                         f"got {n_classes}")
    modes = [(m, m.training) for m in model.modules()]  # per module: a frozen BN inside stays frozen
    # Frozen: FAB calls .backward(), which would otherwise leave gradients in the parameters (fab.py:114,136).
    trainable = [p for p in model.parameters() if p.requires_grad]
    cuda = [torch.cuda.current_device()] if dev.type == "cuda" else []  # the components seed the current device
    out = []
    with torch.random.fork_rng(devices=cuda):
        model.eval()  # the components do too (attack.py:240); here also for the clean check below
        for p in trainable:
            p.requires_grad_(False)
        try:
            for i in range(0, len(y), batch_size):
                out.append(_one_batch(fa, name, model, x[i:i + batch_size], y[i:i + batch_size], eps,
                                      n_classes, seed))
        finally:
            for p in trainable:
                p.requires_grad_(True)
            for m, training in modes:
                m.training = training
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=dev)


def bound(name: str, model: nn.Module, eps: float, n_classes: int, seed: int,
          batch_size: int = 250) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`robust_correct` with all but the images fixed: the `final(x, y)` the training loop takes.

    Checks the attack can run now, so a missing package fails the cell before training, not after it."""
    problem = available(name)
    if problem is not None:
        raise ImportError(problem)
    return lambda x, y: robust_correct(name, model, x, y, eps, n_classes, seed, batch_size)


def _one_batch(fa: FinalAttack, name: str, model, x, y, eps: float, n_classes: int, seed: int):
    import torch

    with torch.no_grad():
        logits = model(x)
    if logits.shape[1] != n_classes:
        raise ValueError(f"n_classes is {n_classes} but the model has {logits.shape[1]} outputs")
    ok = logits.argmax(1) == y
    if ok.any():  # as the reference does: attack only the clean-correct images
        x_adv = fa.attack(model, x[ok], y[ok], eps, n_classes, seed)
        # An example outside the eps-ball or [0,1] would count as a success it is not.
        excess = (x_adv - x[ok]).abs().amax().item() - eps
        if excess > 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
            raise RuntimeError(f"{name} returned examples outside the eps-ball or [0,1] (excess {excess:.2e})")
        idx = ok.nonzero().squeeze(1)
        with torch.no_grad():
            ok[idx] = model(x_adv).argmax(1) == y[idx]
    return ok
