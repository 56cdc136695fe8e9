"""Checks of the names a spec uses against raydw's registries (datasets, architectures, pre-trained entries).

Kept apart from spec.py so the typed schema has no registry imports; torch-free.
"""
from __future__ import annotations

from pathlib import Path

from raydw.bounded import short
from raydw.data import catalog as data_catalog
from raydw.ids import level
from raydw.models import catalog as model_catalog


def check_spec(spec) -> list[str]:
    """YAML-path-prefixed problems; empty when every name resolves."""
    problems: list[str] = []
    STREAMED = data_catalog.STREAMED
    in_memory = sorted(set(data_catalog.DATASETS) - STREAMED)
    for i, ds in enumerate(spec.data.datasets):
        if ds in STREAMED:  # streamed for IMP only: the cells' loop holds its training pool in device memory
            problems.append(f"data.datasets.{i}: {short(ds)} is a source task for tickets.imp.dataset, not a downstream "
                            f"dataset; downstream datasets: {in_memory}")
        elif ds not in data_catalog.DATASETS:
            problems.append(f"data.datasets.{i}: unknown dataset {short(ds)}; known: {in_memory}")
    for i, p in enumerate(spec.pretrainings):
        if p.recipe is not None and p.recipe.dataset in STREAMED:
            problems.append(f"pretrainings.{i}.recipe.dataset: {short(p.recipe.dataset)} cannot be a raydw pretrain recipe's "
                            f"task (use its published weights: raydw models); recipe tasks: {in_memory}")
    for i, p in enumerate(spec.pretrainings):
        where = f"pretrainings.{i}"
        if p.recipe is not None:
            if p.recipe.arch not in model_catalog.ARCHS:
                problems.append(f"{where}.recipe.arch: unknown arch {short(p.recipe.arch)}; known: {sorted(model_catalog.ARCHS)}")
            if p.recipe.dataset not in data_catalog.DATASETS:
                problems.append(f"{where}.recipe.dataset: unknown dataset {short(p.recipe.dataset)}; known: {sorted(data_catalog.DATASETS)}")
        elif p.weights is not None:
            is_path = "/" in p.weights or Path(p.weights).suffix in (".pt", ".pth", ".tar", ".ckpt")
            if not is_path and p.weights not in model_catalog.PRETRAINED:
                problems.append(f"{where}.weights: unknown pre-trained entry {short(p.weights)}; known: {sorted(model_catalog.PRETRAINED)} (or a local checkpoint path)")
        if p.arch is not None and p.arch not in model_catalog.ARCHS:
            problems.append(f"{where}.arch: unknown arch {short(p.arch)}; known: {sorted(model_catalog.ARCHS)}")
    # A model takes the channels of the task it was trained on; a downstream dataset with others cannot be fed to it.
    for i, p in enumerate(spec.pretrainings):
        # A `weights:` entry, registry or local file, is loaded as an ImageNet model (tickets.register_weights
        # builds it with 1000 classes and 3 input channels).
        src = p.recipe.dataset if p.recipe is not None else "imagenet"
        if src not in data_catalog.DATASETS:
            continue  # an unknown recipe dataset: reported above
        chans = data_catalog.get(src).channels
        for j, ds in enumerate(spec.data.datasets):
            if ds in data_catalog.DATASETS and data_catalog.get(ds).channels != chans:
                problems.append(f"data.datasets.{j}: {short(ds)} has {data_catalog.get(ds).channels}-channel images, but "
                                f"pretrainings.{i} ({p.name}) takes {chans}-channel input (it was trained on {src})")
    levels: dict[str, tuple[int, set]] = {}
    for i, t in enumerate(spec.tickets):
        mine = {level(s) for _, s in t.levels() if s > 0}
        if t.method in levels and levels[t.method][1] & mine:
            j = levels[t.method][0]
            problems.append(f"tickets.{i}: a second {short(t.method)} ticket spec at sparsities tickets.{j} also has "
                            f"({sorted(levels[t.method][1] & mine)}): results name a ticket by method and sparsity, so "
                            "verdicts could not tell the two apart; run the variant as a sweep with its own storage")
        levels.setdefault(t.method, (i, set()))[1].update(mine)
    names = {p.name for p in spec.pretrainings}
    for i, t in enumerate(spec.tickets):
        where = f"tickets.{i}"
        if t.imp is not None:
            if t.imp.dataset not in data_catalog.DATASETS:
                problems.append(f"{where}.imp.dataset: unknown dataset {short(t.imp.dataset)}; known: {sorted(data_catalog.DATASETS)}")
            for n in t.imp.per_pretraining:
                if n not in names:
                    problems.append(f"{where}.imp.per_pretraining.{n}: no pretraining named {short(n)}; names: {sorted(names)}")
        if t.method == "import":
            for p in spec.pretrainings:
                if p.name not in t.files:
                    problems.append(f"{where}.files: no mask file for pretraining {short(p.name)} (method import needs one per pretraining)")
            if len(t.levels()) - int(t.include_dense) != 1:
                problems.append(f"{where}: method import takes one level (the file's sparsity) in 'sparsities' or 'rounds'")
    if spec.eval.final_attack != "none":  # an optional package: say how to install it before any GPU time is spent
        from raydw.final_attacks import available

        if (why := available(spec.eval.final_attack)) is not None:
            problems.append(f"eval.final_attack: {why}")
    return problems
