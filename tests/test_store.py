"""The results store: fixed schemas, atomic whole-file writes, one driver at a time, clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raydw import results
from raydw.store import Store, StoreError, StoreLocked



def done_cells(store) -> set[str]:
    """Cells whose trials row says done (what a sweep has left is raydw.plan.Plan's; this is the row count)."""
    t = store.read_table("trials", columns=["cell_id", "status"])
    return {c for c, s in zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()) if s == "done"}

def _row(cid: str, status: str = "done", sa: float = 0.5) -> dict:
    return {"cell_id": cid, "sweep": "t", "status": status, "sa": sa, "ra": 0.1, "dataset": "digits"}


def test_rows_read_back_with_the_fixed_schema(tmp_path):
    s = Store(str(tmp_path))
    s.write_row("trials", _row("a"))
    s.write_row("trials", _row("b", "failed"))
    df = results.load(str(tmp_path))
    assert list(df.cell_id) == ["a", "b"] and "wall_s" in df.columns and df.wall_s.isna().all()
    assert done_cells(s) == {"a"}


def test_rewriting_a_row_replaces_it_instead_of_duplicating(tmp_path):
    s = Store(str(tmp_path))
    s.write_row("trials", _row("a", "failed"))
    s.write_row("trials", _row("a", "done", 0.9))
    df = results.load(str(tmp_path))
    assert len(df) == 1 and df.status[0] == "done" and df.sa[0] == 0.9


def test_a_whole_table_read_skips_temporaries_and_fills_columns_older_rows_lack(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = Store(str(tmp_path))
    s.write_row("trials", _row("new"))
    # A row as an older raydw wrote it (no phase/recipe columns), a write in flight, and a stray non-Parquet file.
    pq.write_table(pa.table({"cell_id": ["old"], "status": ["done"], "sa": [0.7]}), tmp_path / "trials" / "old.parquet")
    (tmp_path / "trials" / ".0123abcd.tmp").write_bytes(b"PAR1 half a file")
    (tmp_path / "trials" / "notes.txt").write_text("not a row")
    t = s.read_table("trials")
    assert t.schema == s.read_table("trials", ["new"]).schema and t.column("cell_id").to_pylist() == ["new", "old"]
    assert t.column("phase").to_pylist() == [None, None] and t.column("sa").to_pylist() == [0.5, 0.7]
    assert s.read_table("trials", columns=["cell_id", "recipe_id"]).to_pylist() == [
        {"cell_id": "new", "recipe_id": None}, {"cell_id": "old", "recipe_id": None}]
    assert list(results.load(str(tmp_path)).cell_id) == ["new", "old"]  # null phase counts as main
    assert s.read_table("epochs").num_rows == 0 and s.read_table("epochs", columns=["epoch"]).column_names == ["epoch"]


def test_writes_leave_no_temporary_files(tmp_path):
    s = Store(str(tmp_path))
    for i in range(5):
        s.write_row("trials", _row(f"c{i}"))
    assert sorted(os.listdir(tmp_path / "trials")) == [f"c{i}.parquet" for i in range(5)]


def test_empty_store_gives_an_empty_frame_with_columns(tmp_path):
    df = results.load(str(tmp_path / "nothing"))
    assert len(df) == 0 and "sa" in df.columns


def test_a_load_of_some_columns_returns_those_columns_in_cell_and_epoch_order(tmp_path):
    s = Store(str(tmp_path))
    for cell, epoch in (("b", 1), ("a", 1), ("b", 0), ("a", 0)):
        s.write_row("epochs", {"cell_id": cell, "epoch": epoch, "val_sa": 10 * (cell == "b") + epoch})
    s.write_row("trials", {**_row("a"), "phase": "tune"})
    assert results.load(str(tmp_path), "epochs", columns=["val_sa"]).val_sa.tolist() == [0, 1, 10, 11]
    assert list(results.load(str(tmp_path), "epochs", columns=["cell_id"]).columns) == ["cell_id"]
    tune = results.load(str(tmp_path), "trials", columns=["cell_id"], phase="tune")
    assert list(tune.columns) == ["cell_id"] and tune.cell_id.tolist() == ["a"]


def test_unknown_table_names_the_valid_ones(tmp_path):
    with pytest.raises(KeyError, match="trials"):
        results.load(str(tmp_path), "trial")


def test_file_uri_and_plain_path_are_the_same_store(tmp_path):
    Store(f"file://{tmp_path}").write_row("trials", _row("a"))
    assert list(results.load(str(tmp_path)).cell_id) == ["a"]


def test_unwritable_store_fails_fast_with_the_uri(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not writable"):
        Store(str(blocker / "store")).check_writable()


def test_second_driver_on_the_same_store_is_refused_naming_the_holder(tmp_path):
    s = Store(str(tmp_path))
    with s.lock("first"):
        with pytest.raises(StoreLocked, match=rf"pid {os.getpid()}.*first"):
            with Store(str(tmp_path)).lock("second"):
                pass
    with s.lock("again"):  # released on exit
        pass


def test_lock_of_a_killed_driver_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "driver.json").write_text(json.dumps(
        {"pid": int(dead.stdout), "host": socket.gethostname(), "what": "killed", "since": "x"}))
    with Store(str(tmp_path)).lock("new") as lk:
        assert json.loads(open(lk.path).read())["pid"] == os.getpid()


def test_probing_writability_leaves_nothing_and_survives_concurrent_probes(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    s = Store(str(tmp_path))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: s.check_writable(), range(32)))
    assert os.listdir(tmp_path) == []


def test_temporaries_of_killed_writes_are_removed_only_if_older_than_the_sweep(tmp_path):
    import time

    s = Store(str(tmp_path))
    s.write_row("trials", _row("a"))
    old = tmp_path / "trials" / f".{'a' * 32}.tmp"  # a writer SIGKILLed before its rename
    old.write_bytes(b"PAR1 half")
    os.utime(old, (time.time() - 60, time.time() - 60))
    fresh = tmp_path / "epochs" / f".{'b' * 32}.tmp"  # a write in flight now
    fresh.parent.mkdir()
    fresh.write_bytes(b"PAR1")
    other = tmp_path / "train" / ".not-ours.tmp"  # not a raydw temporary name: left alone
    other.parent.mkdir()
    other.write_bytes(b"x")
    os.utime(other, (0, 0))
    assert s.remove_temporaries(older_than=time.time() - 30) == [str(old)]
    assert not old.exists() and fresh.exists() and other.exists() and s.names("trials") == ["a"]


def test_a_column_subset_without_the_key_reads_back(tmp_path):
    """The scan adds the key and core columns it checks; asking for neither must not ask pyarrow for one twice."""
    s = Store(str(tmp_path / "s"))
    s.write_row("trials", {"cell_id": "a", "status": "done", "tune_id": "t1"})
    assert s.read_table("trials", columns=["tune_id"]).to_pylist() == [{"tune_id": "t1"}]
