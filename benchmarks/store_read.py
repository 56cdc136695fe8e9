"""Whole-table read of the results store: the file-by-file loop against the pyarrow.dataset scan.

    python benchmarks/store_read.py [--rows 20000] [--store DIR] [--repeat 3]

Writes `rows` epoch rows (20 epochs per cell, one file each, as a sweep does) into DIR (a temporary folder by
default, reused when it already holds them), then reads the whole `epochs` table both ways, interleaved, and
prints the seconds of each. Results: docs/results-schema.md, "Reading at scale".
"""
from __future__ import annotations

import argparse
import tempfile
import time

from raydw.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="epoch rows (files) to read")
    ap.add_argument("--store", help="store folder (default: a new temporary folder)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    store = Store(a.store or tempfile.mkdtemp(prefix="raydw-store-bench-"))
    have = len(store.names("epochs"))
    if have > a.rows:
        raise SystemExit(f"{store.uri} already holds {have} epoch rows, more than --rows {a.rows}: use another --store")
    if have < a.rows:
        t = time.perf_counter()
        for i in range(have, a.rows):
            c, e = divmod(i, 20)
            store.write_row("epochs", {"cell_id": f"c{c:06d}", "epoch": e, "lr": 0.1, "val_sa": 0.5, "val_ra": 0.2},
                            name=f"c{c:06d}.e{e:04d}")
        print(f"wrote {a.rows - have} rows in {time.perf_counter() - t:.1f} s to {store.uri}")
    names = store.names("epochs")
    for _ in range(a.repeat):
        t = time.perf_counter()
        by_file = store.read_table("epochs", names)  # the explicit-names path: one file after another
        t_file = time.perf_counter() - t
        t = time.perf_counter()
        scan = store.read_table("epochs")  # the whole-table path: pyarrow.dataset
        t_scan = time.perf_counter() - t
        assert by_file.equals(scan), "the two reads disagree"
        print(f"{len(names)} rows: file by file {t_file:.2f} s, dataset scan {t_scan:.2f} s")


if __name__ == "__main__":
    main()
