"""Names of architectures and pre-trained weights (`arch.tag`, timm-style), torch-free.

Each pre-trained entry records where the file comes from, its format, the normalization the model was
trained with, its threat model and recipe, so a sweep can name it and a reader can cite it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ARCHS = {
    "resnet_tiny": "a 3-stage ResNet (widths 16/32/64, one BasicBlock each, ~76k parameters) for CPU demos",
    "resnet18": "torchvision ResNet-18",
    "resnet50": "torchvision ResNet-50 (v1.5), the paper's backbone",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedEntry:
    name: str  # arch.tag
    arch: str
    kind: str  # standard | fast_adversarial | pgd_adversarial
    format: str  # torchvision | fast_adversarial | robustness (see raydw.models.convert)
    urls: tuple[str, ...]  # tried in order by `raydw fetch`
    sha256: str | None  # of the published file; None where no one here could hash the real file
    mean: tuple[float, ...] = IMAGENET_MEAN  # the normalization the model was trained with
    std: tuple[float, ...] = IMAGENET_STD
    threat: str = "none"  # e.g. linf 4/255
    recipe: str = ""
    citation: str = ""
    top1: float | None = None  # clean ImageNet top-1 as published, %
    notes: str = ""
    direct: bool = True  # urls are plain HTTP downloads (False: a web page / Drive folder to fetch by hand)
    needs_trust: bool = False  # the published file needs full unpickling (dill / pickled objects)
    extra: dict = field(default_factory=dict)


_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


def sha256_prefix(url: str) -> str | None:
    """The sha256 prefix a file name carries (torch.hub's convention, e.g. resnet50-0676ba61.pth), else None."""
    m = _HASH_IN_NAME.search(url.split("?")[0].rsplit("/", 1)[-1])
    return m.group(1) if m else None


_HF = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main"
_R = "Salman et al. 2020, Do Adversarially Robust ImageNet Models Transfer Better? (MadryLab robustness library)"
_W = "Wong, Rice & Kolter 2020, Fast is better than free (locuslab/fast_adversarial)"
# The Drive folder linked for the fast_adversarial ImageNet models (files imagenet_model_weights_{2,4}px.pth.tar).
_WDRIVE = "https://drive.google.com/drive/folders/1NfSjLzc-MtkYHLumcKYs6OqC2X_zWy3g"

PRETRAINED: dict[str, PretrainedEntry] = {
    e.name: e
    for e in [
        # 0676ba61 is the current torchvision URL; 19c8e357 is the same weights in the legacy (pre-zip) format.
        PretrainedEntry("resnet50.tv_in1k", "resnet50", "standard", "torchvision",
                        ("https://download.pytorch.org/models/resnet50-0676ba61.pth",
                         "https://download.pytorch.org/models/resnet50-19c8e357.pth"),
                        None, recipe="torchvision IMAGENET1K_V1 (the paper's ST model, main_std.py pretrained=True)",
                        citation="He et al. 2016; torchvision", top1=76.13,
                        notes="full sha256 not verified here; each file name carries the first 8 hex of its sha256, "
                              "which fetch checks (torch.hub's check_hash rule)"),
        PretrainedEntry("resnet50.fast_linf2_in1k", "resnet50", "fast_adversarial", "fast_adversarial",
                        (_WDRIVE,), None, threat="linf 2/255",
                        recipe="FGSM with random init, step 2.5/255, 15 epochs in 3 resolution phases "
                               "(configs_fast_phase{1,2,3}_eps2.yml)",
                        citation=_W, direct=False,
                        notes="file imagenet_model_weights_2px.pth.tar in the Drive folder; the paper's FAT eps is "
                              "unverified: 2/255 or 4/255"),
        PretrainedEntry("resnet50.fast_linf4_in1k", "resnet50", "fast_adversarial", "fast_adversarial",
                        (_WDRIVE,), None, threat="linf 4/255",
                        recipe="FGSM with random init, step 5/255, 15 epochs in 3 resolution phases "
                               "(configs_fast_phase{1,2,3}_eps4.yml)",
                        citation=_W, direct=False, notes="file imagenet_model_weights_4px.pth.tar in the Drive folder"),
    ]
    + [
        # The robust-models-transfer blob links are dead (MadryLab/robustness#125); Hugging Face hosts the same files.
        PretrainedEntry(f"resnet50.pgd_linf{e}_in1k", "resnet50", "pgd_adversarial", "robustness",
                        (f"{_HF}/resnet50_linf_eps{float(e):.1f}.ckpt",), None, threat=f"linf {e}/255",
                        recipe="PGD adversarial training on ImageNet (robustness library)", citation=_R, top1=t,
                        needs_trust=True,
                        notes="saved with dill: fetch/convert need --trust; sha256 not verified here")
        for e, t in [("0.5", 73.73), ("1", 72.05), ("2", 69.10), ("4", 63.86), ("8", 54.53)]
    ]
}


MODEL_CACHE = Path.home() / ".cache" / "raydw" / "models"  # where `raydw fetch` puts converted files by default
# Another model cache for one shell, e.g. the folder `python -m raydw.testinputs` writes random-init weights into: a
# sweep's registry names (`weights: resnet50.tv_in1k`) are then read from there, and `raydw fetch` writes there.
MODEL_CACHE_ENV = "RAYDW_MODEL_CACHE"


def model_cache() -> Path:
    """The model cache folder: $RAYDW_MODEL_CACHE where set, else ~/.cache/raydw/models (read at each call)."""
    return Path(os.environ.get(MODEL_CACHE_ENV) or MODEL_CACHE).expanduser()


def cache_path(name: str, cache: str | Path | None = None) -> Path:
    """Where `raydw fetch` caches a registry entry's converted weights (torch-free, for --dry-run)."""
    return (Path(cache).expanduser() if cache else model_cache()) / f"{name}.pt"


def fetch_command(name: str) -> str:
    """The command (or manual step) that puts a registry entry into the model cache."""
    e = get_pretrained(name)
    if not e.direct:
        return (f"download it by hand from {e.urls[0]}, then `raydw convert FILE {cache_path(name)}"
                f"{' --trust' if e.needs_trust else ''}` (or `raydw fetch {name} --url URL`)")
    return f"raydw fetch {name}{' --trust' if e.needs_trust else ''}"


def get_pretrained(name: str) -> PretrainedEntry:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise KeyError(f"unknown pre-trained entry {name!r}; known: {sorted(PRETRAINED)} (or give a local path and arch)") from None


def local_weights_path(weights: str) -> Path:
    """Where a sweep's `weights` is read from: a registry entry's cached file (raydw fetch), or the path itself."""
    return cache_path(weights) if weights in PRETRAINED else Path(weights).expanduser()
