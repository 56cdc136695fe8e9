"""The results store: Parquet tables under one storage URI, one file per row-group owner, atomic writes.

Layout (every table is a folder of Parquet files with one fixed schema; pandas, pyarrow and DuckDB read a
folder or a glob such as `trials/*.parquet` directly):
    trials/<cell_id>.parquet              one row per finished (or failed) cell; rewritten by a retry
    epochs/<cell_id>.e<epoch>.parquet     one row per cell and epoch; a re-run epoch overwrites, never duplicates
    masks/<mask_id>.parquet               one row per mask, bit-packed
    index_sets/<index_set_id>.parquet     the training indices of one data fraction
    pretrained/<pretrained_id>.parquet    one row per pre-trained model; weights in weights/<pretrained_id>.pt
    recipes/<tune_id>.parquet             one row per tuned dense recipe (docs/tuning.md)
    train/, tune/                          Ray Train checkpoints and Ray Tune state
A write goes to a hidden temporary name and is renamed into place (POSIX) or is one whole-object PUT (object
stores), so a reader never sees half a file and concurrent cells never share a file. Torch-free.
"""
from __future__ import annotations

import io
import json
import os
import re
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TRIALS = pa.schema([
    ("cell_id", pa.string()), ("sweep", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("pretraining", pa.string()), ("pretrained_id", pa.string()), ("pretraining_kind", pa.string()), ("arch", pa.string()),
    ("ticket_method", pa.string()), ("ticket_round", pa.int64()), ("target_sparsity", pa.float64()),
    ("sparsity", pa.float64()), ("mask_id", pa.string()), ("prunable", pa.string()),
    ("dataset", pa.string()), ("protocol", pa.string()), ("normalization", pa.string()),
    ("regime", pa.string()), ("regime_kind", pa.string()), ("data_fraction", pa.float64()),
    ("fraction_method", pa.string()), ("index_set_id", pa.string()), ("train_images", pa.int64()), ("seed", pa.int64()),
    # Test metrics in [0,1]. sa = SA at the SA-best epoch, ra = RA at the RA-best epoch (the paper's early stopping).
    ("sa", pa.float64()), ("ra", pa.float64()), ("sa_at_sa_best", pa.float64()), ("ra_at_sa_best", pa.float64()),
    ("sa_at_ra_best", pa.float64()), ("ra_at_ra_best", pa.float64()), ("sa_last", pa.float64()), ("ra_last", pa.float64()),
    ("val_sa_best", pa.float64()), ("val_ra_best", pa.float64()),
    ("best_epoch_sa", pa.int64()), ("best_epoch_ra", pa.int64()), ("epochs", pa.int64()),
    ("wall_s", pa.float64()), ("train_s", pa.float64()), ("fit_s", pa.float64()), ("device", pa.string()), ("node", pa.string()),
    ("workers", pa.int64()), ("amp", pa.string()),
    ("raydw_version", pa.string()), ("torch_version", pa.string()), ("ray_version", pa.string()), ("git_commit", pa.string()),
    ("config", pa.string()), ("finished_at", pa.timestamp("us", tz="UTC")),
    # Tuning (docs/tuning.md): "main" for the sweep's cells, "tune" for tuning trials; null in rows written before
    # the column existed, read as "main". recipe_id / tune_id: the tuned recipe a cell ran with and its group.
    ("phase", pa.string()), ("recipe_id", pa.string()), ("tune_id", pa.string()),
    # A tuned group's dense cell whose rows were copied from its best tuning trial (the same run): that trial's id.
    ("reused_from", pa.string()),
])

EPOCHS = pa.schema([
    ("cell_id", pa.string()), ("epoch", pa.int64()), ("lr", pa.float64()), ("train_loss", pa.float64()),
    ("train_acc", pa.float64()), ("val_sa", pa.float64()), ("val_ra", pa.float64()), ("epoch_s", pa.float64()),
    ("eval_s", pa.float64()), ("train_images", pa.int64()), ("node", pa.string()), ("resumed_from", pa.int64()),  # first epoch of the run segment that wrote it
])

MASKS = pa.schema([
    ("mask_id", pa.string()), ("pretraining", pa.string()), ("pretrained_id", pa.string()), ("method", pa.string()),
    ("params", pa.string()), ("round", pa.int64()), ("target_sparsity", pa.float64()), ("sparsity", pa.float64()),
    ("prunable", pa.string()), ("n_prunable", pa.int64()), ("n_kept", pa.int64()), ("layer_density", pa.string()),
    ("layout", pa.string()), ("bits", pa.binary()),
])

INDEX_SETS = pa.schema([
    ("index_set_id", pa.string()), ("dataset", pa.string()), ("fraction", pa.float64()), ("method", pa.string()),
    ("seed", pa.int64()), ("n", pa.int64()), ("indices", pa.list_(pa.int64())),
])

PRETRAINED = pa.schema([
    ("pretrained_id", pa.string()), ("name", pa.string()), ("arch", pa.string()), ("kind", pa.string()),
    ("source", pa.string()), ("dataset", pa.string()), ("num_classes", pa.int64()), ("in_chans", pa.int64()),
    ("mean", pa.list_(pa.float64())), ("std", pa.list_(pa.float64())),
    ("clean_acc", pa.float64()), ("robust_acc", pa.float64()), ("weights_path", pa.string()),
    ("weights_sha256", pa.string()), ("config", pa.string()), ("wall_s", pa.float64()),
])

SEARCHES = pa.schema([
    ("search_id", pa.string()), ("sweep", pa.string()), ("pretraining", pa.string()), ("dataset", pa.string()),
    ("data_fraction", pa.float64()), ("ticket_method", pa.string()), ("rule", pa.string()), ("verify", pa.string()),
    ("levels", pa.string()), ("levels_run", pa.string()), ("verdicts", pa.string()),
    ("max_win", pa.float64()), ("max_contig_win", pa.float64()), ("consistent", pa.bool_()), ("unknown", pa.string()),
    ("done", pa.bool_()), ("cells_run", pa.int64()), ("cells_saved", pa.int64()), ("state", pa.string()),
])

RECIPES = pa.schema([
    ("tune_id", pa.string()), ("sweep", pa.string()), ("pretraining", pa.string()), ("pretrained_id", pa.string()),
    ("dataset", pa.string()), ("regime", pa.string()), ("regime_kind", pa.string()), ("data_fraction", pa.float64()),
    ("recipe", pa.string()), ("recipe_id", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("trials", pa.int64()), ("failed", pa.int64()), ("best_cell_id", pa.string()), ("sampler", pa.string()),
    ("optuna_seed", pa.int64()), ("startup_trials", pa.int64()), ("space", pa.string()), ("base_regime", pa.string()),
    ("optuna_version", pa.string()), ("finished_at", pa.timestamp("us", tz="UTC")),
])

SCHEMAS = {"trials": TRIALS, "epochs": EPOCHS, "masks": MASKS, "index_sets": INDEX_SETS, "pretrained": PRETRAINED, "searches": SEARCHES,
           "recipes": RECIPES}
KEYS = {"recipes": "tune_id", "searches": "search_id", "trials": "cell_id", "masks": "mask_id", "index_sets": "index_set_id", "pretrained": "pretrained_id"}


_TEMPORARY = re.compile(r"^\.[0-9a-f]{32}\.tmp$")  # write_bytes' hidden temporary names


class StoreError(RuntimeError):
    pass


def _resolve(uri: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, root path on it, canonical URI). Local paths become absolute, so Ray workers agree."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        # `storage: "~/results"` in YAML reaches here unexpanded (only a shell expands ~): expand it, else a
        # folder named `~` appears under the working directory.
        path = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme == "file" else uri))
        return pafs.LocalFileSystem(), path, path
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path, uri


