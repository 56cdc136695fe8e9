"""Architectures, the normalizing wrapper and the fresh downstream head.

Normalization lives inside the model (MadryLab robustness style) so every attack works in [0,1] pixels.
State-dict keys of the wrapped net stay torchvision's, so masks and checkpoints are portable.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from raydw.models.catalog import ARCHS


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TinyResNet(nn.Module):
    """Widths 16/32/64, torchvision-style names (conv1, bn1, layer1..3, fc) so the same mask code applies.

    The stem has stride 2: on 28x28 digits that costs ~4x fewer FLOPs than stride 1 for a point or two of
    accuracy, which is what lets the CPU demo finish in minutes.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = _Block(widths[0], widths[0], 1)
        self.layer2 = _Block(widths[0], widths[1], 2)
        self.layer3 = _Block(widths[1], widths[2], 2)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build_net(arch: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    if arch == "resnet_tiny":
        return TinyResNet(num_classes, in_chans)
    if arch in ("resnet18", "resnet50"):
        # Imported here, not at the top: torchvision pulls in torch._dynamo (~1.5 s of CPU), paid by every Ray
        # process that imports the worker code (Train controller and workers), also for runs that never build one.
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        return net
    raise KeyError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")


class Normalized(nn.Module):
    """x in [0,1] pixels -> (x - mean) / std -> net. Attacks see only the [0,1] input."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def replace_head(net: nn.Module, num_classes: int, generator: torch.Generator | None = None) -> None:
    """A fresh Linear head for the downstream classes (the paper: default PyTorch init, never pruned)."""
    old = net.fc
    new = nn.Linear(old.in_features, num_classes)
    if generator is not None:  # seeded like nn.Linear's default init, so a cell's head is reproducible
        bound = 1 / old.in_features ** 0.5
        with torch.no_grad():
            new.weight.uniform_(-bound, bound, generator=generator)
            new.bias.uniform_(-bound, bound, generator=generator)
    net.fc = new.to(old.weight.device)
