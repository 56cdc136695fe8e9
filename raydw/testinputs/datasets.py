"""CIFAR-10, CIFAR-100 and SVHN files in their real on-disk formats (the files raydw.data.sources reads), with
random pixels: inputs for tests and for trying a sweep's code paths without the real downloads.

The training files hold the real number of images, because the paper's split takes all of them (pool + validation,
checked by `sources.read`); the test files may be smaller (their size is not checked), which keeps evaluation short.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from raydw.data.catalog import get as get_info
from raydw.data.prepare import FILES

CIFAR_LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
TRAIN_IMAGES = {"cifar10": 50000, "cifar100": 50000, "svhn": 73257}  # the real training sets: the split needs them all


def cifar_batch(n: int, seed: int, label_key: str, classes: int, bytes_keys=False) -> tuple[dict, np.ndarray]:
    """One CIFAR pickle's dict as the real files hold it (rows of R, G, B planes; CIFAR-100 adds coarse labels)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, classes, n).tolist()
    d = {"batch_label": f"batch {seed}", "data": data, label_key: labels, "filenames": [f"{i}.png" for i in range(n)]}
    if label_key == "fine_labels":
        d["coarse_labels"] = [y // 5 for y in labels]
    return ({k.encode(): v for k, v in d.items()} if bytes_keys else d), data


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # a Python-2-readable protocol with str keys, like the real files


def write_cifar(root: Path, name: str, test_images: int, train_images: int | None = None, seed: int = 0) -> None:
    """`name`'s members under `root` (cifar-10-batches-py/ or cifar-100-python/), the training images split over
    its training members as the real archive splits them (CIFAR-10: 5 batches of 10,000)."""
    key, classes = CIFAR_LABEL_KEY[name], get_info(name).num_classes
    train = TRAIN_IMAGES[name] if train_images is None else train_images
    *train_members, test_member = FILES[name]
    per = -(-train // len(train_members))
    for i, rel in enumerate(train_members):
        write_pickle(root / rel, cifar_batch(min(per, train - i * per), seed + i, key, classes)[0])
    write_pickle(root / test_member, cifar_batch(test_images, seed + len(train_members), key, classes)[0])


def write_svhn(root: Path, test_images: int, train_images: int | None = None, seed: int = 0) -> None:
    """train_32x32.mat and test_32x32.mat as MATLAB 5 files: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 = digit 0)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for rel, n in zip(FILES["svhn"], (TRAIN_IMAGES["svhn"] if train_images is None else train_images, test_images)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        savemat(root / rel, {"X": x, "y": y})


def write_dataset(root: Path, name: str, test_images: int, train_images: int | None = None, seed: int = 0) -> None:
    if name == "svhn":
        write_svhn(root, test_images, train_images, seed)
    elif name in CIFAR_LABEL_KEY:
        write_cifar(root, name, test_images, train_images, seed)
    else:
        raise KeyError(f"no test-input writer for dataset {name!r}; writers exist for {sorted([*CIFAR_LABEL_KEY, 'svhn'])}")
