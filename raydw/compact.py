"""Compaction: the rows of finished cells, from their own files, older stores' one-epoch files and earlier parts,
into a few large Parquet files sorted by cell (`part-<gen>-<id>.parquet`), so a whole-table load opens a handful of
files instead of one per cell (or per epoch), and a bucket answers a handful of GETs.

Crash safety, by order: the new parts are written whole first (temporary + rename, or one PUT), then the merged files
are deleted. Killed before the parts are in place: nothing changed (a hidden temporary at most, removed by the next
sweep or compaction). Killed while deleting: some rows are in two files; every read keeps one copy (the cell's own
file before a part, a newer part before an older one: raydw.store.rank), and the next compaction merges them.
A merged file rewritten after it was read (a stray writer) is not deleted: its newer rows win on read.
Runs under the store's driver lock (taken here unless the caller, a sweep, already holds it). A sweep runs it at its
end (after_sweep, still under its lock) when it ran cells; `raydw compact STORE` on demand. Torch-free.
"""
from __future__ import annotations

import os
import time
import uuid

import pyarrow as pa

from raydw.store import COMPACTED, EPOCH_ROW, KEYS, SCHEMAS, Store, StoreError, parquet_bytes, part_gen

PART_BYTES = 512 << 20  # rows per part: about this much in memory (DuckDB's advice: files of 100 MB-10 GB)
# Rows per row group: small enough that a get() of one cell reads one group (statistics prune the others), large
# enough that a whole-table scan is a few groups per part. trials rows carry ~8 kB of per-example bits each.
ROW_GROUP = {"trials": 512, "epochs": 32768}


def compact(store: Store, log=lambda s: None, started: float | None = None) -> dict[str, dict]:
    """Compact the tables of finished cells (trials, epochs); what was done per table. Holds the driver lock.
    `started`: when the lock holder started (a sweep: its start), so that temporaries its own writers made are not
    removed (default: now: the holder is this compaction)."""
    if store.owner:
        return _compact(store, log, started)
    store.check_writable()  # as a sweep checks first: a full or read-only store is one sentence (exit 3), not a traceback
    with store.lock("raydw compact"):
        try:
            return _compact(store, log, started)
        except OSError as e:  # the disk filled (or turned read-only) while the parts were written: nothing deleted yet
            raise StoreError(f"results store {store.uri}: compaction not done ({e.strerror or e}); every row is stored "
                             "and reads as it is") from None


def after_sweep(store: Store, started: float, out) -> dict[str, dict] | None:
    """A sweep's end, under its lock: compact and say so in one line. A failure is said, not raised: the cells are
    done and their rows stored (read as they are); `raydw compact` finishes the job."""
    try:
        r = compact(store, started=started)
    except Exception as e:  # noqa: BLE001 - a store that cannot be compacted now must not turn a finished sweep into an error
        out(f"compaction: not done ({type(e).__name__}: {e}); every row is stored and reads as it is: "
            f"run `raydw compact {store.uri}`")
        return None
    if all(x["rows"] is None for x in r.values()):
        return r  # nothing to merge
    out("compacted finished cells: " + ", ".join(f"{t} {x['files_before']:,} files -> {x['files_after']:,}" for t, x in r.items())
        + f" ({sum(x['seconds'] for x in r.values()):.1f} s)")
    return r


def pending(store: Store) -> bool:
    """Whether a compaction was left half-done (killed or interrupted between writing its parts and deleting what
    they merged): a table with two parts, or a part beside a cell's own file whose rows it holds too. raydw's reads
    keep one copy, but DuckDB's `read_parquet('trials/*.parquet')` counts both: the next sweep finishes it."""
    for table in COMPACTED:
        files = store.list_files(table)
        parts = [f for f in files if part_gen(_base(f)) is not None]
        if len(parts) > 1:
            return True
        if not parts:
            continue
        own = {_cell(table, _base(f)) for f in files if part_gen(_base(f)) is None}
        if own and own & set(store.part_rows(table, None, ["cell_id"]).column("cell_id").to_pylist()):
            return True
    return False


def _compact(store: Store, log, started: float | None) -> dict[str, dict]:
    t0 = time.time() if started is None else started
    out = {"trials": _table(store, "trials", None)}
    # epochs of cells with a trials row only: a cell without one may still be running (its file grows)
    finished = set(store.read_table("trials", columns=["cell_id"]).column("cell_id").to_pylist())
    out["epochs"] = _table(store, "epochs", finished)
    for t, r in out.items():
        log(f"  {t}: {r['files_before']} files, nothing to merge" if r["rows"] is None else
            f"  {t}: {r['files_before']} files -> {r['files_after']} ({r['rows']} rows, {r['seconds']:.1f} s)")
    store.remove_temporaries(older_than=t0)  # of writers killed before this started: none of them can still be writing
    return out


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1][: -len(".parquet")]


def _cell(table: str, base: str) -> str:
    m = EPOCH_ROW.match(base) if table == "epochs" else None
    return m["cell"] if m else base


def _stamp(store: Store, path: str):
    """What changes when a file is rewritten (a rename puts a new inode in place; a PUT a new mtime)."""
    if store.local:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    i = store.fs.get_file_info(path)
    return (i.mtime_ns, i.size)


def _table(store: Store, table: str, finished: set[str] | None) -> dict:
    assert table in COMPACTED
    t0 = time.perf_counter()
    files = store.list_files(table)
    parts = [f for f in files if part_gen(_base(f)) is not None]
    sources = [f for f in files if part_gen(_base(f)) is None and (finished is None or _cell(table, _base(f)) in finished)]
    result = {"files_before": len(files), "files_after": len(files), "rows": None, "seconds": 0.0}
    if not sources and len(parts) <= 1:
        return result
    stamps = {f: _stamp(store, f) for f in sources}
    key_cols = ("cell_id", "epoch") if table == "epochs" else (KEYS[table],)
    rows, moved = store.read_files(table, parts + sources, list(SCHEMAS[table].names))
    if moved:
        raise StoreError(f"results store {store.uri}: a {table} file vanished while compacting: is another compaction "
                         "running on this store? Nothing was changed")
    if rows is None:  # every file was bad (named, and moved aside by the lock holder)
        rows = SCHEMAS[table].empty_table().append_column("__filename", pa.array([], pa.string()))
    rows = store.pick(table, rows, key_cols).drop_columns(["__filename"]).cast(SCHEMAS[table])
    rows = rows.sort_by([(c, "ascending") for c in key_cols])
    gen = max([part_gen(_base(p)) for p in parts], default=0) + 1
    per_part = max(1, int(rows.num_rows * PART_BYTES / max(rows.nbytes, 1)))
    written = []
    for start in range(0, rows.num_rows, per_part):  # the new parts, whole, before anything is deleted
        name = f"part-{gen:06d}-{uuid.uuid4().hex[:8]}.parquet"
        written.append(store.write_bytes((table, name), parquet_bytes(rows.slice(start, per_part), ROW_GROUP[table])))
    for f in sources:
        if _stamp(store, f) == stamps[f]:  # rewritten since read: keep it (its rows are newer and win on read)
            _delete(store, f)
    for p in parts:
        _delete(store, p)
    result.update(files_after=len(store.list_files(table)), rows=rows.num_rows, seconds=time.perf_counter() - t0,
                  parts=len(written))
    return result


def _delete(store: Store, path: str) -> None:
    try:
        store.fs.delete_file(path)
    except FileNotFoundError:
        pass
