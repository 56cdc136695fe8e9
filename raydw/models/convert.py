"""Read published checkpoint formats into a torchvision-keyed state dict, strictly and safely.

Formats (shared/docs/paper-protocol.md section 2):
  torchvision       a plain state dict
  fast_adversarial  {'state_dict': ..., 'epoch', 'arch', ...} with DataParallel `module.` prefixes (Wong et al.)
  robustness        MadryLab robustness: {'model': ...} (or 'state_dict'), the net under `module.model.`, plus
                    `module.attacker.*` and `module.normalizer.*` entries that are dropped
  reference_ticket  the Double-Win-LTH code's pruned checkpoints (`*.weight_orig` + `*.weight_mask`)
Loading is weights-only (`torch.load(weights_only=True)`); a file that needs full unpickling (robustness saves
with dill) is refused unless the caller trusts it explicitly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

FORMATS = ("torchvision", "fast_adversarial", "robustness")


class CheckpointError(ValueError):
    pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path, trust: bool = False) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError and friends
        if not trust:
            raise CheckpointError(
                f"{path}: cannot be loaded weights-only ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
                "It needs full unpickling, which can run arbitrary code. If you trust the file, convert it once with "
                "`raydw convert IN OUT --trust` (writes a plain weights-only state dict)") from None
        return torch.load(path, map_location="cpu", weights_only=False)


def detect_format(obj: dict) -> str:
    if not isinstance(obj, dict):
        raise CheckpointError(f"a checkpoint is a dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], dict):
        return "robustness"
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
        return "robustness" if any(k.startswith("module.model.") for k in sd) else "fast_adversarial"
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "torchvision"
    raise CheckpointError(f"unrecognised checkpoint layout; top-level keys: {sorted(obj)[:10]}")


def to_torchvision(obj: dict, fmt: str | None = None) -> dict[str, torch.Tensor]:
    fmt = fmt or detect_format(obj)
    if fmt == "torchvision":
        sd = obj
    elif fmt == "fast_adversarial":
        sd = obj["state_dict"]
    elif fmt == "robustness":
        sd = obj.get("model", obj.get("state_dict"))
        sd = {k[len("module.model."):]: v for k, v in sd.items() if k.startswith("module.model.")}
        if not sd:
            raise CheckpointError("robustness checkpoint has no 'module.model.*' entries")
    else:
        raise CheckpointError(f"unknown format {fmt!r}; known: {FORMATS}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Every expected key present, no extra key, shapes equal; otherwise an error listing all differences."""
    want = net.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(want[k].shape)}"
              for k in sorted(set(want) & set(state)) if tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source} does not fit the model: missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}; "
                              f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}; shape mismatches {shapes[:20]}")
    net.load_state_dict(state, strict=True)