class Store:
    def __init__(self, uri: str):
        self.fs, self.root, self.uri = _resolve(str(uri))
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

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

    # -- one sweep driver at a time ------------------------------------------------------------------
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
        tmp = f"{folder}/.{uuid.uuid4().hex}.tmp"  # hidden: pyarrow and DuckDB globs skip it
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return final

    def remove_temporaries(self, older_than: float) -> list[str]:
        """Delete the hidden temporaries of writes that were killed half-way (a SIGKILLed driver takes its trials'
        writers with it), if last modified before `older_than` (a time.time()). Readers skip them anyway; this keeps
        the folders clean. Only the driver holding the store's lock calls it, at the end of its sweep, with its start
        time: no writer of its own can still be behind such a file. Object stores have none (one PUT per file)."""
        if not self.local or not os.path.isdir(self.root):
            return []
        gone = []
        for f in Path(self.root).rglob(".*.tmp"):
            if _TEMPORARY.match(f.name) and f.stat().st_mtime < older_than:
                f.unlink(missing_ok=True)
                gone.append(str(f))
        return gone

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_file(self.path(*parts)) as f:
            return f.read()

    def write_rows(self, table: str, name: str, rows: list[dict]) -> str:
        schema = SCHEMAS[table]
        missing = [c for c in rows[0] if c not in schema.names]
        if missing:
            raise StoreError(f"table {table}: unknown columns {missing}")
        t = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
        buf = io.BytesIO()
        pq.write_table(t, buf)
        return self.write_bytes((table, f"{name}.parquet"), buf.getvalue())

    def write_row(self, table: str, row: dict, name: str | None = None) -> str:
        return self.write_rows(table, name or row[KEYS[table]], [row])

    # -- reads ---------------------------------------------------------------------------------------
    def names(self, table: str) -> list[str]:
        sel = pafs.FileSelector(self.path(table), allow_not_found=True)
        return sorted(i.base_name[: -len(".parquet")] for i in self.fs.get_file_info(sel)
                      if i.base_name.endswith(".parquet") and not i.base_name.startswith("."))

    def read_table(self, table: str, names: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        schema = SCHEMAS[table]
        if names is None:  # the whole table: one multi-threaded dataset scan (docs/results-schema.md, "Reading at scale")
            return self._scan(table, columns)
        parts = []
        for n in names:
            with self.fs.open_input_file(self.path(table, f"{n}.parquet")) as f:
                parts.append(pq.read_table(f, columns=columns, schema=schema))
        if not parts:
            empty = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            return empty.empty_table()
        return pa.concat_tables(parts)

    def _scan(self, table: str, columns: list[str] | None) -> pa.Table:
        """Every row of a table. pyarrow.dataset opens the files on its thread pool (one file per row makes a
        file-by-file loop the bottleneck); columns that rows written by an older raydw lack read as nulls.
        Listing first (names()) keeps the selection of read_table's per-file path: *.parquet, never hidden temporaries."""
        schema = SCHEMAS[table]
        files = [self.path(table, f"{n}.parquet") for n in self.names(table)]  # the same files, in the same order
        if not files:
            empty = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            return empty.empty_table()
        return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table(columns=columns)

    def get(self, table: str, key: str) -> dict | None:
        if not self.exists(table, f"{key}.parquet"):
            return None
        return self.read_table(table, [key]).to_pylist()[0]

    def done_cells(self, include_stopped: bool = False) -> set[str]:
        """Cells with a final row: `done`, and `stopped` ones while early stopping is on (else they rerun in full)."""
        final = {"done", "stopped"} if include_stopped else {"done"}
        t = self.read_table("trials", columns=["cell_id", "status"])
        return {c for c, s in zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()) if s in final}

    def recipes(self) -> dict[str, dict]:
        """tune_id -> the tuned recipe (a dict) of every group tuned in this store."""
        t = self.read_table("recipes", columns=["tune_id", "recipe"]).to_pylist()
        return {r["tune_id"]: json.loads(r["recipe"]) for r in t}

    # -- weights ------------------------------------------------------------------------------------
    def weights_parts(self, pretrained_id: str) -> tuple[str, str]:
        return ("weights", f"{pretrained_id}.pt")


