"""Reading a store's tables, every file checked: a file that is not a readable Parquet file of the table's schema
(truncated, empty, junk, another schema, a wrong-typed column), a link, a folder named *.parquet, or a second row
under a key already stored is named in a warning and skipped (moved to quarantine/ by the lock holder); the other
rows are read as usual. A row in two files (a compaction between writing its part and deleting its sources) is kept
once, by precedence (schema.rank); a cell's epoch rows are those of its newest attempt (one_attempt)."""
from __future__ import annotations

import os
import stat
import sys
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydw.errors import StoreError, StorePathError
from raydw.remote import bounded
from raydw.store.schema import (COMPACTED, CORE, EPOCH_ROW, KEYS, QUARANTINE, SCHEMAS, check_columns, check_key,
                                part_gen, rank)


def one_attempt(t: pa.Table) -> pa.Table:
    """Epoch rows of one attempt per cell. A cell's rows may sit in several files: its own file (the newest attempt),
    an older store's one-epoch files, compacted parts. The file of higher precedence (schema.rank) is the newer attempt;
    its rows say where their run segment started (`resumed_from`), and a lower file's rows are kept only for the
    epochs before that (the rows a resumed run continued from): a retry that started again at epoch 0 hides all of an
    older attempt's rows, not just the epochs it has re-run so far. Rows without `resumed_from` (hand-made) set no
    bound; pick then keeps one copy per epoch. Rows of a file named after nothing (a copy) are left to pick."""
    cells, files = t.column("cell_id"), t.column("__filename")
    if "resumed_from" not in t.column_names or \
            t.group_by(["cell_id", "__filename"]).aggregate([]).num_rows == pc.count_distinct(cells).as_py():
        return t  # every cell's rows come from one file: the common case
    epochs, starts = t.column("epoch").to_pylist(), t.column("resumed_from").to_pylist()
    by_cell: dict[str, dict[tuple, list[int]]] = {}
    for i, (c, f) in enumerate(zip(cells.to_pylist(), files.to_pylist())):
        base = f.rsplit("/", 1)[-1][: -len(".parquet")]
        g = part_gen(base)
        m = EPOCH_ROW.match(base)
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


