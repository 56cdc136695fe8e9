"""Read published checkpoint formats into a torchvision-keyed state dict, strictly and safely.

Formats (shared/docs/paper-protocol.md section 2; docs/inputs.md):
  torchvision       a plain state dict
  fast_adversarial  {'state_dict': ..., 'epoch', 'arch', ...} with DataParallel `module.` prefixes (Wong et al.)
  robustness        MadryLab robustness: {'model': ...} (or 'state_dict'), the net under `module.model.`, plus
                    `module.attacker.*` and `module.normalizer.*` entries that are dropped
The Double-Win-LTH ticket checkpoints (`*.weight_orig` + `*.weight_mask`) are mask imports, handled elsewhere.
Loading is weights-only (`torch.load(weights_only=True)`); a file that needs full unpickling (robustness saves
with dill) is refused unless the caller trusts it explicitly.
"""
from __future__ import annotations

import hashlib
import re
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

FORMATS = ("torchvision", "fast_adversarial", "robustness")
_ROBUST_NET = "module.model."


class CheckpointError(ValueError):
    pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_NEEDS_PICKLE = re.compile(r"\bGLOBAL\b")  # torch's weights-only unpickler names the global it refused


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}".rstrip(": ")


def read_checkpoint(path: str | Path, trust: bool = False, mmap: bool = False) -> dict:
    """torch.load weights-only; full unpickling only with `trust` (it can run arbitrary code).

    A file that weights-only loading refuses because it pickles a class (dill, numpy) is told apart from a file
    that is damaged (truncated, empty, not a PyTorch file): `--trust` helps the first and never the second, so it
    is suggested only there. `mmap`: map the tensors instead of reading them (a cheap check of a large file)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found" + (" (it is a folder)" if p.is_dir() else ""))
    if p.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); a failed download or copy?")
    try:
        return _load(p, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, OSError, EOFError, KeyError
        if not _NEEDS_PICKLE.search(str(e)):
            raise CheckpointError(_damaged(path, e)) from None
        if not trust:
            raise CheckpointError(
                f"{path}: cannot be loaded weights-only ({_first_line(e)}). "
                "It needs full unpickling, which can run arbitrary code. If you trust the file, convert it once with "
                f"`raydw convert {path} OUT.pt --trust` (writes a plain weights-only state dict)") from None
    try:
        return _load(p, weights_only=False, mmap=False)
    except ModuleNotFoundError as e:  # robustness files pickle dill types; their unpickling needs dill importable
        raise CheckpointError(f"{path}: full unpickling needs the module {e.name!r} (pip install {e.name})") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails full unpickling too
        raise CheckpointError(_damaged(path, e)) from None


def _load(p: Path, weights_only: bool, mmap: bool):
    # torch warns about the file's form (a pickle protocol it did not expect) on stderr, file and line included: a
    # user-given file is judged here and said in one sentence, never with torch's warnings around it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _torch_load(p, weights_only, mmap)


def _torch_load(p: Path, weights_only: bool, mmap: bool):
    if mmap and zipfile.is_zipfile(p):  # torch maps only its zip format; the legacy format is read whole
        return torch.load(p, map_location="cpu", weights_only=weights_only, mmap=True)
    return torch.load(p, map_location="cpu", weights_only=weights_only)


def _damaged(path, e: BaseException) -> str:
    return (f"{path}: not a readable PyTorch checkpoint ({_first_line(e) or type(e).__name__}); the file looks "
            "truncated or damaged (an interrupted download or copy?) or is another kind of file; --trust would not help")


def check_tensors(sd: dict, source: str = "checkpoint") -> dict:
    """Every value of a state dict is a tensor (a number or a string in it would fail deep inside a load)."""
    names = [k for k in sd if not isinstance(k, str)]
    if names:
        raise CheckpointError(f"{source}: state dict keys must be parameter names (strings), got {names[:5]!r}")
    bad = [f"{k} ({type(v).__name__})" for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: not a state dict of tensors: {bad[:5]}{' ...' if len(bad) > 5 else ''} "
                              "are not tensors")
    return sd


def _is_state(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def detect_format(obj: dict, source: str = "checkpoint") -> str:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: a checkpoint is a dict, got {type(obj).__name__}")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            sd = check_tensors(obj[key], f"{source} ['{key}']")
            return "robustness" if key == "model" or any(k.startswith(_ROBUST_NET) for k in sd) else "fast_adversarial"
    if any(isinstance(v, torch.Tensor) for v in obj.values()):  # a state dict, perhaps with a bad entry
        check_tensors(obj, source)
        # A bare robustness model state (someone saved model.state_dict() of an AttackerModel).
        return "robustness" if any(k.startswith(_ROBUST_NET) for k in obj) else "torchvision"
    raise CheckpointError(f"{source}: unrecognised checkpoint layout; top-level keys {sorted(map(str, obj))[:10]}; "
                          f"expected a state dict or a dict with 'state_dict' or 'model' (formats {FORMATS})")


def _strip(sd: dict, prefix: str) -> dict:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def to_torchvision(obj: dict, fmt: str | None = None, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The torchvision-keyed weights of a checkpoint in `fmt` (detected when None).

    A file that is already a plain torchvision state dict is accepted whatever `fmt` says, because the model
    cache holds converted files under registry names whose published format is another.
    """
    found = detect_format(obj, source)
    fmt = fmt or found
    if fmt not in FORMATS:
        raise CheckpointError(f"{source}: unknown format {fmt!r}; known: {FORMATS}")
    if found == "torchvision" or fmt == "torchvision":
        if found != "torchvision":
            raise CheckpointError(f"{source}: format 'torchvision' asked for, but the file looks like {found!r}")
        sd = obj
    elif found != fmt:
        raise CheckpointError(f"{source}: format {fmt!r} asked for, but the file looks like {found!r}")
    elif fmt == "fast_adversarial":
        sd = obj["state_dict"]
    else:  # robustness: keep the net, drop the attacker's duplicate and the normalizer buffers
        full = obj if _is_state(obj) else obj.get("model", obj.get("state_dict"))
        sd = {k[len(_ROBUST_NET):]: v for k, v in full.items() if k.startswith(_ROBUST_NET)}
        if not sd:
            raise CheckpointError(f"{source}: robustness checkpoint has no '{_ROBUST_NET}*' entries; "
                                  f"first keys {sorted(full)[:5]}")
    return _strip(sd, "module.")  # DataParallel / DDP