class StoreLocked(StoreError):
    pass


class StoreLock:
    """`locks/driver.json`, created exclusively: a second driver on the same store stops with a clear message.

    Why one lock per store rather than per-cell claims: two drivers would otherwise both see a cell as missing
    and both run it (the rows would not corrupt, being whole-file atomic writes, but GPU-hours would be spent
    twice and the second write would silently replace the first). A lock left by a killed driver on this host is
    detected (its pid is gone) and taken over; one from another host must be removed by hand, as the message says.
    """

    def __init__(self, store: Store, what: str):
        self.store, self.what = store, what
        self.path = store.path("locks", "driver.json")

    def __enter__(self) -> "StoreLock":
        import socket
        import time

        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.store.fs.create_dir(self.store.path("locks"), recursive=True)
        for _ in range(2):
            try:
                if self.store.local:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    with os.fdopen(fd, "w") as f:
                        json.dump(me, f)
                    return self
                if not self.store.exists("locks", "driver.json"):  # object stores: best effort, no O_EXCL
                    self.store.write_bytes(("locks", "driver.json"), json.dumps(me).encode())
                    return self
            except FileExistsError:
                pass
            holder = self._holder()
            if holder and holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                self._remove()  # its driver was killed: take over
                continue
            raise StoreLocked(
                f"results store {self.store.uri} is in use by another raydw driver (pid {holder.get('pid')} on "
                f"{holder.get('host')}, {holder.get('what')}, since {holder.get('since')}). Wait for it to finish, or "
                f"if that process is gone, delete {self.path}")
        raise StoreLocked(f"could not take the lock {self.path}")

    def __exit__(self, *exc) -> None:
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid():
            self._remove()

    def _holder(self) -> dict:
        try:
            return json.loads(self.store.read_bytes("locks", "driver.json"))
        except Exception:  # noqa: BLE001 - a half-read lock is treated as held by someone unknown
            return {}

    def _remove(self) -> None:
        try:
            self.store.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def config_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
