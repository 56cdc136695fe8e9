"""Read the results store into pandas: `raydw.results.load(uri, table="trials")`. Torch- and Ray-free."""
from __future__ import annotations

import pandas as pd

from raydw.store import SCHEMAS, Store

TABLES = tuple(SCHEMAS)


def load(uri: str = "./results", table: str = "trials", columns: list[str] | None = None) -> pd.DataFrame:
    """One table of the store as a DataFrame (an empty frame with the table's columns if nothing is stored yet)."""
    if table not in SCHEMAS:
        raise KeyError(f"unknown table {table!r}; known: {list(TABLES)}")
    df = Store(uri).read_table(table, columns=columns).to_pandas()
    if table == "epochs" and len(df):
        df = df.sort_values(["cell_id", "epoch"], ignore_index=True)
    return df
