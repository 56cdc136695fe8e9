"""Issue 17: files grow with cells, not epochs; compaction; a row read exactly once while files move; nothing lost to a
kill; older stores load and migrate; exactly one driver on an S3 store (moto's server, loopback only)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pyarrow as pa
import pytest

from raydw.store import compact as compaction
from raydw.findings import results
from raydw.store import SCHEMAS, Store, StoreLocked, parquet_bytes



def done_cells(store) -> set[str]:
    """Cells whose trials row says done (what a sweep has left is raydw.planning.plan.Plan's; this is the row count)."""
    t = store.read_table("trials", columns=["cell_id", "status"])
    return {c for c, s in zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()) if s == "done"}

def _epochs(cell: str, n: int, v: float = 0.0) -> list[dict]:
    return [{"cell_id": cell, "epoch": e, "val_sa": v + e / 100, "lr": 0.1} for e in range(n)]


def _fill(s: Store, cells: range, epochs: int = 5) -> None:
    for i in cells:
        c = f"c{i:04d}"
        s.write_rows("epochs", c, _epochs(c, epochs, i))
        s.write_row("trials", {"cell_id": c, "status": "done", "sa": i / 1000})


def _legacy(s: Store, cell: str, epochs: int, v: float = 0.0) -> None:
    """A cell as the one-file-per-epoch layout wrote it: epochs/<cell>.e<epoch>.parquet, one row each."""
    for r in _epochs(cell, epochs, v):
        s.write_bytes(("epochs", f"{cell}.e{r['epoch']:04d}.parquet"),
                      parquet_bytes(pa.Table.from_pylist([r], schema=SCHEMAS["epochs"])))


def _rows(s: Store) -> tuple[list, list]:
    ep = s.read_table("epochs", columns=["cell_id", "epoch", "val_sa"]).to_pylist()
    tr = s.read_table("trials", columns=["cell_id", "status", "sa"]).to_pylist()
    return ep, tr


def test_a_cells_epochs_share_one_file_and_a_rereported_epoch_replaces_its_row(tmp_path):
    s = Store(str(tmp_path))
    for e in range(3):  # as the run layer writes them: one row per epoch, named <cell>.e<epoch>
        s.write_row("epochs", {"cell_id": "a", "epoch": e, "val_sa": e / 10}, name=f"a.e{e:04d}")
    s.write_row("epochs", {"cell_id": "a", "epoch": 1, "val_sa": 0.99}, name="a.e0001")  # a resumed run re-reports it
    assert os.listdir(tmp_path / "epochs") == ["a.parquet"]
    assert s.read_table("epochs", columns=["epoch", "val_sa"]).to_pylist() == [
        {"epoch": 0, "val_sa": 0.0}, {"epoch": 1, "val_sa": 0.99}, {"epoch": 2, "val_sa": 0.2}]
    assert s.get("epochs", "a.e0001")["val_sa"] == 0.99 and s.get("epochs", "a.e0007") is None
    with pytest.raises(Exception, match="cell_id 'a'"):
        s.write_row("epochs", {"cell_id": "b", "epoch": 0}, name="a.e0000")


def test_the_run_layers_calls_read_the_same_before_and_after_compaction(tmp_path):
    """worker.py: get(f"{cell}.e{k:04d}"); tuning.py: names() by prefix, read_table(names), rows under another cell."""
    s = Store(str(tmp_path))
    _fill(s, range(3))
    s.write_rows("epochs", "running", _epochs("running", 2))  # no trials row: not finished, stays in its own file

    def calls():
        names = [n for n in s.names("epochs") if n.startswith("c0001.e")]
        rows = s.read_table("epochs", names).to_pylist()
        return (names, rows, [s.get("epochs", f"c0002.e{k:04d}")["val_sa"] for k in range(5)], done_cells(s),
                s.names("trials"), s.read_table("trials", ["c0002", "nope", "c0000"], columns=["sa"]).to_pylist(),
                s.get("trials", "c0001")["sa"], s.epochs("running").num_rows)

    before = calls()
    compaction.compact(s)
    assert sorted(os.listdir(tmp_path / "epochs"))[1:] == ["running.parquet"] and len(os.listdir(tmp_path / "trials")) == 1
    assert calls() == before
    names, rows = before[0], before[1]
    assert len(names) == 5 and [r["epoch"] for r in rows] == list(range(5))
    for name, row in zip(names, rows):  # tuning.py's copy of a trial's epochs under the cell's id
        s.write_row("epochs", {**row, "cell_id": "copy"}, name=f"copy{name[len('c0001'):]}")
    assert s.epochs("copy").to_pylist() == [{**r, "cell_id": "copy"} for r in rows]
    s.write_row("trials", {"cell_id": "c0001", "status": "failed"})  # a retry's row replaces the compacted one
    assert s.get("trials", "c0001")["status"] == "failed" and "c0001" not in done_cells(s)
    assert results.load(str(tmp_path)).set_index("cell_id").status["c0001"] == "failed"


