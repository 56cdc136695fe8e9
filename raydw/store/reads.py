"""The tables' reads of a store: the keys stored, rows by key or all of them (one scan), a cell's epoch rows, one
row, the compacted parts. Each file is read checked, bad ones named and quarantined, one row kept per key
(raydw.store.checked)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from raydw.errors import StoreError
from raydw.store.checked import CheckedFiles, one_attempt  # noqa: F401 - one_attempt stays importable from here
from raydw.store.schema import COMPACTED, CORE, EPOCH_ROW, KEYS, SCHEMAS, check_columns, check_key, part_gen


class Reads(CheckedFiles):
    """The read side of raydw.store.Store (a mixin: it needs the store's fs, root, uri, local, owner, problems, path)."""

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