def robustness_normalizer(obj: dict) -> dict[str, list[float]] | None:
    """The mean/std a robustness checkpoint normalizes with (inside its AttackerModel), or None."""
    full = obj.get("model", obj.get("state_dict")) if isinstance(obj, dict) else None
    if not isinstance(full, dict) or "module.normalizer.new_mean" not in full:
        return None
    return {k: full[f"module.normalizer.new_{k}"].flatten().tolist() for k in ("mean", "std")}


def _common_prefix_hint(want: set[str], state: dict) -> str:
    """If every file key carries the same leading component, say which prefix to strip."""
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) == 1 and not (want & set(state)):
        head = heads.pop()
        if want & {k.split(".", 1)[1] for k in state if "." in k}:
            return (f" (every key starts with '{head}.': a wrapped model; convert with the right --format "
                    f"({', '.join(FORMATS)}) or strip '{head}.')")
    return ""


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Every expected key present, no extra key, shapes equal; otherwise an error listing all differences.

    Only BatchNorm's `num_batches_tracked` may be absent: files saved before PyTorch 0.4 (torchvision's
    resnet50-19c8e357.pth) lack it, and torchvision itself loads them; it is filled with 0.
    """
    state = fit_state(net.state_dict(), state, source)
    net.load_state_dict(state, strict=True)


def fit_state(want: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """`state` with absent `num_batches_tracked` filled, if its keys and shapes are exactly `want`'s; else a
    CheckpointError listing every difference. Only shapes are read, so `want` may live on the meta device."""
    check_tensors(state, source)
    hint = _common_prefix_hint(set(want), state)
    state = dict(state)
    for k in want:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(want[k])
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(want[k].shape)}"
              for k in sorted(set(want) & set(state)) if tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        def cut(xs):
            return f"{xs[:20]}{' ...' if len(xs) > 20 else ''}"

        raise CheckpointError(f"{source} does not fit the model{hint}: missing keys {cut(missing)}; "
                              f"unexpected keys {cut(unexpected)}; shape mismatches {cut(shapes)}")
    return state


def check_weights(path: str | Path, arch: str, fmt: str | None = None, trust: bool = False,
                  num_classes: int = 1000, in_chans: int = 3) -> None:
    """What register_weights will find, found before Ray starts and cheaply: the file maps (mmap, weights-only),
    its layout and entries are tensors, and its keys and shapes are exactly `arch`'s (built on the meta device:
    no memory, no init). CheckpointError naming the file otherwise."""
    from raydw.models.build import build_net

    obj = read_checkpoint(path, trust=trust, mmap=True)
    sd = to_torchvision(obj, fmt, str(path))
    with torch.device("meta"):
        want = build_net(arch, num_classes, in_chans).state_dict()
    fit_state(want, sd, str(path))


def save_state(state: dict[str, torch.Tensor], dst: str | Path) -> str:
    """Write a plain state dict whole or not at all (a temporary renamed; a crash or a full disk leaves no half or
    temporary file); return its sha256."""
    from raydw.store.atomic import write_whole

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_whole(dst, lambda f: torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, f))
    return sha256_file(dst)


def convert_file(src: str | Path, dst: str | Path, fmt: str | None = None, arch: str = "resnet50",
                 trust: bool = False) -> dict:
    """Any supported checkpoint -> a weights-only torchvision state dict of `arch`, checked by a strict load.

    The written file is the model's full state dict after the strict load, so it is an exact torchvision key
    set (what the paper's downstream scripts demand) and loads with torch.load(weights_only=True).
    """
    from raydw.models.build import build_net

    obj = read_checkpoint(src, trust=trust)
    found = detect_format(obj, str(src))
    sd = to_torchvision(obj, fmt, str(src))
    fc = sd.get("fc.weight")
    if fc is not None and fc.dim() != 2:  # a 0-dim or flat head has no class count; load_strict would say less
        raise CheckpointError(f"{src}: fc.weight has shape {tuple(fc.shape)}; a classifier head is (classes, features)")
    num_classes = fc.shape[0] if fc is not None else 1000
    net = build_net(arch, num_classes)
    load_strict(net, sd, str(src))
    out_sha = save_state(net.state_dict(), dst)
    return {"source": str(src), "source_sha256": sha256_file(src), "format": fmt or found, "arch": arch,
            "num_classes": int(num_classes), "out": str(dst), "sha256": out_sha,
            "normalizer": robustness_normalizer(obj)}
