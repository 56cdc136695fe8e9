"""An ILSVRC-2012-shaped ImageFolder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, 1000 class folders each) of small
random JPEGs: the IMP source task raydw.data.imagefolder streams, for tests and for trying the paper's IMP path.

The wnids are n00000000 ... n00000999 (the real ones are other numbers of the same form); labels are their sorted
index either way, which is all the reader uses. JPEG sizes vary, so the crops and resizes see non-square images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from raydw.data.imagefolder import CLASSES

WNIDS = [f"n{i:08d}" for i in range(CLASSES)]


def _per_class(n: int | dict[int, int], classes: int) -> dict[int, int]:
    return n if isinstance(n, dict) else {i: n for i in range(classes)}


def write_imagefolder(root: Path, train: int | dict[int, int], val: int | dict[int, int],
                      sizes: tuple[int, int] = (32, 64), classes: int = CLASSES, seed: int = 0) -> int:
    """Write `train` / `val` JPEGs per class (a count, or {class index: count}; other classes get an empty folder),
    each of a random height and width in [sizes[0], sizes[1]), with a class-coded grey level plus noise. Returns the
    number of images written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = 0
    for part, per in (("train", _per_class(train, classes)), ("val", _per_class(val, classes))):
        for i, wnid in enumerate(WNIDS[:classes]):
            d = root / part / wnid
            d.mkdir(parents=True)
            for j in range(per.get(i, 0)):
                h, w = int(rng.integers(*sizes)), int(rng.integers(*sizes))
                pixels = np.full((h, w, 3), (i * 37) % 256, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{wnid}_{j}.JPEG", format="JPEG")
                written += 1
    return written