class Reads:
    """The read side of raydw.store.Store (a mixin: it needs the store's fs, root, uri, local, owner, problems, path)."""

    # Every read goes through _list / _read_one / _scan, which check each file: a file that is not a readable Parquet
    # file of the table's schema (truncated, empty, junk, another schema, a wrong-typed column), a link, a directory
    # named *.parquet, or a second row under a key already stored is named in a warning and skipped (moved to
    # quarantine/ by the lock holder); the other rows are read as usual.
    def list_files(self, table: str) -> list[str]:
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
        files = [p.rsplit("/", 1)[-1][: -len(".parquet")] for p in self.list_files(table)]
        own = [n for n in files if part_gen(n) is None]
        if len(own) == len(files):
            return own
        return sorted(set(own) | set(self.part_rows(table, None, [KEYS[table]]).column(KEYS[table]).to_pylist()))

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
                m = EPOCH_ROW.match(n)
                if m:
                    want.setdefault(m["cell"], set()).add(int(m["epoch"]))
            rows = {(r["cell_id"], r["epoch"]): r for c, eps in want.items()
                    for r in self.epochs(c).to_pylist() if r["epoch"] in eps}
            got = [rows[(m["cell"], int(m["epoch"]))] for m in map(EPOCH_ROW.match, names)
                   if m and (m["cell"], int(m["epoch"])) in rows]
            t = pa.Table.from_pylist(got, schema=schema) if got else schema.empty_table()
            return t if columns is None else t.select(columns)
        for n in names:
            check_key(table, n)
        found = {n: t for n in names if (t := self.read_one(table, self.path(table, f"{n}.parquet"), columns)) is not None}
        rest = [n for n in names if n not in found and part_gen(n) is None]
        if rest and table in COMPACTED:
            key = KEYS[table]
            t = self.part_rows(table, set(rest), None if columns is None else list(dict.fromkeys([*columns, key])))
            t = t.select(columns or schema.names).append_column(key + "__key", t.column(key))
            by = {k: t.slice(i, 1).drop_columns([key + "__key"]) for i, k in enumerate(t.column(key + "__key").to_pylist())}
            found.update((n, by[n]) for n in rest if n in by)
        parts = [found[n] for n in names if n in found]
        return pa.concat_tables(parts) if parts else empty

    def epochs(self, cell_id: str, columns: list[str] | None = None) -> pa.Table:
        """Every epoch row of one cell, by epoch, one row each: its file, an older store's one-epoch files and the
        compacted parts, the copy of higher precedence kept (see schema.rank)."""
        schema = SCHEMAS["epochs"]
        check_key("epochs", cell_id)
        pieces = []
        for f in [self.path("epochs", f"{cell_id}.parquet"),
                  *(p for p in self.list_files("epochs") if (m := EPOCH_ROW.match(p.rsplit("/", 1)[-1][:-8])) and m["cell"] == cell_id)]:
            t = self.read_one("epochs", f, None)
            if t is not None:
                pieces.append(t.append_column("__filename", pa.array([f] * t.num_rows, pa.string())))
        pieces.append(self.part_rows("epochs", {cell_id}, None))
        t = self.pick("epochs", pa.concat_tables(pieces), ("cell_id", "epoch"), quiet=True)
        t = t.filter(pc.equal(t.column("cell_id"), cell_id)).drop_columns(["__filename"]).sort_by("epoch")
        return t.cast(schema) if columns is None else t.select(columns)

    def _parts(self, table: str) -> list[str]:
        """The table's compacted files, newest first."""
        if table not in COMPACTED:
            return []
        named = [(part_gen(p.rsplit("/", 1)[-1][:-8]), p) for p in self.list_files(table)]
        return [p for g, p in sorted(((g, p) for g, p in named if g is not None), reverse=True)]

    def part_rows(self, table: str, keys: set[str] | None, columns: list[str] | None) -> pa.Table:
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
            t = self.pick(table, t, key_cols, quiet=True)
            return t.select([*(columns or schema.names), "__filename"])
        raise StoreError(f"results store {self.uri}: the {table} parts kept vanishing while read (a compaction every "
                         "moment?); try again")

    def _part_rows_one_by_one(self, table, parts, keys, read) -> pa.Table:
        """A part that fails the fast read (damaged): each part checked, the bad one named (and moved aside)."""
        out = []
        for p in parts:
            one = self.read_one(table, p, read)
            if one is not None:
                if keys is not None:
                    one = one.filter(pc.is_in(one.column(KEYS.get(table, "cell_id")), value_set=pa.array(sorted(keys), pa.string())))
                out.append(one.append_column("__filename", pa.array([p] * one.num_rows, pa.string())))
        schema = SCHEMAS[table]
        if not out:
            return pa.schema([*(schema.field(c) for c in read), pa.field("__filename", pa.string())]).empty_table()
        return pa.concat_tables(out)

    def read_one(self, table: str, path: str, columns: list[str] | None) -> pa.Table | None:
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
        one, each checked (read_one). A row in two files is kept once (pick).
        Exactly once while a compaction runs: a compaction writes its part before it deletes the files it merged,
        so a file that vanished between the listing and its read, or a part that appeared meanwhile, means rows
        may have moved: the table is listed and read again."""
        schema = SCHEMAS[table]
        want = list(columns) if columns is not None else list(schema.names)
        key_cols = ("cell_id", "epoch") if table == "epochs" else (KEYS[table],)
        read = list(dict.fromkeys([*want, *CORE[table], *key_cols, *(["resumed_from"] if table == "epochs" else [])]))
        # (each once: a core column can be the key too; epochs: resumed_from tells one attempt's rows, one_attempt)
        for _ in range(10):
            files = self.list_files(table)
            if not files:
                return pa.schema([schema.field(c) for c in want]).empty_table()
            t, moved = self.read_files(table, files, read)
            if not moved and table in COMPACTED:
                before = {f for f in files if part_gen(f.rsplit("/", 1)[-1][:-8]) is not None}
                moved = any(part_gen(f.rsplit("/", 1)[-1][:-8]) is not None and f not in before for f in self.list_files(table))
            if not moved:
                break
        else:
            raise StoreError(f"results store {self.uri}: the {table} table kept changing while read (a compaction every "
                             "moment?); try again")
        if t is None:
            return pa.schema([schema.field(c) for c in want]).empty_table()
        t = self.pick(table, t, key_cols)
        if table in COMPACTED:  # by key, as one file per row listed by name used to give, whatever files hold the rows
            t = t.sort_by([(c, "ascending") for c in key_cols])
        return t.select(want)

    def read_files(self, table: str, files: list[str], read: list[str]) -> tuple[pa.Table | None, bool]:
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
            one = self.read_one(table, f, read)
            if one is None:  # gone: moved away by another process, unless this one just moved it to quarantine/
                vanished = vanished or (f not in self.problems and self.fs.get_file_info(f).type == pafs.FileType.NotFound)
                continue
            parts.append(one.append_column("__filename", pa.array([f] * one.num_rows, pa.string())))
        return (pa.concat_tables(parts) if parts else None), vanished

    def pick(self, table: str, t: pa.Table, key_cols: tuple[str, ...], quiet: bool = False) -> pa.Table:
        """One row per key. Copies left by a compaction (a part and the files it merged, or two parts) are the same
        rows or an older and a newer one: the copy of higher precedence is kept silently (schema.rank). A copy in a file
        named after none of its rows (copied by hand) is named in a warning (and moved aside by the lock holder)."""
        if table == "epochs":
            t = one_attempt(t)
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
            keep = max(rows, key=lambda i: (rank(table, base[i], k), -rows.index(i)))
            for i in rows:
                if i == keep:
                    continue
                drop.add(i)
                if not quiet and rank(table, base[i], k)[0] == 0:
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
            m = EPOCH_ROW.match(key)
            if m is None:
                return None
            cell, epoch = m["cell"], int(m["epoch"])
            t = self.epochs(cell)  # the cell's newest attempt, wherever its rows are (one_attempt)
            rows = [r for r in t.to_pylist() if r["epoch"] == epoch]
            return rows[0] if rows else None
        t = self.read_one(table, self.path(table, f"{key}.parquet"), None)
        if t is None and table in COMPACTED and part_gen(key) is None:
            t = self.part_rows(table, {key}, None).drop_columns(["__filename"])
        return None if t is None or t.num_rows == 0 else t.to_pylist()[0]
    def check_tables(self, tables=("pretrained", "masks", "index_sets", "recipes", "searches", "trials")) -> None:
        """Scan each table once, every column: the lock holder calls it first, so bad files are moved aside before
        anything is planned from them, and later reads of a few columns see only checked files (a read of some
        columns checks those columns' types only). Epochs, the big table, is checked file by file as cells read it."""
        for t in tables:
            self._scan(t, None)

