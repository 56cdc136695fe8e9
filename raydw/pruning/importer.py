"""Import tickets from the reference code's checkpoints: `<module>.weight_mask` entries of a pruned state dict.

The result is a plain `Mask` keyed `<module>.weight`, checked layer by layer against the net it will prune.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from raydw.pruning.mask import Mask, prunable_names

SUFFIX = ".weight_mask"


def read_checkpoint_masks(path: str | Path, net: nn.Module, prunable: str = "paper") -> Mask:
    """The mask held by a checkpoint file (e.g. Double-Win-LTH's `{k}-checkpoint.pth.tar`), checked against `net`."""
    path = Path(path).expanduser()  # tickets.files: "~/masks/x.pth.tar" as written in YAML
    if not path.is_file():
        raise FileNotFoundError(f"mask checkpoint {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - say which file and why, whatever the unpickler raised
        raise ValueError(f"{path} cannot be read with torch.load(weights_only=True): {e}") from None
    return masks_from_state(obj, net, prunable, source=str(path))


def check_mask_file(path: str | Path) -> None:
    """Before a sweep starts: the file loads weights-only (memory-mapped) and holds binary '*.weight_mask'
    tensors. Whether they fit the pre-trained net is checked where the net is loaded (read_checkpoint_masks)."""
    from raydw.models.convert import CheckpointError, read_checkpoint

    try:
        obj = read_checkpoint(Path(path).expanduser(), mmap=True)
    except CheckpointError as e:
        raise ValueError(f"mask checkpoint {e}") from None
    state = _unwrap(obj, str(path))
    masks = {k: v for k, v in state.items() if isinstance(k, str) and k.endswith(SUFFIX)}
    if not masks:
        raise ValueError(f"{path} holds no '*{SUFFIX}' entries (keys look like {sorted(map(str, state))[:5]}): "
                         "is it a pruned checkpoint?")
    bad = [k for k, v in masks.items() if not isinstance(v, torch.Tensor) or v.dim() == 0]
    if bad:
        raise ValueError(f"{path}: {bad[:5]} are not mask tensors")


def masks_from_state(obj: Mapping, net: nn.Module, prunable: str = "paper", source: str = "<state dict>") -> Mask:
    """The mask in a (possibly {'state_dict': ...}-wrapped, possibly `module.`-prefixed) pruned state dict."""
    state = _unwrap(obj, source)
    found = {_strip(k)[: -len(SUFFIX)] + ".weight": v for k, v in state.items() if k.endswith(SUFFIX)}
    if not found:
        sample = sorted(state)[:5]
        raise ValueError(f"{source} holds no '*{SUFFIX}' entries (keys look like {sample}): is it a pruned checkpoint?")
    _check_fits(found, net, prunable, source)
    return Mask({n: _as_bool(v, n, source) for n, v in found.items()})


def _unwrap(obj, source: str) -> Mapping:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # the reference's checkpoints also hold init, optimizer, state_prune
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} is a {type(obj).__name__}, not a state dict")
    return obj


def _strip(key: str) -> str:
    while key.startswith("module."):  # DataParallel / DDP wrappers, possibly nested
        key = key[len("module."):]
    return key


def _check_fits(found: dict[str, torch.Tensor], net: nn.Module, prunable: str, source: str) -> None:
    """Every prunable layer has a mask of its weight's shape and no mask names anything else, else one error."""
    params = dict(net.named_parameters())
    expected = prunable_names(net, prunable)
    missing = [n for n in expected if n not in found]
    outside = f"in the net but not in the {prunable!r} prunable set"
    extra = [f"{n} ({outside if n in params else 'not in the net'})" for n in sorted(found) if n not in expected]
    wrong = [f"{n}: mask {tuple(found[n].shape)} vs weight {tuple(params[n].shape)}"
             for n in expected if n in found and tuple(found[n].shape) != tuple(params[n].shape)]
    if not (missing or extra or wrong):
        return
    hint = ""
    if prunable == "paper" and missing == ["conv1.weight"]:
        hint = " The stem is unpruned, as in CV_LTH: import with prunable='cv_lth'."
    elif prunable == "cv_lth" and [e.split(" ")[0] for e in extra] == ["conv1.weight"]:
        hint = " The stem is pruned, as in Double-Win-LTH: import with prunable='paper'."
    raise ValueError(f"masks in {source} do not fit the model ({prunable!r} prunable set, {len(expected)} layers): "
                     f"prunable layers without a mask: {missing}; masks for other names: {extra}; "
                     f"shape mismatches: {wrong}.{hint}")


def _as_bool(t: torch.Tensor, name: str, source: str) -> torch.Tensor:
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{source}: {name}_mask holds values other than 0 and 1; a mask is binary")
    return t.detach().to("cpu").bool().clone()
