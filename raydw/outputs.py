"""Where a command writes what the user asked for (`--out`, `export-mask OUT`, `convert OUTPUT`, `bench --json`).

Checked before any work is done, so a typo in a folder name costs a message, not a traceback after the work (or
a store read) is over. An output is never inside a results store (resolved paths, links followed): a `--out` naming
a row file would replace the table's rows. The one folder of a store raydw writes reports into, `report/`, is allowed
(the live report's default). Torch-free.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from raydw.spec import SpecError

# The folders that make a folder a raydw results store (raydw.store.SCHEMAS' tables and the store's own folders).
_STORE_FOLDERS = ("trials", "epochs", "masks", "index_sets", "pretrained", "searches", "recipes", "preflight", "locks",
                  "weights", "quarantine", "train", "tune")
REPORT_FOLDER = "report"  # inside a store, where `raydw sweep --live-report` writes by default


def _looks_like_store(folder: Path) -> bool:
    """A raydw store: a table folder holding a row file, or raydw's lock files. (A folder merely named `trials` is not.)"""
    if (folder / "locks" / ".guard").is_file() or (folder / "locks" / "driver.json").is_file():  # raydw's lock files
        return True  # (a folder merely named `locks`, as /tmp may hold, is not a store)
    for t in _STORE_FOLDERS[:8]:
        try:
            if (folder / t).is_dir() and any(f.suffix == ".parquet" for f in (folder / t).iterdir()):
                return True
        except OSError:
            continue
    return False


def _local_folder(uri) -> Path | None:
    """A store URI as the resolved local folder it names, or None for an object store (no local folder)."""
    text = str(uri)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(os.path.realpath(os.path.expanduser(text[7:] if text.startswith("file://") else text)))


def _store_root(path: Path, stores: tuple = ()) -> Path | None:
    """The store `path` lies inside (one of `stores`, the commands' own store URIs, or any folder above it that is a
    raydw store), or None. `report/` directly under a store is the one place inside it an output may go."""
    p = Path(os.path.realpath(path))
    # an object store (no local folder): a local output path is never inside it
    roots = [r for r in (_local_folder(s) for s in stores if s is not None) if r is not None]
    for a in (p, *p.parents):
        if a in roots or _looks_like_store(a):
            inside = p.relative_to(a).parts
            return None if inside and inside[0] == REPORT_FOLDER else a
    return None


def check_not_in_store(path: str | Path, what: str, stores: tuple = ()) -> None:
    root = _store_root(Path(path).expanduser(), stores)
    if root is not None:
        raise SpecError(f"{what}: {path} is inside the results store {root}; raydw never writes an output into a store "
                        f"(it could replace the store's rows). Give a path outside it (or under {root / REPORT_FOLDER} "
                        "for a report)")


def check_not_nested(uri, what: str) -> None:
    """A sweep's store is never inside another store (say, in its `trials/`): its files would sit among that store's,
    which a sweep or a compaction there treats as its own. A store itself may be named (a rerun resumes it)."""
    p = _local_folder(uri)
    outer = None if p is None else next((a for a in p.parents if _looks_like_store(a)), None)
    if outer is not None:
        raise SpecError(f"{what}: {uri} is inside the results store {outer}; a store inside another mixes their files. "
                        "Give a folder outside it")


def _writable_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise SpecError(f"{what}: folder {folder} does not exist; create it first (or fix the path)")
    if not folder.is_dir():
        raise SpecError(f"{what}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"{what}: folder {folder} is not writable by this user")


def _os_refusals(check):
    """A check whose stat()/mkdir() the OS refuses (a name longer than NAME_MAX, a loop of links, EACCES on a parent):
    a refusal naming the path, not an OSError traceback from inside the check."""
    @functools.wraps(check)
    def checked(path, what: str = "--out", *args, **kw):
        try:
            return check(path, what, *args, **kw)
        except OSError as e:
            raise SpecError(f"{what}: {str(path)[:200]!r} cannot be used as a path: {e.strerror or e}") from None
    return checked


@_os_refusals
def output_file(path: str | Path, what: str = "--out", stores: tuple = ()) -> Path:
    """A file the command will create or replace: its folder exists and is writable, it is not a folder, and it is
    not inside a results store (`stores`: the store URIs the command reads, besides any store found above it)."""
    p = Path(path).expanduser()
    if str(path) == "" or p.is_dir():
        raise SpecError(f"{what}: {str(path)!r} is a folder (or empty); give a file name")
    check_not_in_store(p, what, stores)
    _writable_folder(p.parent if str(p.parent) else Path("."), what)
    if p.exists() and not os.access(p, os.W_OK):
        raise SpecError(f"{what}: {p} exists and is not writable")
    return p


@_os_refusals
def output_dir(path: str | Path, what: str = "--out", stores: tuple = (), create: bool = True) -> Path:
    """A folder the command writes into, created (with its parents) if missing, as `raydw report` always did, and
    not inside a results store. `create=False`: checked only (created later, once the store has been opened)."""
    p = Path(path).expanduser()
    if str(path) == "":
        raise SpecError(f"{what}: empty path; give a folder")
    check_not_in_store(p, what, stores)
    if p.exists() and not p.is_dir():
        raise SpecError(f"{what}: {p} is a file, not a folder")
    if not create:
        first = next((a for a in [p, *p.parents] if a.exists()), Path("."))
        if not first.is_dir():
            raise SpecError(f"{what}: cannot create folder {p}: {first} is a file")
        _writable_folder(first, what)
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, permissions, a read-only file system
        raise SpecError(f"{what}: cannot create folder {p}: {e.strerror or e}") from None
    _writable_folder(p, what)
    return p
