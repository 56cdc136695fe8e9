"""The results store: Parquet tables under one storage URI, atomic writes, files that grow with cells, not epochs.

Layout (every table is a folder of Parquet files with one fixed schema; `raydw.results.load` / `Store.read_table`
read it with one call, pandas, pyarrow and DuckDB read a folder or a glob such as `trials/*.parquet` directly):
    trials/<cell_id>.parquet              one row per finished (or failed) cell; rewritten by a retry
    epochs/<cell_id>.parquet              every epoch row of one cell, rewritten whole as each epoch arrives
    trials/part-<gen>-<id>.parquet,       compacted: the rows of many finished cells in one large file, sorted by
      epochs/part-<gen>-<id>.parquet      cell (raydw.compact: `raydw compact STORE`)
    epochs/<cell_id>.e<epoch>.parquet     older stores: one file per epoch row; still read, migrated by compaction
    masks/<mask_id>.parquet               one row per mask, bit-packed
    index_sets/<index_set_id>.parquet     the training indices of one data fraction
    pretrained/<pretrained_id>.parquet    one row per pre-trained model; weights in weights/<pretrained_id>.pt
    recipes/<tune_id>.parquet             one row per tuned dense recipe (docs/tuning.md)
    train/, tune/                          Ray Train checkpoints and Ray Tune state
A write goes to a hidden temporary name and is renamed into place (POSIX) or is one whole-object PUT (object
stores), so a reader never sees half a file and concurrent cells never share a file. A row can sit in two files
for a moment (a compaction between writing its part and deleting the sources, or one killed in between): reads
keep one by precedence (the cell's own file, then an older store's epoch file, then the newest part).
Torch-free. Layout and measurements: docs/results-schema.md.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydw.remote import bounded, check_uri, filesystem, probe
from raydw.errors import StoreError, StoreKeyError, StorePathError  # noqa: F401 - raised here, imported from here by callers
from raydw.outcomes import COLUMNS as OUTCOME_COLUMNS
from raydw.atomic import write_atomic
from raydw.objectlock import ObjectLockError, create_if_absent

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
    # Per-example test outcomes (raydw.outcomes): test_n images, and per checkpoint (sa_best, ra_best, last) one bit per
    # image for clean-correct, robust to the eval attack, and robust to it and eval.final_attack. Null in older rows.
    ("test_n", pa.int64()),
    *[(c, pa.binary()) for c in OUTCOME_COLUMNS],
    # eval.final_attack (e.g. autoattack) and test RA under it and the eval attack together, as ra / ra_at_* / ra_last.
    ("final_attack", pa.string()), ("ra_final", pa.float64()), ("ra_final_at_sa_best", pa.float64()),
    ("ra_final_at_ra_best", pa.float64()), ("ra_final_last", pa.float64()),
])

EPOCHS = pa.schema([
    ("cell_id", pa.string()), ("epoch", pa.int64()), ("lr", pa.float64()), ("train_loss", pa.float64()),
    ("train_acc", pa.float64()), ("val_sa", pa.float64()), ("val_ra", pa.float64()), ("epoch_s", pa.float64()),
    ("eval_s", pa.float64()), ("train_images", pa.int64()), ("node", pa.string()), ("resumed_from", pa.int64()),  # first epoch of the run segment that wrote it
    # when the row was stored (UTC): one file holds a cell's epochs now, so a file's mtime no longer dates a row
    ("written_at", pa.timestamp("us", tz="UTC")),
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

# One row per path a preflight ran (raydw.run.preflight), in its scratch store only, never a sweep's store.
PREFLIGHT = pa.schema([
    ("path_id", pa.string()), ("sweep", pa.string()), ("kind", pa.string()), ("label", pa.string()),
    ("pretraining", pa.string()), ("dataset", pa.string()), ("regime", pa.string()), ("ticket_method", pa.string()),
    ("cell_id", pa.string()), ("status", pa.string()), ("error", pa.string()), ("s_per_step", pa.float64()),
    ("s_per_eval_image", pa.float64()), ("batch", pa.int64()), ("steps", pa.int64()), ("peak_bytes", pa.int64()),
    ("memory", pa.string()), ("device", pa.string()), ("workers", pa.int64()), ("restored", pa.bool_()),
    ("wall_s", pa.float64()), ("finished_at", pa.timestamp("us", tz="UTC")),
])

SCHEMAS = {"trials": TRIALS, "epochs": EPOCHS, "masks": MASKS, "index_sets": INDEX_SETS, "pretrained": PRETRAINED, "searches": SEARCHES,
           "recipes": RECIPES, "preflight": PREFLIGHT}
KEYS = {"recipes": "tune_id", "searches": "search_id", "trials": "cell_id", "masks": "mask_id", "index_sets": "index_set_id", "pretrained": "pretrained_id",
        "preflight": "path_id"}
# Columns every row raydw has ever written to a table holds (non-null): a file whose rows lack one is not a row of this
# table (a Parquet file of another schema would otherwise read as a row of nulls). Newer columns may be missing.
CORE = {"trials": ("cell_id", "status"), "epochs": ("cell_id", "epoch"), "masks": ("mask_id", "bits"),
        "index_sets": ("index_set_id", "indices"), "pretrained": ("pretrained_id", "arch"), "searches": ("search_id",),
        "recipes": ("tune_id", "recipe"), "preflight": ("path_id", "status")}
QUARANTINE = "quarantine"  # <store>/quarantine/<table>/<file>.<time> (+ .why.txt): bad files a sweep moved aside


_TEMPORARY = re.compile(r"^\.[0-9a-f]{32}\.tmp$")  # write_bytes' hidden temporary names
_LOCK_TEMPORARY = re.compile(r"^driver\.json\.[0-9a-f]{32}\.tmp$")  # StoreLock._create's, in locks/
# Tables whose rows grow with cells: written per cell, compacted into parts (raydw.compact). The others grow with
# pre-trainings, masks and fractions (hundreds of rows at most) and keep one file per row.
COMPACTED = ("trials", "epochs")
_PART = re.compile(r"^part-(\d{6})-[0-9a-f]{8}$")  # a compacted file's name (without .parquet); the number orders them
_EPOCH_ROW = re.compile(r"^(?P<cell>.+)\.e(?P<epoch>\d{4,})$")  # an older store's one-epoch file name; a get() key


def part_gen(base: str) -> int | None:
    """The generation of a compacted file (its name without .parquet), None for any other file."""
    m = _PART.match(base)
    return int(m.group(1)) if m else None


def _rank(table: str, base: str, key: tuple) -> tuple[int, int]:
    """Which of two copies of a row a read keeps (the higher): the file written for it (the cell's own file)
    beats an older store's one-epoch file, which beats a part (a newer part beats an older one); a file named
    after nothing it holds (a copy made by hand) is last, and is the only one a duplicate is warned about."""
    g = part_gen(base)
    if g is not None:
        return (1, g)
    if base == key[0]:
        return (3, 0)
    if table == "epochs" and base == f"{key[0]}.e{key[1]:04d}":
        return (2, 0)
    return (0, 0)


def _one_attempt(t: pa.Table) -> pa.Table:
    """Epoch rows of one attempt per cell. A cell's rows may sit in several files: its own file (the newest attempt),
    an older store's one-epoch files, compacted parts. The file of higher precedence (_rank) is the newer attempt;
    its rows say where their run segment started (`resumed_from`), and a lower file's rows are kept only for the
    epochs before that (the rows a resumed run continued from): a retry that started again at epoch 0 hides all of an
    older attempt's rows, not just the epochs it has re-run so far. Rows without `resumed_from` (hand-made) set no
    bound; _pick then keeps one copy per epoch. Rows of a file named after nothing (a copy) are left to _pick."""
    cells, files = t.column("cell_id"), t.column("__filename")
    if "resumed_from" not in t.column_names or \
            t.group_by(["cell_id", "__filename"]).aggregate([]).num_rows == pc.count_distinct(cells).as_py():
        return t  # every cell's rows come from one file: the common case
    epochs, starts = t.column("epoch").to_pylist(), t.column("resumed_from").to_pylist()
    by_cell: dict[str, dict[tuple, list[int]]] = {}
    for i, (c, f) in enumerate(zip(cells.to_pylist(), files.to_pylist())):
        base = f.rsplit("/", 1)[-1][: -len(".parquet")]
        g = part_gen(base)
        m = _EPOCH_ROW.match(base)
        rank = (1, g) if g is not None else (3, 0) if base == c else (2, 0) if m and m["cell"] == c else (0, 0)
        by_cell.setdefault(c, {}).setdefault(rank, []).append(i)
    keep = np.ones(t.num_rows, dtype=bool)
    for ranks in by_cell.values():
        if len(ranks) < 2:
            continue
        floor = None
        for rank in sorted(ranks, reverse=True):
            if rank[0] == 0:
                continue
            kept = [i for i in ranks[rank] if floor is None or epochs[i] < floor]
            for i in ranks[rank]:
                keep[i] = floor is None or epochs[i] < floor
            known = [starts[i] for i in kept if starts[i] is not None]
            if known:
                floor = min(known) if floor is None else min(floor, *known)
    return t.filter(pa.array(keep))


_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # every id raydw makes (hex digests, names, <cell>.e<epoch>)


def check_key(table: str, key) -> str:
    """`key` as a row id of `table`, or StoreKeyError: one path component of letters, digits, `.`, `_`, `-`, not
    starting with a dot (`../x`, `/etc/x`, `a/b` never reach a path join)."""
    if not isinstance(key, str) or not _KEY.match(key):
        from raydw.bounded import short

        raise StoreKeyError(f"{short(key)} is not a {table} id (ids are letters, digits, '.', '_', '-', as "
                            f"`raydw results STORE --table {table}` lists them)")
    return key


def check_columns(table: str, columns) -> None:
    """`columns` of a read: None or a list of the table's column names; else ValueError naming the bad ones. (A
    string would be read letter by letter, and an unknown name would fail inside the reader, as if a file were bad.)"""
    if table not in SCHEMAS:
        raise KeyError(f"unknown table {table!r}; known: {list(SCHEMAS)}")
    if columns is None:
        return
    if isinstance(columns, (str, bytes)) or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"columns must be a list of column names, e.g. ['cell_id', 'sa'], not {columns!r}")
    bad = [c for c in columns if c not in SCHEMAS[table].names]
    if bad:
        raise ValueError(f"table {table} has no column {', '.join(map(repr, bad))}; its columns: {SCHEMAS[table].names}")


def _check_local_root(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise StorePathError(f"results store {path} is a symbolic link to {os.readlink(path)!r}, which does not "
                                 "exist: point the store at a real folder") from None
        return  # created on first write
    except OSError as e:  # ELOOP: a symlink loop. Others (a file as a parent, EACCES): check_writable says "not writable"
        if e.errno == errno.ELOOP:
            raise StorePathError(f"results store {path} cannot be used: it is a loop of symbolic links "
                                 f"({e.strerror}); point the store at a real folder") from None
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StorePathError(f"results store {path} is not a folder")


def _resolve(uri) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, root path on it, canonical URI). Local paths become absolute, so Ray workers agree. Anything
    but a path or URI (None, a number, "") is refused; an object store is opened within a time bound (raydw.remote)."""

    uri = check_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        # `storage: "~/results"` in YAML reaches here unexpanded (only a shell expands ~): expand it, else a
        # folder named `~` appears under the working directory.
        path = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme == "file" else uri))
        return pafs.LocalFileSystem(), path, path
    fs, path = filesystem(uri)
    return fs, path, uri


