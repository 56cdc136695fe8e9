"""The reference scripts' recipe, re-implemented for `raydw bench` row (a): their normalization layer, PGD,
PIL transforms, DataLoader and train/eval steps, as VITA-Group/Double-Win-LTH writes them (docs/performance.md,
"What the reference actually does"). Kept apart from the bench's timing harness, which compares it with raydw's
own code path."""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS, STEP = 8 / 255, 2 / 255
WORKERS, PREFETCH = 2, 4  # the reference's DataLoader: 2 workers x torch's default prefetch_factor 2


class RefNormalize(nn.Module):
    """advertorch's NormalizeByChannelMeanStd: the reference's first module."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x):
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]


def reference_model(net: nn.Module, mask, mean, std, device) -> nn.Module:
    """Sequential(Normalize, net) with prune hooks: weight = weight_orig * mask on every forward, NCHW, fp32."""
    from torch.nn.utils import prune

    net = copy.deepcopy(net)
    for name, m in net.named_modules():
        key = f"{name}.weight"
        if isinstance(m, nn.Conv2d) and mask is not None and key in mask.tensors:
            prune.CustomFromMask.apply(m, "weight", mask=mask.tensors[key].float())
    return nn.Sequential(RefNormalize(mean, std), net).to(device)


@contextlib.contextmanager
def no_param_grad(model: nn.Module):
    """advertorch.context.ctx_noparamgrad, which the reference wraps its *training* attack in."""
    prev = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), prev):
            p.requires_grad_(r)


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """advertorch LinfPGDAttack.perturb: `loss.backward()` through the model, so every parameter that
    requires grad also gets (and accumulates) a gradient at each step; only delta.grad is zeroed."""
    delta = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    delta = nn.Parameter((x + delta).clamp(0, 1) - x)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        delta.data = delta.data + step_size * delta.grad.data.sign()
        delta.data = delta.data.clamp(-eps, eps)
        delta.data = (x.data + delta.data).clamp(0, 1) - x.data
        delta.grad.data.zero_()
    return (x + delta).clamp(0, 1).detach()


class PilImages(torch.utils.data.Dataset):
    """torchvision's CIFAR10.__getitem__: a PIL image per item, then the per-image transforms."""

    def __init__(self, x_hwc: np.ndarray, y: np.ndarray, transform, length: int | None = None):
        self.x, self.y, self.transform = x_hwc, y, transform
        self.length = length or len(y)  # longer than the images: they repeat (content does not matter)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        from PIL import Image

        i %= len(self.y)
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference_transforms(protocol: str):
    """(train, eval) PIL transforms: dataset.py's 224-px ones, or its 32-px `cifar10_3` variant."""
    import torchvision.transforms as T

    if protocol == "paper":
        return (T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()]),
                T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]))
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]), T.ToTensor()


def reference_loader(x_hwc, y, transform, batch: int, shuffle: bool, device, length: int | None = None):
    # dataset.py: num_workers=2, pin_memory=True (pinning only means something with a GPU).
    return torch.utils.data.DataLoader(PilImages(x_hwc, y, transform, length), batch_size=batch, shuffle=shuffle,
                                       num_workers=WORKERS, pin_memory=device.type == "cuda", drop_last=False)


def reference_train_step(model, opt, x, y, attack_steps: int) -> None:
    """main_adv_eval.train / main_std_eval.train for one batch, host syncs (`.item()`) included."""
    model.train()
    if attack_steps:
        with no_param_grad(model):
            x = reference_pgd(model, x, y, EPS, STEP, attack_steps)
    out = model(x)
    loss = F.cross_entropy(out, y)
    opt.zero_grad(set_to_none=False)  # the reference's torch 1.x default zeroes in place
    loss.backward()
    opt.step()
    loss.item()
    (out.argmax(1) == y).float().sum().item()


def reference_eval_step(model, x, y) -> None:
    """validate (clean) + validate_adv (PGD-20, parameter gradients computed) on one batch."""
    model.eval()
    with torch.no_grad():
        out = model(x)
        F.cross_entropy(out, y).item()
        (out.argmax(1) == y).float().sum().item()
    xa = reference_pgd(model, x, y, EPS, STEP, 20)
    with torch.no_grad():
        out = model(xa)
        F.cross_entropy(out, y).item()
        (out.argmax(1) == y).float().sum().item()


# -- measurement helpers --
