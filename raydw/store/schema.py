"""The store's tables: their schemas, keys and core columns, how their files are named, which copy of a row a read
keeps, and the checks of what a caller asks for (ids, columns). Torch- and filesystem-free."""
from __future__ import annotations

import re

import pyarrow as pa

from raydw.bounded import short
from raydw.errors import StoreKeyError
from raydw.outcomes import COLUMNS as OUTCOME_COLUMNS

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

TEMPORARY = re.compile(r"^\.[0-9a-f]{32}\.tmp$")  # write_bytes' hidden temporary names
LOCK_TEMPORARY = re.compile(r"^driver\.json\.[0-9a-f]{32}\.tmp$")  # StoreLock._create's, in locks/
# Tables whose rows grow with cells: written per cell, compacted into parts (raydw.compact). The others grow with
# pre-trainings, masks and fractions (hundreds of rows at most) and keep one file per row.
COMPACTED = ("trials", "epochs")
PART = re.compile(r"^part-(\d{6})-[0-9a-f]{8}$")  # a compacted file's name (without .parquet); the number orders them
EPOCH_ROW = re.compile(r"^(?P<cell>.+)\.e(?P<epoch>\d{4,})$")  # an older store's one-epoch file name; a get() key


def part_gen(base: str) -> int | None:
    """The generation of a compacted file (its name without .parquet), None for any other file."""
    m = PART.match(base)
    return int(m.group(1)) if m else None


def rank(table: str, base: str, key: tuple) -> tuple[int, int]:
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



_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # every id raydw makes (hex digests, names, <cell>.e<epoch>)


def check_key(table: str, key) -> str:
    """`key` as a row id of `table`, or StoreKeyError: one path component of letters, digits, `.`, `_`, `-`, not
    starting with a dot (`../x`, `/etc/x`, `a/b` never reach a path join)."""
    if not isinstance(key, str) or not _KEY.match(key):
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
