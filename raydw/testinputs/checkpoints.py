"""Random-init weights in each registry entry's published layout, converted the way a user converts a download.

Layouts (raydw.models.convert): torchvision is a plain state dict; fast_adversarial (Wong et al.) wraps a
DataParallel (`module.`) state dict with its training record; robustness (MadryLab) nests the net under
`module.model.` beside the attacker's copy and the normalizer, and pickles objects, so weights-only loading refuses
it as it refuses the real dill files (conversion needs --trust). The published file names are the real ones
(torchvision's carries the first 8 hex of its sha256, which `raydw fetch` checks).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from raydw.models.catalog import PRETRAINED, get_pretrained

_IMAGENET_STATS = {"new_mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1),
                   "new_std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)}


def robustness_ckpt(sd: dict) -> dict:
    """MadryLab robustness layout; the `args` Namespace makes weights_only=True refuse it, as dill files are refused."""
    model = {f"module.model.{k}": v for k, v in sd.items()}
    model |= {f"module.attacker.model.{k}": v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    model |= {f"module.normalizer.{k}": v for k, v in _IMAGENET_STATS.items()}
    model |= {f"module.attacker.normalize.{k}": v for k, v in _IMAGENET_STATS.items()}
    return {"model": model, "optimizer": None, "schedule": None, "epoch": 90,
            "args": argparse.Namespace(arch="resnet50", eps=4 / 255, constraint="inf")}


def fast_adv_ckpt(sd: dict) -> dict:
    return {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 15, "arch": "resnet50",
            "best_prec1": 55.4, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}


LAYOUTS = {"torchvision": dict, "fast_adversarial": fast_adv_ckpt, "robustness": robustness_ckpt}


def published_name(name: str) -> str:
    """The file name the entry is published under (its URL's last part; the Drive files by their listed names)."""
    e = get_pretrained(name)
    if e.format == "fast_adversarial":
        return f"imagenet_model_weights_{e.threat.split()[-1].split('/')[0]}px.pth.tar"
    return e.urls[0].rsplit("/", 1)[-1]


def write_published(name: str, folder: Path, seed: int) -> Path:
    """A random-init (seeded) net of `name`'s arch with the 1000-way head, saved in its published layout."""
    from raydw.models.build import build_net
    from raydw.models.catalog import sha256_prefix
    from raydw.models.convert import sha256_file

    e = get_pretrained(name)
    torch.manual_seed(seed)
    sd = build_net(e.arch, 1000).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / published_name(name)
    torch.save(LAYOUTS[e.format](sd), path)
    if sha256_prefix(path.name):  # torch.hub's naming: the prefix is of the file's own hash
        prefix = sha256_prefix(path.name)
        path = path.rename(path.with_name(path.name.replace(prefix, sha256_file(path)[:8])))
    return path


def write_weights(names: list[str], cache: Path, published: Path, seed: int = 0, keep_published: bool = False,
                  log=print) -> dict[str, Path]:
    """Each registry entry `name` published (random init) in `published`, then fetched into the model cache
    `cache` from its file:// URL as a user without a network does (`raydw fetch NAME --url file://...`, with
    --trust where the entry needs it): hash prefix checked, converted, recorded. Returns name -> cached file."""
    from raydw.models.fetch import fetch

    out = {}
    for i, name in enumerate(dict.fromkeys(names)):
        src = write_published(name, published, seed + i)
        out[name] = fetch(name, cache=cache, url=src.as_uri(), trust=PRETRAINED[name].needs_trust, force=True,
                          log=lambda m: log("\n".join(f"  {line}" for line in m.splitlines())))
        if not keep_published:
            src.unlink()  # the converted copy is what a sweep reads; the published one only doubles the disk
    return out
