"""The results store: Parquet tables under one storage URI, atomic writes, files that grow with cells, not epochs.

Layout (every table is a folder of Parquet files with one fixed schema; `raydw.results.load` / `Store.read_table`
read it with one call, pandas, pyarrow and DuckDB read a folder or a glob such as `trials/*.parquet` directly):
    trials/<cell_id>.parquet              one row per finished (or failed) cell; rewritten by a retry
    epochs/<cell_id>.parquet              every epoch row of one cell, rewritten whole as each epoch arrives
    trials/part-<gen>-<id>.parquet,       compacted: the rows of many finished cells in one large file, sorted by
      epochs/part-<gen>-<id>.parquet      cell (raydw.store.compact: `raydw compact STORE`)
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

The package by concern: schema.py (tables, keys, file names, which copy of a row a read keeps, id and column checks),
files.py (URI -> filesystem, Parquet bytes, config JSON), checked.py (each row file checked, quarantine, one row
per key), reads.py (the tables' reads), core.py (the Store: paths, atomic writes), lock.py (one driver per store). `from raydw.store import Store, ...` is the public surface.
"""
from raydw.errors import StoreError, StoreKeyError, StorePathError
from raydw.store.core import Store
from raydw.store.files import config_json, parquet_bytes
from raydw.store.lock import StoreLock, StoreLocked
from raydw.store.checked import one_attempt
from raydw.store.schema import (COMPACTED, CORE, EPOCH_ROW, EPOCHS, INDEX_SETS, KEYS, MASKS, PART, PREFLIGHT, PRETRAINED,
                                QUARANTINE, RECIPES, SCHEMAS, SEARCHES, TRIALS, check_columns, check_key, part_gen, rank)

__all__ = ["Store", "StoreError", "StoreKeyError", "StorePathError", "StoreLock", "StoreLocked", "config_json",
           "parquet_bytes", "one_attempt", "COMPACTED", "CORE", "EPOCH_ROW", "EPOCHS", "INDEX_SETS", "KEYS", "MASKS",
           "PART", "PREFLIGHT", "PRETRAINED", "QUARANTINE", "RECIPES", "SCHEMAS", "SEARCHES", "TRIALS", "check_columns",
           "check_key", "part_gen", "rank"]