def _compact_rounds(root: str, rounds: int, per_round: int, written, compacting) -> None:
    s = Store(root)
    for r in range(1, rounds + 1):
        _fill(s, range(r * per_round, (r + 1) * per_round), epochs=20)
        written.value = (r + 1) * per_round
        compacting.value = 1
        compaction.compact(s)
        compacting.value = 0


def test_a_reader_during_compactions_sees_every_row_exactly_once(tmp_path):
    """Compactions (and the writes between them) in another process; every read is a whole prefix of the cells
    written, each cell's epochs complete, no row twice. Reads that overlapped a compaction are counted."""
    root = str(tmp_path)
    s = Store(root)
    per_round = 40
    _fill(s, range(per_round), epochs=20)
    _legacy(s, "c0000", 20)  # an older store's files of the same rows: migrated by the first compaction
    ctx = mp.get_context("fork")
    written, compacting = ctx.Value("i", per_round), ctx.Value("i", 0)
    p = ctx.Process(target=_compact_rounds, args=(root, 6, per_round, written, compacting))
    p.start()
    reads = overlapped = 0
    while p.is_alive() or reads == 0:
        lo, during = written.value, compacting.value
        r = Store(root)
        ep, tr = _rows(r)
        hi, during = written.value, during or compacting.value
        cells = sorted({e["cell_id"] for e in ep})
        assert len(ep) == len({(e["cell_id"], e["epoch"]) for e in ep}) == 20 * len(cells), "a row twice or a gap"
        # the writer stores cells one after another and says so per round: a read holds a prefix of them
        assert lo <= len(cells) <= hi + per_round and cells == [f"c{i:04d}" for i in range(len(cells))]
        assert sorted(t["cell_id"] for t in tr) == [f"c{i:04d}" for i in range(len(tr))] and lo <= len(tr) <= hi + per_round
        assert not r.problems, r.problems
        reads, overlapped = reads + 1, overlapped + during
    p.join()
    assert p.exitcode == 0 and overlapped >= 3, (reads, overlapped)
    assert len(os.listdir(tmp_path / "epochs")) == 1 and len(_rows(s)[0]) == 20 * 7 * per_round


