"""Issue 28: untrusted files and unreachable stores. No code runs from a data file, a sweep's Train workers listen on
loopback only, no output lands inside a store, keys from users are ids, impossible values are left out by name, remote
failures are one sentence within a time bound, and every message is a sentence. One test (at least) per cause; the
Ray-starting ones are marked `ray`."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydw import results
from raydw.store import Store, StoreError


def _row(cid: str, status: str = "done", sa: float = 0.5, **kw) -> dict:
    return {"cell_id": cid, "sweep": "t", "status": status, "sa": sa, "ra": 0.1, "dataset": "digits", **kw}


def _cli(*args, cwd=None, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raydw.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


class _Payload:
    """A pickle that runs a command when loaded: what an attacker puts in a data file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- cause 1: code in a data file never runs ---------------------------------------------------------------------------
def _cifar_root(tmp_path) -> Path:
    from raydw.testinputs.datasets import write_cifar

    root = tmp_path / "data"
    write_cifar(root, "cifar10", test_images=20, train_images=50)
    return root


def test_a_cifar_file_carrying_a_pickle_payload_is_refused_by_name_and_never_runs(tmp_path):
    from raydw.data import sources
    from raydw.safepickle import UnsafePickleError

    root = _cifar_root(tmp_path)
    sources.read_files("cifar10", root)  # the real format (numpy arrays, lists, str keys) reads as before
    marker = tmp_path / "PWNED"
    bad = root / "cifar-10-batches-py" / "data_batch_1"
    with open(bad, "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"data_batch_1: refused: the pickle names posix\.system"):
        sources.read_files("cifar10", root)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("bytes_keys", [False, True])
def test_the_safe_unpickler_reads_every_form_a_cifar_file_takes(tmp_path, protocol, bytes_keys):
    from raydw import safepickle
    from raydw.testinputs.datasets import cifar_batch

    d, data = cifar_batch(7, 0, "fine_labels", 100, bytes_keys=bytes_keys)
    got = safepickle.loads(pickle.dumps(d, protocol=protocol))
    key = b"data" if bytes_keys else "data"
    assert np.array_equal(got[key], data) and got[key].dtype == np.uint8


@pytest.mark.parametrize("obj", [eval, getattr, shutil.rmtree, Path, np.load])
def test_the_safe_unpickler_refuses_any_other_global(obj):
    from raydw import safepickle

    with pytest.raises(safepickle.UnsafePickleError, match="refused"):
        safepickle.loads(pickle.dumps({"x": obj}, protocol=2), "f")


def test_a_damaged_pickle_is_a_value_error_naming_the_file(tmp_path):
    from raydw.data import sources

    root = _cifar_root(tmp_path)
    p = root / "cifar-10-batches-py" / "test_batch"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="test_batch: not a readable pickle"):
        sources.read_files("cifar10", root)


# -- cause 3: no output inside a store --------------------------------------------------------------------------------
def test_an_output_inside_the_store_is_refused_and_the_store_is_untouched(tmp_path):
    s = Store(str(tmp_path / "S"))
    s.write_row("trials", _row("c1"))
    part = tmp_path / "S" / "trials" / "c1.parquet"
    before = part.read_bytes()
    for args in (["results", s.root, "--columns", "cell_id,sa", "--out", part],
                 ["results", s.root, "--out", tmp_path / "S" / "x.csv"],
                 ["export-mask", s.root, "m1", tmp_path / "S" / "masks" / "m.parquet"],
                 ["report", s.root, "--out", tmp_path / "S" / "trials"],
                 ["convert", tmp_path / "in.pt", tmp_path / "S" / "trials" / "c2.parquet"]):
        r = _cli(*args)
        assert r.returncode == 2 and "inside the results store" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert part.read_bytes() == before and len(results.load(s.root)) == 1
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "S" / "trials")  # resolved paths: a link into the store is inside it
    r = _cli("results", s.root, "--out", link / "c1.parquet")
    assert r.returncode == 2 and "inside the results store" in r.stderr
    r = _cli("results", s.root, "--out", tmp_path / "out.csv")  # outside: as before
    assert r.returncode == 0 and (tmp_path / "out.csv").exists()


def test_the_report_folder_of_a_store_stays_allowed(tmp_path):
    from raydw.outputs import output_dir

    s = Store(str(tmp_path / "S"))
    s.write_row("trials", _row("c1"))
    assert output_dir(tmp_path / "S" / "report", stores=(s.root,)).is_dir()


# -- cause 6: ids from users are ids ----------------------------------------------------------------------------------
def test_a_mask_id_that_is_a_path_is_refused_before_any_file_is_read(tmp_path):
    from raydw.store import StoreKeyError

    s = Store(str(tmp_path / "S"))
    s.write_row("trials", _row("c1"))
    outside = tmp_path / "x" / "outside.parquet"
    outside.parent.mkdir()
    pq.write_table(pa.table({"mask_id": ["m"], "bits": [b"1"]}), outside)
    r = _cli("export-mask", s.root, "../../x/outside", tmp_path / "o.pth.tar")
    assert r.returncode == 2 and "is not a masks id" in r.stderr and "Traceback" not in r.stderr, r.stderr
    for key in ("../x", "/etc/passwd", "a/b", ".hidden", "", None, 5):
        with pytest.raises(StoreKeyError):
            s.get("masks", key)
    with pytest.raises(StoreKeyError):
        s.read_table("trials", names=["../trials/c1"])
    with pytest.raises(StoreKeyError):
        s.write_row("trials", _row("../c9"))
    assert s.get("trials", "c1") is not None and s.get("epochs", "c1.e0001") is None
