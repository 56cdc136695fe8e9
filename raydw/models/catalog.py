"""Names of architectures and pre-trained weights (`arch.tag`, timm-style), torch-free.

Each pre-trained entry records where the file comes from, its format, the normalization the model was
trained with, its threat model and recipe, so a sweep can name it and a reader can cite it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    urls: tuple[str, ...]
    sha256: str | None  # of the published file, where known
    mean: tuple[float, ...] = IMAGENET_MEAN  # the normalization the model was trained with
    std: tuple[float, ...] = IMAGENET_STD
    threat: str = "none"  # e.g. linf 4/255
    recipe: str = ""
    citation: str = ""
    top1: float | None = None  # clean ImageNet top-1 as published, %
    notes: str = ""
    extra: dict = field(default_factory=dict)


_HF = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main"
_R = "Salman et al. 2020, Do Adversarially Robust ImageNet Models Transfer Better? (MadryLab robustness library)"
_W = "Wong, Rice & Kolter 2020, Fast is better than free (locuslab/fast_adversarial)"

PRETRAINED: dict[str, PretrainedEntry] = {
    e.name: e
    for e in [
        PretrainedEntry("resnet50.tv_in1k", "resnet50", "standard", "torchvision",
                        ("https://download.pytorch.org/models/resnet50-19c8e357.pth",
                         "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
                        None, recipe="torchvision IMAGENET1K_V1 (the paper's ST model, main_std.py pretrained=True)",
                        citation="He et al. 2016; torchvision", top1=76.13,
                        notes="file name carries the first 8 hex of its sha256; the full hash is checked against that prefix"),
        PretrainedEntry("resnet50.fast_linf2_in1k", "resnet50", "fast_adversarial", "fast_adversarial",
                        ("https://github.com/locuslab/fast_adversarial (ImageNet/README: Google Drive, eps 2/255)",),
                        None, threat="linf 2/255", recipe="FGSM with random init, step 2.5/255, 15 epochs",
                        citation=_W, notes="the paper's FAT eps is unverified: 2/255 or 4/255"),
        PretrainedEntry("resnet50.fast_linf4_in1k", "resnet50", "fast_adversarial", "fast_adversarial",
                        ("https://github.com/locuslab/fast_adversarial (ImageNet/README: Google Drive, eps 4/255)",),
                        None, threat="linf 4/255", recipe="FGSM with random init, step 5/255, 15 epochs", citation=_W),
    ]
    + [
        PretrainedEntry(f"resnet50.pgd_linf{e}_in1k", "resnet50", "pgd_adversarial", "robustness",
                        (f"{_HF}/resnet50_linf_eps{e}.0.ckpt",), None, threat=f"linf {e}/255",
                        recipe="PGD adversarial training on ImageNet", citation=_R, top1=t)
        for e, t in [("0.5", 73.73), ("1", 72.05), ("2", 69.10), ("4", 63.86), ("8", 54.53)]
    ]
}


def get_pretrained(name: str) -> PretrainedEntry:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise KeyError(f"unknown pre-trained entry {name!r}; known: {sorted(PRETRAINED)} (or give a local path and arch)") from None
