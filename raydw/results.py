"""Read the results store into pandas: `raydw.results.load(uri, table="trials")`. Torch- and Ray-free."""
from __future__ import annotations

import pandas as pd

from raydw.store import SCHEMAS, Store, check_columns

TABLES = tuple(SCHEMAS)
PHASES = ("main", "tune")


def load(uri: str = "./results", table: str = "trials", columns: list[str] | None = None,
         phase: str | None = "main") -> pd.DataFrame:
    """One table of the store as a DataFrame (an empty frame with the table's columns if nothing is stored yet).

    trials only: `phase` picks the rows: "main" (the default: the sweep's cells; rows written before the column
    existed count as main), "tune" (tuning trials of dense recipes, docs/tuning.md), or None (every row).
    """
    if table not in SCHEMAS:
        raise KeyError(f"unknown table {table!r}; known: {list(TABLES)}")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {list(PHASES)} or None (all rows)")
    check_columns(table, columns)  # before the store is opened: an argument error names the argument, not a file
    by_phase = table == "trials" and phase is not None
    needs = ["phase"] if by_phase else ["cell_id", "epoch"] if table == "epochs" else []
    extra = [] if columns is None else [k for k in needs if k not in columns]
    df = Store(uri).read_table(table, columns=None if columns is None else [*columns, *extra]).to_pandas()
    if by_phase:
        df = df[df["phase"].fillna("main") == phase].reset_index(drop=True)
    if table == "epochs" and len(df):
        df = df.sort_values(["cell_id", "epoch"], ignore_index=True)
    if extra:  # read for the phase filter or the sort only
        df = df.drop(columns=extra)
    return df
