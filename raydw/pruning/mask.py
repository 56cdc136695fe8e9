"""A mask is a plain value: parameter name -> bool tensor, with a content hash as its id.

Never `torch.nn.utils.prune` hook state: a Mask is applied by multiplying weights in place, held after each
optimizer step, and stored bit-packed in the results store.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from raydw.ids import digest

PRUNABLE_SETS = {
    "paper": "every Conv2d weight, the stem conv1 and the 1x1 downsample convs included (Double-Win-LTH utils_pruning.py)",
    "cv_lth": "every Conv2d weight except the stem conv1 (CV_LTH pruning_utils.py)",
}


def prunable_names(net: nn.Module, which: str = "paper") -> list[str]:
    """Names of the prunable weights of a torchvision-named net (fc, BN and biases are never pruned)."""
    if which not in PRUNABLE_SETS:
        raise KeyError(f"unknown prunable set {which!r}; known: {sorted(PRUNABLE_SETS)}")
    names = [f"{n}.weight" for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if which == "cv_lth":
        names = [n for n in names if n != "conv1.weight"]
    return names


@dataclass(frozen=True)
class Mask:
    """True = kept. Tensors are bool on CPU, keyed by the net's parameter names."""

    tensors: dict[str, torch.Tensor]

    @staticmethod
    def ones(net: nn.Module, which: str = "paper") -> "Mask":
        params = dict(net.named_parameters())
        return Mask({n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in prunable_names(net, which)})

    # -- reports ---------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted(self.tensors)

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def kept(self) -> int:
        return int(sum(int(t.sum()) for t in self.tensors.values()))

    def sparsity(self) -> float:
        """Fraction of prunable weights removed (the paper counts conv weights only)."""
        return 1 - self.kept() / self.numel()

    def layer_density(self) -> dict[str, float]:
        return {n: float(self.tensors[n].float().mean()) for n in self.names}

    # -- identity and storage --------------------------------------------------------------------------
    def packed(self) -> tuple[bytes, list[tuple[str, list[int]]]]:
        flat = np.concatenate([self.tensors[n].reshape(-1).numpy() for n in self.names]).astype(bool)
        return np.packbits(flat).tobytes(), [(n, list(self.tensors[n].shape)) for n in self.names]

    @property
    def id(self) -> str:
        bits, layout = self.packed()
        return digest(json.dumps(layout).encode() + b"\0" + bits)

    @staticmethod
    def unpack(bits: bytes, layout) -> "Mask":
        if isinstance(layout, str):
            layout = json.loads(layout)
        total = sum(int(np.prod(s)) for _, s in layout)
        flat = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=total).astype(bool)
        out, i = {}, 0
        for name, shape in layout:
            n = int(np.prod(shape))
            out[name] = torch.from_numpy(flat[i: i + n].copy()).reshape(shape)
            i += n
        return Mask(out)

    # -- use -------------------------------------------------------------------------------------------
    def check(self, net: nn.Module) -> None:
        """Every masked name exists in the net with the same shape, else a clear error."""
        params = dict(net.named_parameters())
        missing = [n for n in self.names if n not in params]
        wrong = [f"{n}: mask {tuple(self.tensors[n].shape)} vs weight {tuple(params[n].shape)}"
                 for n in self.names if n in params and params[n].shape != self.tensors[n].shape]
        if missing or wrong:
            raise ValueError(f"mask does not fit the model; names not in model: {missing}; shape mismatches: {wrong}")

    def bind(self, net: nn.Module) -> "BoundMask":
        self.check(net)
        return BoundMask(net, self)


class BoundMask:
    """A mask bound to a net's parameters on their device: apply after every step with foreach ops."""

    def __init__(self, net: nn.Module, mask: Mask):
        params = dict(net.named_parameters())
        self.params = [params[n] for n in mask.names]
        self.masks = [mask.tensors[n].to(device=params[n].device, dtype=params[n].dtype) for n in mask.names]
        self.dense = mask.sparsity() == 0.0

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero the pruned weights in place."""
        if not self.dense:
            torch._foreach_mul_(self.params, self.masks)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zero the pruned weights' gradients so momentum never builds up behind the mask."""
        if self.dense:
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, [m for p, m in zip(self.params, self.masks) if p.grad is not None])
