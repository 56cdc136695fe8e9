"""Where a store is and how its bytes are made: the URI resolved to a filesystem, a local root checked, Parquet
bytes, the JSON every config column is written in."""
from __future__ import annotations

import errno
import io
import json
import os
import stat
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydw.errors import StorePathError
from raydw.remote import check_uri, filesystem


def check_local_root(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise StorePathError(f"results store {path} is a symbolic link to {os.readlink(path)!r}, which does not "
                                 "exist: point the store at a real folder") from None
        return  # created on first write
    except OSError as e:  # Others (EACCES): check_writable says "not writable", exit 3
        if e.errno == errno.ELOOP:
            raise StorePathError(f"results store {path} cannot be used: it is a loop of symbolic links "
                                 f"({e.strerror}); point the store at a real folder") from None
        if e.errno == errno.ENOTDIR:  # a file where a parent folder should be: a bad path, the user must fix it
            raise StorePathError(f"results store {path} is not writable: {e.strerror} (a part of its path is a "
                                 "file); point the store at a folder") from None
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StorePathError(f"results store {path} is not a folder")


def resolve(uri) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, root path on it, canonical URI). Local paths become absolute, so Ray workers agree. Anything
    but a path or URI (None, a number, "") is refused; an object store is opened within a time bound (raydw.remote)."""

    uri = check_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        # `storage: "~/results"` in YAML reaches here unexpanded (only a shell expands ~): expand it, else a
        # folder named `~` appears under the working directory.
        path = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme == "file" else uri))
        return pafs.LocalFileSystem(), path, path
    fs, path = filesystem(uri)
    return fs, path, uri


def parquet_bytes(t: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, row_group_size=row_group_size)
    return buf.getvalue()


def config_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
