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

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydw import outcomes
from raydw.atomic import write_atomic

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
    *[(c, pa.binary()) for c in outcomes.COLUMNS],
    # eval.final_attack (e.g. autoattack) and test RA under it and the eval attack together, as ra / ra_at_* / ra_last.
    ("final_attack", pa.string()), ("ra_final", pa.float64()), ("ra_final_at_sa_best", pa.float64()),
    ("ra_final_at_ra_best", pa.float64()), ("ra_final_last", pa.float64()),
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
# Columns every row raydw has ever written to a table holds (non-null): a file whose rows lack one is not a row of this
# table (a Parquet file of another schema would otherwise read as a row of nulls). Newer columns may be missing.
CORE = {"trials": ("cell_id", "status"), "epochs": ("cell_id", "epoch"), "masks": ("mask_id", "bits"),
        "index_sets": ("index_set_id", "indices"), "pretrained": ("pretrained_id", "arch"), "searches": ("search_id",),
        "recipes": ("tune_id", "recipe")}
QUARANTINE = "quarantine"  # <store>/quarantine/<table>/<file>.<time> (+ .why.txt): bad files a sweep moved aside


_TEMPORARY = re.compile(r"^\.[0-9a-f]{32}\.tmp$")  # write_bytes' hidden temporary names


class StoreError(RuntimeError):
    pass


class StorePathError(StoreError):
    """The store's path itself is unusable (a symlink loop, a file, a dangling link): the user must fix it."""


def _row_name(table: str, row: dict) -> str | None:
    """The file name (without .parquet) raydw writes a row under: its key (epochs: cell and epoch)."""
    if table == "epochs":
        return None if row.get("epoch") is None else f"{row.get('cell_id')}.e{row['epoch']:04d}"
    return row.get(KEYS[table])


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
        if self.local:
            _check_local_root(self.root)
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
            for i in self.fs.get_file_info(sel):
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
        return [p.rsplit("/", 1)[-1][: -len(".parquet")] for p in self._list(table)]

    def read_table(self, table: str, names: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of a table: all of them (one dataset scan), or those stored under `names`; a name whose file is
        missing or bad is left out (a bad one with a warning)."""
        schema = SCHEMAS[table]
        if names is None:  # the whole table: one multi-threaded dataset scan (docs/results-schema.md, "Reading at scale")
            return self._scan(table, columns)
        parts = [t for t in (self._read_one(table, self.path(table, f"{n}.parquet"), columns) for n in names) if t is not None]
        if not parts:
            empty = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            return empty.empty_table()
        return pa.concat_tables(parts)

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
        """Every row of a table. pyarrow.dataset opens the files on its thread pool (one file per row makes a
        file-by-file loop the bottleneck); columns that rows written by an older raydw lack read as nulls.
        The fast scan also reads the table's core columns and the file names: only when it fails (a bad file) or a
        core column is null (a file of another schema) are the files read one by one, each checked (_read_one).
        Then a key stored in two files is said, and only the file named after it is kept."""
        schema = SCHEMAS[table]
        files = self._list(table)
        want = list(columns) if columns is not None else list(schema.names)
        if not files:
            return pa.schema([schema.field(c) for c in want]).empty_table()
        key_cols = ("cell_id", "epoch") if table == "epochs" else (KEYS[table],)
        read = list(dict.fromkeys([*want, *CORE[table], *key_cols]))  # each once: a core column can be the key too
        try:
            t = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table(columns=[*read, "__filename"])
            if any(t.column(c).null_count for c in CORE[table]):
                t = None
        except (pa.ArrowException, OSError, ValueError, TypeError):
            t = None
        if t is None:  # some file is bad: find it, read the others
            parts = []
            for f in files:
                one = self._read_one(table, f, read)
                if one is not None:
                    parts.append(one.append_column("__filename", pa.array([f] * one.num_rows, pa.string())))
            if not parts:
                return pa.schema([schema.field(c) for c in want]).empty_table()
            t = pa.concat_tables(parts)
        t = self._drop_duplicates(table, t, key_cols)
        return t.select(want)

    def _drop_duplicates(self, table: str, t: pa.Table, key_cols: tuple[str, ...]) -> pa.Table:
        import pyarrow.compute as pc

        if len(key_cols) == 1:
            unique = pc.count_distinct(t.column(key_cols[0])).as_py() == t.num_rows
        else:
            unique = t.group_by(list(key_cols)).aggregate([]).num_rows == t.num_rows
        if unique:  # the common case: one cheap pass over the key column
            return t
        keys = list(zip(*(t.column(c).to_pylist() for c in key_cols)))
        files = t.column("__filename").to_pylist()
        by_key: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            by_key.setdefault(k, []).append(i)
        drop = set()
        for k, rows in by_key.items():
            if len(rows) < 2:
                continue
            rowd = dict(zip(key_cols, k))
            own = f"{_row_name(table, rowd)}.parquet"
            keep = next((i for i in rows if files[i].rsplit("/", 1)[-1] == own), rows[0])
            for i in rows:
                if i != keep:
                    drop.add(i)
                    self._bad(table, files[i], f"a second row with the key {'/'.join(map(str, k))} (already in "
                                               f"{files[keep].rsplit('/', 1)[-1]}, which is kept): a copied file?")
        mask = pa.array([i not in drop for i in range(t.num_rows)])
        return t.filter(mask)

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
        """The row stored under `key`, or None if there is none (or its file is bad: named in a warning)."""
        t = self._read_one(table, self.path(table, f"{key}.parquet"), None)
        return None if t is None else t.to_pylist()[0]

    def check_tables(self, tables=("pretrained", "masks", "index_sets", "recipes", "searches", "trials")) -> None:
        """Scan each table once, every column: the lock holder calls it first, so bad files are moved aside before
        anything is planned from them, and later reads of a few columns see only checked files (a read of some
        columns checks those columns' types only). Epochs, the big table, is checked file by file as cells read it."""
        for t in tables:
            self._scan(t, None)

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

        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.store.fs.create_dir(self.store.path("locks"), recursive=True)
        except OSError as e:  # `locks` is a file, or the store cannot be written
            raise StorePathError(f"results store {self.store.uri}: cannot make its lock folder {self.store.path('locks')}: "
                                 f"{e}") from None
        if not self.store.local:  # object stores: best effort, no O_EXCL
            holder = self._holder()
            if holder is None:
                self.store.write_bytes(("locks", "driver.json"), json.dumps(me).encode())
                self.store.owner = True
                return self
            raise StoreLocked(self._refusal(holder))
        # Local: every raydw process judges and takes the lock inside one flock()ed critical section
        # (locks/.guard; the kernel releases it when its holder dies), so a stale lock is taken over by exactly
        # one process: two cannot both read "stale", both remove it and both create their own.
        with self._guard():
            holder = self._holder()
            if holder is not None:
                if not (holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])):
                    raise StoreLocked(self._refusal(holder))
                # its driver was killed: keep the stale lock aside for the record, then create ours
                os.replace(self.path, f"{self.path}.stale-{holder['pid']}")
            self._create(me)
        self.store.owner = True
        return self

    def _create(self, me: dict) -> None:
        """Write the lock whole and create it exclusively: a temporary, then link(2), which fails if the name exists
        (so a reader never sees a half-written lock, and a killed writer never leaves an empty one)."""
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            json.dump(me, f)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            raise StoreLocked(self._refusal(self._holder() or {})) from None
        except OSError:  # a filesystem without hard links: create-exclusive, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
        finally:
            os.unlink(tmp)

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
            if holder and holder.get("pid") == os.getpid():
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


def config_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
