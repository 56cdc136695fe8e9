"""The results store: one storage URI, its paths, atomic writes and the lock; reads are raydw.store.reads."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from raydw.store.atomic import read_regular, write_atomic
from raydw.errors import StoreError
from raydw.store.remote import probe
from raydw.store.lock import StoreLock
from raydw.store.files import check_local_root, parquet_bytes, resolve
from raydw.store.reads import Reads
from raydw.store.schema import EPOCH_ROW, KEYS, LOCK_TEMPORARY, SCHEMAS, TEMPORARY, check_key


class Store(Reads):
    def __init__(self, uri: str):
        self.fs, self.root, self.uri = resolve(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.local:
            check_local_root(self.root)
        else:  # unreachable, unauthorised or a missing bucket: one sentence now, not an empty store or a traceback

            probe(self.fs, self.root, self.uri)
        # True while this process holds the store's lock (a sweep driver): bad files are then moved to quarantine/.
        # Anyone else (status, results, Ray workers) only skips them and says so: a reader never writes.
        self.owner = False
        self.problems: dict[str, str] = {}  # path -> why it was skipped or moved aside (each said once)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- paths ---------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def train_path(self) -> str:
        """Ray Train's storage_path: a local folder or the URI (Ray takes URIs through pyarrow too)."""
        return self.path("train") if self.local else self.uri.rstrip("/") + "/train"

    @property
    def tune_path(self) -> str:
        return self.path("tune") if self.local else self.uri.rstrip("/") + "/tune"

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def check_writable(self) -> None:
        """Fail fast, before any GPU time is spent, if the store cannot take a file."""
        try:  # a hidden file of its own at the root: concurrent drivers never remove each other's probe
            name = f".probe-{uuid.uuid4().hex}"
            self.write_bytes((name,), b"ok")
            self.fs.delete_file(self.path(name))
        except Exception as e:  # noqa: BLE001 - any failure here means the sweep cannot record results
            raise StoreError(f"results store {self.uri} is not writable: {e}") from None
    def lock(self, what: str) -> "StoreLock":
        """Claim the store for one `raydw sweep` driver (see StoreLock for why a store-level lock)."""
        return StoreLock(self, what)

    # -- atomic writes -------------------------------------------------------------------------------
    def write_bytes(self, parts: tuple[str, ...], data: bytes) -> str:
        final = self.path(*parts)
        folder = final.rsplit("/", 1)[0]
        self.fs.create_dir(folder, recursive=True)
        if not self.local:  # object stores: a single PUT is atomic
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return final
        write_atomic(final, data)  # a hidden temporary, renamed: pyarrow and DuckDB globs skip it
        return final

    def remove_temporaries(self, older_than: float) -> list[str]:
        """Delete the hidden temporaries of writes that were killed half-way (a SIGKILLed driver takes its trials'
        writers with it), if last modified before `older_than` (a time.time()). Readers skip them anyway; this keeps
        the folders clean. Only the driver holding the store's lock calls it, at the end of its sweep, with its start
        time: no writer of its own can still be behind such a file. Object stores have none (one PUT per file)."""
        if not self.local or not os.path.isdir(self.root):
            return []
        gone = []
        for f in [*Path(self.root).rglob(".*.tmp"), *Path(self.root, "locks").glob("driver.json.*.tmp")]:
            if (TEMPORARY.match(f.name) or LOCK_TEMPORARY.match(f.name)) and f.stat().st_mtime < older_than:
                f.unlink(missing_ok=True)
                gone.append(str(f))
        return gone

    def read_bytes(self, *parts: str) -> bytes:
        if self.local:  # a regular file only: never a FIFO's endless wait, never a link's target
            return read_regular(self.path(*parts))
        with self.fs.open_input_file(self.path(*parts)) as f:
            return f.read()

    def write_rows(self, table: str, name: str, rows: list[dict]) -> str:
        """Store rows under `name` (the row's key). epochs: `name` is the cell id, or `<cell_id>.e<epoch>` as
        older callers pass it; the rows join the cell's one file (a re-reported epoch replaces its row)."""
        schema = SCHEMAS[table]
        check_key(table, name)
        missing = [c for r in rows for c in r if c not in schema.names]
        if missing:
            raise StoreError(f"table {table}: unknown columns {sorted(set(missing))}")
        t = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
        if table == "epochs":
            return self._write_epochs(name, t)
        return self.write_bytes((table, f"{name}.parquet"), parquet_bytes(t))

    def write_row(self, table: str, row: dict, name: str | None = None) -> str:
        if name is None:
            name = row.get("cell_id") if table == "epochs" else row[KEYS[table]]
        return self.write_rows(table, name, [row])

    def _write_epochs(self, name: str, new: pa.Table) -> str:
        """Read the cell's file, replace or add the new epochs, write it whole again (temporary + rename, or one PUT):
        files grow with cells, not epochs, and a reader sees the file before or after, never half of it. One writer
        per cell (its Ray Train rank 0; a restarted run's new rank 0 after the old one is gone)."""
        import datetime as dt

        m = EPOCH_ROW.match(name)
        cell = m["cell"] if m else name
        now = pa.array([dt.datetime.now(dt.timezone.utc)] * new.num_rows, SCHEMAS["epochs"].field("written_at").type)
        i = new.schema.get_field_index("written_at")
        new = new.set_column(i, "written_at", pc.coalesce(new.column(i), now))
        cells, epochs = set(new.column("cell_id").to_pylist()), new.column("epoch")
        if cells != {cell} or epochs.null_count:
            raise StoreError(f"table epochs: rows stored under {name!r} must all have cell_id {cell!r} and an epoch "
                             f"(got cell_id {sorted(map(str, cells))}, {epochs.null_count} without epoch)")
        old = self.read_one("epochs", self.path("epochs", f"{cell}.parquet"), None)
        if old is not None:
            new = pa.concat_tables([old.filter(pc.invert(pc.is_in(old.column("epoch"), value_set=epochs))), new])
        return self.write_bytes(("epochs", f"{cell}.parquet"), parquet_bytes(new.sort_by("epoch")))

    # -- weights ------------------------------------------------------------------------------------
    def weights_parts(self, pretrained_id: str) -> tuple[str, str]:
        return ("weights", f"{pretrained_id}.pt")
