"""One atomic file write for every local writer: the store's rows (raydw.store) and the report's files (raydw.reporting.report).

The data goes to a hidden temporary file in the same folder (same file system, so the rename is atomic), is fsynced,
then renamed over the target: a reader (pyarrow, DuckDB, a browser refreshing a live report) sees the old file or the
new one, never half of one. A write killed half-way leaves only the hidden temporary, which readers skip.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = path.parent / f".{uuid.uuid4().hex}.tmp"  # the name raydw.store's clean-up of killed writes looks for
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
