"""One atomic file write for every local writer (the store's rows, raydw.store; the report's files,
raydw.reporting.report), and the one checked read of a store's own files (read_regular).

The data goes to a hidden temporary file in the same folder (same file system, so the rename is atomic), is fsynced,
then renamed over the target: a reader (pyarrow, DuckDB, a browser refreshing a live report) sees the old file or the
new one, never half of one. A write killed half-way leaves only the hidden temporary, which readers skip.
"""
from __future__ import annotations

import errno
import os
import stat
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


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file raydw wrote (a lock, a model's weights), opened without following a link and
    without blocking: a FIFO there used to hang the command forever (`raydw compact` on a store whose lock is a
    FIFO), and a link made raydw read its target (/dev/zero, a file outside the store). Either is an OSError that
    names what the path is; a missing file is FileNotFoundError as before."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if os.path.islink(path):
            raise OSError(f"{path} is a symbolic link (raydw writes regular files only; its target is not read)") from None
        raise e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise OSError(f"{path} is {kind} (raydw writes regular files only)")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def write_whole(path: str | Path, write) -> None:
    """`write(target)` for an output file the user named (`--out`, `convert OUTPUT`, `bench --json`), whole or not at
    all: a regular file (or a new one) is written to a hidden temporary beside it and renamed over it, so a full disk
    leaves no empty or half file under the name; a device or pipe (/dev/stdout) is written directly. A failure is an
    OSError naming the output (torch.save says a failed write as RuntimeError 'iostream error': said as the disk's)."""
    p = Path(path).expanduser()
    direct = p.exists() and not p.is_file()
    tmp = p if direct else p.parent / f".{p.name[:100]}.{os.getpid()}.tmp"
    try:
        write(str(tmp))
        if not direct:
            fd = os.open(tmp, os.O_RDONLY)  # on disk before the rename, as write_atomic's: a crash leaves old or new
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, p)
    except (OSError, RuntimeError) as e:
        if not direct:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.strerror:
            raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None
        full = os.statvfs(p.parent).f_bavail == 0 if p.parent.is_dir() else False
        why = os.strerror(errno.ENOSPC) if full else (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise OSError(errno.ENOSPC if full else errno.EIO, f"cannot write {path}: {why}") from None