def _killed_compaction(root: str, where: str, n: int, sweep: bool = False) -> None:
    """compact(), SIGKILLed at the n-th delete of a merged file, or half-way through writing its n-th part.
    sweep: the compaction at a sweep's end instead (under the sweep's lock, as run_sweep calls it)."""
    calls = {"n": 0}
    if where == "delete":
        real = compaction._delete

        def delete(store, path):
            calls["n"] += 1
            if calls["n"] > n:
                os.kill(os.getpid(), signal.SIGKILL)
            real(store, path)
        compaction._delete = delete
    else:
        real_write = Store.write_bytes

        def write_bytes(self, parts, data):
            if parts[-1].startswith("part-"):
                calls["n"] += 1
                if calls["n"] > n:  # the temporary half written, then killed before its rename
                    tmp = self.path(parts[0], f".{'f' * 32}.tmp")
                    with open(tmp, "wb") as f:
                        f.write(data[: len(data) // 2])
                    os.utime(tmp, (time.time() - 10, time.time() - 10))
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_write(self, parts, data)
        Store.write_bytes = write_bytes
    if sweep:
        s = Store(root)
        started = time.time() - 5
        with s.lock("raydw sweep tiny"):
            compaction.after_sweep(s, started, print)
    else:
        compaction.compact(Store(root))


@pytest.mark.parametrize("where,n", [("write", 0), ("write", 1), ("delete", 0), ("delete", 3), ("delete", 9)])
def test_a_compaction_killed_at_any_point_loses_nothing_and_the_next_one_finishes(tmp_path, where, n):
    root = str(tmp_path)
    s = Store(root)
    _fill(s, range(6))
    compaction.compact(s)  # a first part, so the next compaction merges a part too
    _fill(s, range(6, 12))
    s.write_row("trials", {"cell_id": "c0002", "status": "failed", "sa": 0.5})  # newer than its compacted row
    _legacy(s, "c0013", 5, 13.0)
    s.write_row("trials", {"cell_id": "c0013", "status": "done", "sa": 0.013})
    expected = _rows(s)
    p = mp.get_context("fork").Process(target=_killed_compaction, args=(root, where, n))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    after = Store(root)
    assert _rows(after) == expected and not after.problems  # every row once, the newer trials row of c0002 kept
    assert done_cells(after) == {f"c{i:04d}" for i in (*range(12), 13)} - {"c0002"}
    compaction.compact(after)  # takes over the killed one's lock (its pid is gone), merges what is left
    assert _rows(Store(root)) == expected
    for t in ("trials", "epochs"):
        assert [n[:5] for n in os.listdir(tmp_path / t)] == ["part-"], os.listdir(tmp_path / t)
    assert not os.path.exists(tmp_path / "locks" / "driver.json")


def _swept_store(root: str, spec_text: str):
    """A store as a sweep of the tiny spec leaves it before its end: every cell done, each in its own files."""
    import yaml

    from raydw.planning.plan import plan
    from raydw.spec import parse_spec
    from raydw.store import TRIALS

    spec = parse_spec({**yaml.safe_load(spec_text), "storage": root})
    s = Store(root)
    for i, c in enumerate(plan(spec).cells):
        s.write_rows("epochs", c.cell_id, _epochs(c.cell_id, 2, i))
        row = {k: v for k, v in c.row_fields().items() if k in TRIALS.names}
        s.write_row("trials", {**row, "status": "done", "error": None, "sa": 0.5 + i / 100, "ra": 0.2, "epochs": 2})
    return spec, s


@pytest.mark.parametrize("where,n", [("write", 1), ("delete", 2)])  # in its epochs part; between its deletes
def test_a_compaction_killed_at_a_sweeps_end_leaves_a_store_the_next_sweep_and_readers_handle(tmp_path, tiny_spec_text,
                                                                                            where, n):
    from raydw.cli import main
    from raydw.run.sweep import run_sweep

    root = str(tmp_path / "store")
    spec, s = _swept_store(root, tiny_spec_text)
    expected = _rows(s)
    p = mp.get_context("fork").Process(target=_killed_compaction, args=(root, where, n, True))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    assert _rows(Store(root)) == expected  # readers: every row once
    lines: list[str] = []
    again = run_sweep(spec, out=lines.append)  # takes over the killed driver's lock; nothing to run, so no Ray
    assert again.ran == 0 and again.done == len(expected[1]) == 2, lines
    assert lines[0].startswith("sweep tiny: 2 cells, 2 already done, 0 to run"), lines[0]
    assert not list(tmp_path.rglob(".*.tmp")) and not os.path.exists(tmp_path / "store" / "locks" / "driver.json")
    assert _rows(Store(root)) == expected
    assert main(["compact", root]) == 0  # the rerun already finished what the sweep's end did not (issue 28)
    for t in ("trials", "epochs"):
        assert [f[:5] for f in os.listdir(tmp_path / "store" / t)] == ["part-"], os.listdir(tmp_path / "store" / t)
    assert _rows(Store(root)) == expected


def test_a_compaction_failing_at_a_sweeps_end_is_said_and_the_sweep_does_not_fail(tmp_path, tiny_spec_text, monkeypatch):
    import errno

    root = str(tmp_path / "store")
    _, s = _swept_store(root, tiny_spec_text)
    expected = _rows(s)
    real = Store.write_bytes

    def full(self, parts, data):  # the disk fills up as the compaction writes its part
        if parts[-1].startswith("part-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, parts, data)
    monkeypatch.setattr(Store, "write_bytes", full)
    said: list[str] = []
    with s.lock("raydw sweep tiny"):
        assert compaction.after_sweep(s, time.time(), said.append) is None
    assert said == [f"compaction: not done (OSError: [Errno 28] No space left on device); every row is stored and reads "
                    f"as it is: run `raydw compact {s.uri}`"]
    assert _rows(Store(root)) == expected and len(os.listdir(tmp_path / "store" / "trials")) == 2
    monkeypatch.undo()
    with s.lock("raydw sweep tiny"):
        done = compaction.after_sweep(s, time.time(), said.append)
    assert done["trials"]["files_after"] == done["epochs"]["files_after"] == 1
    assert said[1].startswith("compacted finished cells: trials 2 files -> 1, epochs 2 files -> 1 (")


def test_a_store_of_the_one_file_per_epoch_layout_loads_resumes_and_raydw_compact_migrates_it(tmp_path, capsys):
    from raydw.cli import main

    s = Store(str(tmp_path))
    for i in range(3):
        _legacy(s, f"old{i}", 4, i)
        s.write_row("trials", {"cell_id": f"old{i}", "status": "done" if i else "failed"})
    s.write_row("epochs", {"cell_id": "old0", "epoch": 4, "val_sa": 0.5}, name="old0.e0004")  # the retry resumes it
    s.write_row("epochs", {"cell_id": "old0", "epoch": 2, "val_sa": 0.7}, name="old0.e0002")  # and re-reports one
    before = results.load(str(tmp_path), "epochs")
    assert len(before) == 13 and before.set_index(["cell_id", "epoch"]).val_sa[("old0", 2)] == 0.7
    assert s.get("epochs", "old2.e0003")["val_sa"] == 2.03 and s.get("epochs", "old0.e0002")["val_sa"] == 0.7
    assert done_cells(s) == {"old1", "old2"}
    assert main(["compact", str(tmp_path)]) == 0
    assert "epochs: 13 files -> 1" in capsys.readouterr().out
    assert [n[:5] for n in os.listdir(tmp_path / "epochs")] == ["part-"]
    assert results.load(str(tmp_path), "epochs").equals(before) and done_cells(s) == {"old1", "old2"}
    assert s.get("epochs", "old0.e0002")["val_sa"] == 0.7


def test_raydw_compact_refuses_a_held_store_and_a_folder_that_is_no_store(tmp_path, capsys):
    from raydw.cli import main

    s = Store(str(tmp_path / "s"))
    _fill(s, range(2))
    with s.lock("raydw sweep x"):
        assert main(["compact", str(tmp_path / "s")]) == 3
    assert "in use by another raydw driver" in capsys.readouterr().err
    assert len(os.listdir(tmp_path / "s" / "trials")) == 2
    assert main(["compact", str(tmp_path / "nothing")]) == 2
    assert "holds no trials or epochs table" in capsys.readouterr().err


# -- object stores: moto's S3 server on 127.0.0.1 --------------------------------------------------------------------
# The tests of one moto server: on one pytest-xdist worker (`--dist loadgroup`), so it starts once (~0.8 s).
on_the_s3_worker = pytest.mark.xdist_group("s3")


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("boto3")
    server = pytest.importorskip("moto.server")
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    srv = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="raydw-test")
    yield lambda name: f"s3://raydw-test/{name}?endpoint_override={host}:{port}&scheme=http"
    srv.stop()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@on_the_s3_worker
def test_two_drivers_started_together_on_an_s3_store_exactly_one_runs(s3):
    from lock_race import rounds  # racers that hold the lock a moment, or are refused
    from test_hardening_store import exclusive

    # Forked from this process, where S3 is set up already: racers forked by tests/lock_race.py's own process each
    # set it up again (5.0 vs 1.3 CPU-s of children, measured).
    for r, held in enumerate(rounds(4, 4, 0.5, s3("race{r}"))):
        assert exclusive(held)
        assert not Store(s3(f"race{r}")).exists("locks", "driver.json")  # released by the one that took it


@on_the_s3_worker
def test_an_s3_store_writes_compacts_and_reads_each_row_once(s3):
    s = Store(s3("rows"))
    _fill(s, range(4))
    s.write_row("epochs", {"cell_id": "c0001", "epoch": 2, "val_sa": 0.5}, name="c0001.e0002")
    expected = _rows(s)
    with s.lock("test"):
        with pytest.raises(StoreLocked, match="in use by another raydw driver"):
            with Store(s.uri).lock("second"):
                pass
        compaction.compact(s)
    assert _rows(Store(s.uri)) == expected and s.get("epochs", "c0001.e0002")["val_sa"] == 0.5
    assert [i.base_name[:5] for i in s.fs.get_file_info(__import__("pyarrow.fs").fs.FileSelector(s.path("epochs")))] == ["part-"]