class Store:
    def __init__(self, uri: str):
        self.fs, self.root, self.uri = _resolve(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.local:
            _check_local_root(self.root)
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
            if (_TEMPORARY.match(f.name) or _LOCK_TEMPORARY.match(f.name)) and f.stat().st_mtime < older_than:
                f.unlink(missing_ok=True)
                gone.append(str(f))
        return gone

    def read_bytes(self, *parts: str) -> bytes:
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

        m = _EPOCH_ROW.match(name)
        cell = m["cell"] if m else name
        now = pa.array([dt.datetime.now(dt.timezone.utc)] * new.num_rows, SCHEMAS["epochs"].field("written_at").type)
        i = new.schema.get_field_index("written_at")
        new = new.set_column(i, "written_at", pc.coalesce(new.column(i), now))
        cells, epochs = set(new.column("cell_id").to_pylist()), new.column("epoch")
        if cells != {cell} or epochs.null_count:
            raise StoreError(f"table epochs: rows stored under {name!r} must all have cell_id {cell!r} and an epoch "
                             f"(got cell_id {sorted(map(str, cells))}, {epochs.null_count} without epoch)")
        old = self._read_one("epochs", self.path("epochs", f"{cell}.parquet"), None)
        if old is not None:
            new = pa.concat_tables([old.filter(pc.invert(pc.is_in(old.column("epoch"), value_set=epochs))), new])
        return self.write_bytes(("epochs", f"{cell}.parquet"), parquet_bytes(new.sort_by("epoch")))

    # -- reads ---------------------------------------------------------------------------------------
    # Every read goes through _list / _read_one / _scan, which check each file: a file that is not a readable Parquet
    # file of the table's schema (truncated, empty, junk, another schema, a wrong-typed column), a link, a directory
    # named *.parquet, or a second row under a key already stored is named in a warning and skipped (moved to
    # quarantine/ by the lock holder); the other rows are read as usual.
    def _list(self, table: str) -> list[str]:
        """Paths of the table's row files: regular, non-hidden *.parquet files, sorted by name."""
        folder = self.path(table)
        if not self.local:

            sel = pafs.FileSelector(folder, allow_not_found=True)
            out = []
            for i in bounded(lambda: self.fs.get_file_info(sel), self.uri, f"listing {table}"):
                if i.base_name.endswith(".parquet") and not i.base_name.startswith("."):
                    if i.type == pafs.FileType.File:
                        out.append(i.path)
                    else:
                        self._bad(table, i.path, "not a file (a folder named like a row)")
            return sorted(out, key=lambda p: p.rsplit("/", 1)[-1])
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorePathError(f"results store {self.uri}: the {table} folder {folder} cannot be listed: "
                                 f"{e.strerror or e}") from None
        out = []
        for e in entries:
            if not e.name.endswith(".parquet") or e.name.startswith("."):
                continue
            path = f"{folder}/{e.name}"
            if e.is_symlink():
                self._bad(table, path, "a symbolic link (raydw writes regular files only; its target is not read)")
            elif e.is_dir(follow_symlinks=False):
                self._bad(table, path, "a folder named like a row file")
            elif not e.is_file(follow_symlinks=False):
                self._bad(table, path, "not a regular file")
            else:
                out.append(path)
        return sorted(out, key=lambda p: p.rsplit("/", 1)[-1])

    def names(self, table: str) -> list[str]:
        """The keys stored in a table (epochs: `<cell_id>.e<epoch>`, one per epoch row), sorted."""
        if table == "epochs":
            t = self._scan("epochs", ["cell_id", "epoch"])
            return sorted(f"{c}.e{e:04d}" for c, e in zip(t.column("cell_id").to_pylist(), t.column("epoch").to_pylist()))
        files = [p.rsplit("/", 1)[-1][: -len(".parquet")] for p in self._list(table)]
        own = [n for n in files if part_gen(n) is None]
        if len(own) == len(files):
            return own
        return sorted(set(own) | set(self._part_rows(table, None, [KEYS[table]]).column(KEYS[table]).to_pylist()))

    def read_table(self, table: str, names: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of a table: all of them (one dataset scan), or those stored under `names` (keys, in that order); a
        name with no row, or whose file is bad, is left out (a bad one with a warning)."""
        schema = SCHEMAS[table]
        check_columns(table, columns)  # a wrong argument is the caller's, never a file's fault (nothing quarantined)
        if names is None:  # the whole table: one multi-threaded dataset scan (docs/results-schema.md, "Reading at scale")
            return self._scan(table, columns)
        empty = (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()
        if table == "epochs":  # by cell: its one file, an older store's epoch files, the parts
            want: dict[str, set[int]] = {}
            for n in names:
                m = _EPOCH_ROW.match(n)
                if m:
                    want.setdefault(m["cell"], set()).add(int(m["epoch"]))
            rows = {(r["cell_id"], r["epoch"]): r for c, eps in want.items()
                    for r in self.epochs(c).to_pylist() if r["epoch"] in eps}
            got = [rows[(m["cell"], int(m["epoch"]))] for m in map(_EPOCH_ROW.match, names)
                   if m and (m["cell"], int(m["epoch"])) in rows]
            t = pa.Table.from_pylist(got, schema=schema) if got else schema.empty_table()
            return t if columns is None else t.select(columns)
        for n in names:
            check_key(table, n)
        found = {n: t for n in names if (t := self._read_one(table, self.path(table, f"{n}.parquet"), columns)) is not None}
        rest = [n for n in names if n not in found and part_gen(n) is None]
        if rest and table in COMPACTED:
            key = KEYS[table]
            t = self._part_rows(table, set(rest), None if columns is None else list(dict.fromkeys([*columns, key])))
            t = t.select(columns or schema.names).append_column(key + "__key", t.column(key))
            by = {k: t.slice(i, 1).drop_columns([key + "__key"]) for i, k in enumerate(t.column(key + "__key").to_pylist())}
            found.update((n, by[n]) for n in rest if n in by)
        parts = [found[n] for n in names if n in found]
        return pa.concat_tables(parts) if parts else empty

    def epochs(self, cell_id: str, columns: list[str] | None = None) -> pa.Table:
        """Every epoch row of one cell, by epoch, one row each: its file, an older store's one-epoch files and the
        compacted parts, the copy of higher precedence kept (see _rank)."""
        schema = SCHEMAS["epochs"]
        check_key("epochs", cell_id)
        pieces = []
        for f in [self.path("epochs", f"{cell_id}.parquet"),
                  *(p for p in self._list("epochs") if (m := _EPOCH_ROW.match(p.rsplit("/", 1)[-1][:-8])) and m["cell"] == cell_id)]:
            t = self._read_one("epochs", f, None)
            if t is not None:
                pieces.append(t.append_column("__filename", pa.array([f] * t.num_rows, pa.string())))
        pieces.append(self._part_rows("epochs", {cell_id}, None))
        t = self._pick("epochs", pa.concat_tables(pieces), ("cell_id", "epoch"), quiet=True)
        t = t.filter(pc.equal(t.column("cell_id"), cell_id)).drop_columns(["__filename"]).sort_by("epoch")
        return t.cast(schema) if columns is None else t.select(columns)

    def _parts(self, table: str) -> list[str]:
        """The table's compacted files, newest first."""
        if table not in COMPACTED:
            return []
        named = [(part_gen(p.rsplit("/", 1)[-1][:-8]), p) for p in self._list(table)]
        return [p for g, p in sorted(((g, p) for g, p in named if g is not None), reverse=True)]

    def _part_rows(self, table: str, keys: set[str] | None, columns: list[str] | None) -> pa.Table:
        """Rows of the compacted files whose key (cell_id) is in `keys` (all if None), plus `__filename`; one copy
        per key (the newest part's). Parts are sorted by cell and their row groups carry min/max statistics, so
        pyarrow reads only the groups that can hold the keys. A part deleted by a compaction meanwhile: the parts
        are listed again (the compaction wrote its new part before deleting the old ones)."""
        schema, key = SCHEMAS[table], KEYS.get(table, "cell_id")  # parts are sorted and looked up by cell
        read = list(dict.fromkeys([*(columns or schema.names), *CORE[table], key] +
                                  (["epoch", "resumed_from"] if table == "epochs" else [])))
        for _ in range(10):
            parts = self._parts(table)
            if not parts:
                return pa.schema([*(schema.field(c) for c in read), pa.field("__filename", pa.string())]).empty_table()
            flt = None if keys is None else ds.field(key).isin(sorted(keys))
            try:
                t = ds.dataset(parts, schema=schema, format="parquet", filesystem=self.fs).to_table(
                    columns=[*read, "__filename"], filter=flt)
            except FileNotFoundError:
                continue
            except (pa.ArrowException, OSError, ValueError, TypeError):
                if all(self.fs.get_file_info(p).type != pafs.FileType.NotFound for p in parts):
                    return self._part_rows_one_by_one(table, parts, keys, read)
                continue
            key_cols = ("cell_id", "epoch") if table == "epochs" else (key,)
            t = self._pick(table, t, key_cols, quiet=True)
            return t.select([*(columns or schema.names), "__filename"])
        raise StoreError(f"results store {self.uri}: the {table} parts kept vanishing while read (a compaction every "
                         "moment?); try again")

    def _part_rows_one_by_one(self, table, parts, keys, read) -> pa.Table:
        """A part that fails the fast read (damaged): each part checked, the bad one named (and moved aside)."""
        out = []
        for p in parts:
            one = self._read_one(table, p, read)
            if one is not None:
                if keys is not None:
                    one = one.filter(pc.is_in(one.column(KEYS.get(table, "cell_id")), value_set=pa.array(sorted(keys), pa.string())))
                out.append(one.append_column("__filename", pa.array([p] * one.num_rows, pa.string())))
        schema = SCHEMAS[table]
        if not out:
            return pa.schema([*(schema.field(c) for c in read), pa.field("__filename", pa.string())]).empty_table()
        return pa.concat_tables(out)

    def _read_one(self, table: str, path: str, columns: list[str] | None) -> pa.Table | None:
        """One row file, checked: None (and a warning) if it is not a readable row file of this table."""
        schema, core = SCHEMAS[table], CORE[table]
        read = None if columns is None else [*columns, *(c for c in core if c not in columns)]
        if self.local:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return None
            except OSError as e:
                self._bad(table, path, f"cannot be read: {e.strerror or e}")
                return None
            if not stat.S_ISREG(st.st_mode):
                kind = "a symbolic link (raydw writes regular files only; its target is not read)" if stat.S_ISLNK(st.st_mode) \
                    else "a folder named like a row file" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                self._bad(table, path, kind)
                return None
        try:
            with self.fs.open_input_file(path) as f:
                t = pq.read_table(f, columns=read, schema=schema)
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError, ValueError, TypeError) as e:
            if not self.local:  # the store's fault (network, credentials) is said, not blamed on the file
    
                if bounded(lambda: self.fs.get_file_info(path), self.uri, "reading a row").type == pafs.FileType.NotFound:
                    return None  # deleted meanwhile (an object store's 404)
            elif self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return None
            self._bad(table, path, f"not a readable Parquet file of the {table} table ({type(e).__name__}: {str(e)[:200]})")
            return None
        lacking = [c for c in core if t.column(c).null_count]
        if t.num_rows == 0 or lacking:
            try:
                names = pq.read_schema(path if self.local else self.fs.open_input_file(path)).names
            except Exception:  # noqa: BLE001 - only for the message
                names = "?"
            self._bad(table, path, "holds no row" if t.num_rows == 0 else
                      f"is not a {table} row: it lacks {lacking} (another schema; its columns: {names})")
            return None
        return t if columns is None else t.select(columns)

    def _scan(self, table: str, columns: list[str] | None) -> pa.Table:
        """Every row of a table. pyarrow.dataset opens the files on its thread pool; columns that rows written by an
        older raydw lack read as nulls. The fast scan also reads the table's core columns and the file names: only
        when it fails (a bad file) or a core column is null (a file of another schema) are the files read one by
        one, each checked (_read_one). A row in two files is kept once (_pick).
        Exactly once while a compaction runs: a compaction writes its part before it deletes the files it merged,
        so a file that vanished between the listing and its read, or a part that appeared meanwhile, means rows
        may have moved: the table is listed and read again."""
        schema = SCHEMAS[table]
        want = list(columns) if columns is not None else list(schema.names)
        key_cols = ("cell_id", "epoch") if table == "epochs" else (KEYS[table],)
        read = list(dict.fromkeys([*want, *CORE[table], *key_cols, *(["resumed_from"] if table == "epochs" else [])]))
        # (each once: a core column can be the key too; epochs: resumed_from tells one attempt's rows, _one_attempt)
        for _ in range(10):
            files = self._list(table)
            if not files:
                return pa.schema([schema.field(c) for c in want]).empty_table()
            t, moved = self._read_files(table, files, read)
            if not moved and table in COMPACTED:
                before = {f for f in files if part_gen(f.rsplit("/", 1)[-1][:-8]) is not None}
                moved = any(part_gen(f.rsplit("/", 1)[-1][:-8]) is not None and f not in before for f in self._list(table))
            if not moved:
                break
        else:
            raise StoreError(f"results store {self.uri}: the {table} table kept changing while read (a compaction every "
                             "moment?); try again")
        if t is None:
            return pa.schema([schema.field(c) for c in want]).empty_table()
        t = self._pick(table, t, key_cols)
        if table in COMPACTED:  # by key, as one file per row listed by name used to give, whatever files hold the rows
            t = t.sort_by([(c, "ascending") for c in key_cols])
        return t.select(want)

    def _read_files(self, table: str, files: list[str], read: list[str]) -> tuple[pa.Table | None, bool]:
        """(the files' rows with `__filename`, or None if none is readable; whether a listed file vanished)."""
        schema = SCHEMAS[table]
        try:
            t = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table(columns=[*read, "__filename"])
            if not any(t.column(c).null_count for c in CORE[table]):
                return t, False
        except (pa.ArrowException, OSError, ValueError, TypeError):
            pass
        parts, vanished = [], False  # some file is bad (or gone): find it, read the others
        for f in files:
            one = self._read_one(table, f, read)
            if one is None:  # gone: moved away by another process, unless this one just moved it to quarantine/
                vanished = vanished or (f not in self.problems and self.fs.get_file_info(f).type == pafs.FileType.NotFound)
                continue
            parts.append(one.append_column("__filename", pa.array([f] * one.num_rows, pa.string())))
        return (pa.concat_tables(parts) if parts else None), vanished

    def _pick(self, table: str, t: pa.Table, key_cols: tuple[str, ...], quiet: bool = False) -> pa.Table:
        """One row per key. Copies left by a compaction (a part and the files it merged, or two parts) are the same
        rows or an older and a newer one: the copy of higher precedence is kept silently (_rank). A copy in a file
        named after none of its rows (copied by hand) is named in a warning (and moved aside by the lock holder)."""
        if table == "epochs":
            t = _one_attempt(t)
        if len(key_cols) == 1:
            unique = pc.count_distinct(t.column(key_cols[0])).as_py() == t.num_rows
        else:
            unique = t.group_by(list(key_cols)).aggregate([]).num_rows == t.num_rows
        if unique:  # the common case: one cheap pass over the key column
            return t
        counts = t.group_by(list(key_cols)).aggregate([([], "count_all")])
        dup = counts.filter(pc.greater(counts.column("count_all"), 1))
        dup_keys = set(zip(*(dup.column(c).to_pylist() for c in key_cols)))
        where = pc.is_in(t.column(key_cols[0]), value_set=dup.column(key_cols[0])).to_numpy(zero_copy_only=False).nonzero()[0]
        cols = [t.column(c) for c in key_cols]
        files = t.column("__filename")
        by_key: dict[tuple, list[int]] = {}
        for i in map(int, where):
            k = tuple(c[i].as_py() for c in cols)
            if k in dup_keys:
                by_key.setdefault(k, []).append(i)
        drop = set()
        for k, rows in by_key.items():
            base = {i: files[i].as_py().rsplit("/", 1)[-1][: -len(".parquet")] for i in rows}
            keep = max(rows, key=lambda i: (_rank(table, base[i], k), -rows.index(i)))
            for i in rows:
                if i == keep:
                    continue
                drop.add(i)
                if not quiet and _rank(table, base[i], k)[0] == 0:
                    self._bad(table, files[i].as_py(), f"a second row with the key {'/'.join(map(str, k))} (already in "
                                                       f"{base[keep]}.parquet, which is kept): a copied file?")
        return t.filter(pa.array([i not in drop for i in range(t.num_rows)]))

    def _bad(self, table: str, path: str, why: str) -> None:
        """Say once that `path` is left out; the lock holder moves it to quarantine/ (with the reason) as well."""
        moved = None
        if self.owner and self.local:
            moved = self._quarantine(table, path, why)
        if path in self.problems and moved is None:
            return
        self.problems[path] = why
        what = f"moved to {moved}" if moved else \
            f"skipped (a `raydw sweep` on this store moves it to {self.path(QUARANTINE, table)}/)"
        print(f"warning: {path}: {why}; {what}. The table's other rows are read as usual.", file=sys.stderr, flush=True)

    def _quarantine(self, table: str, path: str, why: str) -> str | None:
        folder = self.path(QUARANTINE, table)
        dest = f"{folder}/{path.rsplit('/', 1)[-1]}.{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        try:
            os.makedirs(folder, exist_ok=True)
            os.rename(path, dest)  # the link itself for a link; never its target
            with open(dest + ".why.txt", "w") as f:
                f.write(f"{path}\n{why}\n")
        except OSError:
            return None  # read-only store or gone meanwhile: skipped all the same
        return dest

    def get(self, table: str, key: str) -> dict | None:
        """The row stored under `key` (epochs: `<cell_id>.e<epoch>`), or None if there is none (or its file is bad:
        named in a warning). Its own file first, then the parts: a compaction writes a part before it deletes the
        files it merged, so a row is in one of the two whenever get() looks."""
        check_key(table, key)
        if table == "epochs":
            m = _EPOCH_ROW.match(key)
            if m is None:
                return None
            cell, epoch = m["cell"], int(m["epoch"])
            t = self.epochs(cell)  # the cell's newest attempt, wherever its rows are (_one_attempt)
            rows = [r for r in t.to_pylist() if r["epoch"] == epoch]
            return rows[0] if rows else None
        t = self._read_one(table, self.path(table, f"{key}.parquet"), None)
        if t is None and table in COMPACTED and part_gen(key) is None:
            t = self._part_rows(table, {key}, None).drop_columns(["__filename"])
        return None if t is None or t.num_rows == 0 else t.to_pylist()[0]
    def check_tables(self, tables=("pretrained", "masks", "index_sets", "recipes", "searches", "trials")) -> None:
        """Scan each table once, every column: the lock holder calls it first, so bad files are moved aside before
        anything is planned from them, and later reads of a few columns see only checked files (a read of some
        columns checks those columns' types only). Epochs, the big table, is checked file by file as cells read it."""
        for t in tables:
            self._scan(t, None)

    def done_cells(self) -> set[str]:
        """Cells whose row says `done` (a dense baseline that tickets wait for). What a sweep still has to run is
        raydw.plan.Plan.todo, which also knows early stopping and tuned recipes."""
        t = self.read_table("trials", columns=["cell_id", "status"])
        return {c for c, s in zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()) if s == "done"}

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

    On object stores the lock is one conditional PUT (raydw.objectlock): of two drivers started together exactly
    one creates it; a lock left by a killed driver there is never taken over (it must be deleted by hand).

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

        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.store.fs.create_dir(self.store.path("locks"), recursive=True)
        except OSError as e:  # `locks` is a file, or the store cannot be written
            raise StorePathError(f"results store {self.store.uri}: cannot make its lock folder {self.store.path('locks')}: "
                                 f"{e}") from None
        if not self.store.local:  # object stores: create-if-absent (S3's conditional PUT), so exactly one driver wins
            holder = self._holder()
            try:
                made = holder is None and create_if_absent(self.store, ("locks", "driver.json"), json.dumps(me).encode())
            except ObjectLockError as e:
                raise StoreError(str(e)) from None
            if made:
                self.store.owner = True
                return self
            raise StoreLocked(self._refusal(holder or self._holder() or {}))
        # Local: every raydw process judges and takes the lock inside one flock()ed critical section
        # (locks/.guard; the kernel releases it when its holder dies), so a stale lock is taken over by exactly
        # one process: two cannot both read "stale", both remove it and both create their own.
        try:
            with self._guard():
                holder = self._holder()
                if holder is not None:
                    if not (holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])):
                        raise StoreLocked(self._refusal(holder))
                    # its driver was killed: keep the stale lock aside for the record, then create ours
                    os.replace(self.path, f"{self.path}.stale-{holder['pid']}")
                self._create(me)
        except OSError as e:  # a full or read-only disk: the lock cannot be written (ENOSPC, EROFS, EACCES)
            raise StoreError(f"results store {self.store.uri} is not writable: cannot write its lock "
                             f"{self.path} ({e.strerror or e})") from None
        self.store.owner = True
        return self

    def _create(self, me: dict) -> None:
        """Write the lock whole and create it exclusively: a temporary, then link(2), which fails if the name exists
        (so a reader never sees a half-written lock, and a killed writer never leaves an empty one)."""
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "w") as f:  # on a full disk the write (or its close) fails: the temporary goes all the same
                json.dump(me, f)
            os.link(tmp, self.path)
        except FileExistsError:
            raise StoreLocked(self._refusal(self._holder() or {})) from None
        except OSError:  # a filesystem without hard links: create-exclusive, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _guard(self):
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def held():
            fd = os.open(self.store.path("locks", ".guard"), os.O_CREAT | os.O_RDWR, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:  # a filesystem without flock: the exclusive create alone still refuses a second driver
                    pass
                yield
            finally:
                os.close(fd)  # releases the flock
        return held()

    def _refusal(self, holder: dict) -> str:
        if "unreadable" in holder:
            return (f"results store {self.store.uri} has a lock file {self.path} that is not a raydw lock "
                    f"({holder['unreadable']}). If no raydw driver is running on this store, delete it")
        return (f"results store {self.store.uri} is in use by another raydw driver (pid {holder.get('pid')} on "
                f"{holder.get('host')}, {holder.get('what')}, since {holder.get('since')}). Wait for it to finish, or "
                f"if that process is gone, delete {self.path}")

    def __exit__(self, *exc) -> None:
        self.store.owner = False
        if not self.store.local:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == _host():
                self._remove()
            return
        with self._guard():
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == _host():
                self._remove()

    def _holder(self) -> dict | None:
        """The lock's content; None if there is no lock; {"unreadable": why} for an empty or damaged one."""
        try:
            raw = self.store.read_bytes("locks", "driver.json")
        except FileNotFoundError:
            return None
        except OSError as e:
            return {"unreadable": f"cannot be read: {e}"}
        try:
            d = json.loads(raw)
        except ValueError:
            return {"unreadable": "empty" if not raw.strip() else f"not JSON: {raw[:40]!r}"}
        pid = d.get("pid") if isinstance(d, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2 ** 31:
            return {"unreadable": f"no valid pid in it: {raw[:60]!r}"}
        return d

    def _remove(self) -> None:
        try:
            self.store.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass


def _host() -> str:
    import socket

    return socket.gethostname()


def _alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def parquet_bytes(t: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, row_group_size=row_group_size)
    return buf.getvalue()


def config_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
