"""Opening a store URI: what a URI may be, and every call to an object store bounded in time and said in a sentence.

pyarrow raises OSError (with the SDK's multi-line text) for an unreachable endpoint, a missing bucket or absent
credentials, and GCS's client retries for 15 minutes without a network. Here: the filesystem is made and the bucket
asked for once, in a thread that is waited for at most `timeout()` seconds; GCS is built with a retry limit of the
same bound, so later calls are bounded too (S3's SDK has its own connect and request timeouts). A failure becomes
one StoreError naming the store (exit 3 from the CLI). Torch-free.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import threading
from urllib.parse import urlparse

import pyarrow.fs as pafs

from raydw.errors import StoreError, StorePathError

DEFAULT_TIMEOUT_S = 20.0
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")  # what pyarrow's FileSystem.from_uri opens


MAX_TIMEOUT_S = 86400.0  # a day: threading's waits overflow near 1e9 s (time_t), and no answer is worth more


def timeout() -> float:
    """Seconds an object store may take to answer one call (RAYDW_REMOTE_TIMEOUT_S, default 20). A value that is not
    a number of seconds in (0, a day] is refused by name: it used to fall back to 20 s unsaid (abc, nan, -1), or
    crash every remote command with OverflowError (1e10)."""
    text = os.environ.get("RAYDW_REMOTE_TIMEOUT_S")
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT_S
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= MAX_TIMEOUT_S:
        raise StorePathError(f"RAYDW_REMOTE_TIMEOUT_S={text[:40]!r} is not a number of seconds above 0 and at most "
                             f"{MAX_TIMEOUT_S:g}; set it so (or unset it for the default {DEFAULT_TIMEOUT_S:g} s)")
    return v


def check_uri(uri) -> str:
    """The URI as text, or ValueError: None, a number, an empty string name no store (they used to read as `./None`,
    `./5` or the working directory: an empty store)."""

    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise StorePathError(f"results store: {uri!r} ({type(uri).__name__}) is not a store path or URI; give a "
                             "folder or a URI such as s3://bucket/path")
    if not uri.strip() or "\0" in uri:
        raise StorePathError(f"results store: {uri!r} is not a store path or URI (empty, or holds a NUL)")
    parsed = urlparse(uri)
    if parsed.scheme == "file" and not parsed.path:
        raise StorePathError(f"results store: {uri!r} names no folder (file:///path/to/store)")
    if "://" in uri and parsed.scheme not in SCHEMES:
        raise StorePathError(f"results store {uri}: {parsed.scheme!r} is not a storage scheme raydw can use; "
                             f"use a folder or one of {', '.join(s + '://' for s in SCHEMES)}")
    if parsed.scheme in SCHEMES and parsed.scheme != "file" and not parsed.netloc:
        raise StorePathError(f"results store {uri}: names no bucket ({parsed.scheme}://BUCKET/path)")
    return uri


def _sentence(uri: str, e: BaseException) -> str:
    text = " ".join(str(e).split())  # the SDK's text is several lines: one line
    if len(text) > 300:
        text = text[:297] + "..."
    return f"results store {uri} cannot be reached: {text or type(e).__name__}"


_ABANDONED: list[threading.Thread] = []  # calls that outlived their bound, still inside pyarrow's client


def exit_code(code: int) -> int:
    """The CLI's exit, once its sentence is printed. A call abandoned by `bounded` is still running inside pyarrow's
    C++ client; the interpreter's shutdown under it crashed (SIGSEGV, exit -11, seen with gs:// and no network),
    so the process then leaves without finalizing, its output flushed first."""
    if any(t.is_alive() for t in _ABANDONED):
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more to say
                pass
        os._exit(code)
    return code


def bounded(fn, uri: str, what: str):
    """fn() in a daemon thread, waited for at most timeout() s; its OSError (or a hang) as one StoreError."""

    limit = timeout()  # a bad RAYDW_REMOTE_TIMEOUT_S is refused before any call starts
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=run, name=f"raydw-remote-{what}", daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        _ABANDONED.append(t)
        raise StoreError(f"results store {uri}: no answer within {limit:g} s ({what}); check the network and the "
                         "endpoint (RAYDW_REMOTE_TIMEOUT_S sets the bound)")
    if "error" in box:
        e = box["error"]
        if isinstance(e, (OSError, ValueError)) or type(e).__module__.startswith("pyarrow"):
            raise StoreError(_sentence(uri, e)) from None
        raise e
    return box["value"]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) of an object store URI, made within the time bound."""
    parsed = urlparse(uri)
    if parsed.scheme in ("gs", "gcs") and not parsed.query:
        # pyarrow's default GCS retry limit is 15 minutes: a missing network would hang every command that long
        def make():
            fs = pafs.GcsFileSystem(retry_time_limit=dt.timedelta(seconds=timeout()))
            return fs, (parsed.netloc + parsed.path).rstrip("/")
        return bounded(make, uri, "opening it")
    return bounded(lambda: pafs.FileSystem.from_uri(uri), uri, "opening it")


def probe(fs: pafs.FileSystem, path: str, uri: str) -> None:
    """Ask for the bucket once (bounded): unreachable, refused or missing is said now, not read as an empty store."""

    bucket = path.strip("/").split("/", 1)[0]
    info = bounded(lambda: fs.get_file_info(bucket), uri, "looking up its bucket")
    if info.type == pafs.FileType.NotFound:
        raise StoreError(f"results store {uri}: the bucket {bucket!r} does not exist (or these credentials cannot see "
                         "it); check the URI")
