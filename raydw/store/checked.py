"""Reading a store's row files, every file checked: a file that is not a readable Parquet file of the table's schema
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

from raydw.bounded import short
from raydw.errors import StorePathError
from raydw.store.remote import bounded
from raydw.store.schema import CORE, EPOCH_ROW, QUARANTINE, SCHEMAS, part_gen, rank


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


WHY_LIMIT = 400  # characters of a skipped file's reason in its warning: one line a person reads


class CheckedFiles:
    """The file-level read side of raydw.store.Store (a mixin: it needs the store's fs, root, uri, local, owner,
    problems, path); raydw.store.reads.Reads builds the tables' reads on it."""

    # Every read goes through list_files / read_one / read_files, which check each file: a file that is not a readable
    # Parquet file of the table's schema (truncated, empty, junk, another schema, a wrong-typed column), a link, a
    # directory named *.parquet, or a second row under a key already stored (pick) is named in a warning and skipped
    # (moved to quarantine/ by the lock holder); the other rows are read as usual.
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
                names = short(pq.read_schema(path if self.local else self.fs.open_input_file(path)).names, 200)
            except Exception:  # noqa: BLE001 - only for the message
                names = "?"
            self._bad(table, path, "holds no row" if t.num_rows == 0 else
                      f"is not a {table} row: it lacks {lacking} (another schema; its columns: {names})")
            return None
        return t if columns is None else t.select(columns)
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
        if len(why) > WHY_LIMIT:  # the reason quotes the file (its columns, the reader's error): a file may make it huge
            why = why[: WHY_LIMIT - 3] + "..."  # (quarantine's .why.txt keeps it whole)
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

