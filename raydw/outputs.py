"""Where a command writes what the user asked for (`--out`, `export-mask OUT`, `convert OUTPUT`, `bench --json`).

Checked before any work is done, so a typo in a folder name costs a message, not a traceback after the work (or
a store read) is over. Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from raydw.spec import SpecError


def _writable_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise SpecError(f"{what}: folder {folder} does not exist; create it first (or fix the path)")
    if not folder.is_dir():
        raise SpecError(f"{what}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"{what}: folder {folder} is not writable by this user")


def output_file(path: str | Path, what: str = "--out") -> Path:
    """A file the command will create or replace: its folder exists and is writable, and it is not a folder."""
    p = Path(path).expanduser()
    if str(path) == "" or p.is_dir():
        raise SpecError(f"{what}: {str(path)!r} is a folder (or empty); give a file name")
    _writable_folder(p.parent if str(p.parent) else Path("."), what)
    if p.exists() and not os.access(p, os.W_OK):
        raise SpecError(f"{what}: {p} exists and is not writable")
    return p


def output_dir(path: str | Path, what: str = "--out") -> Path:
    """A folder the command writes into, created (with its parents) if missing, as `raydw report` always did."""
    p = Path(path).expanduser()
    if str(path) == "":
        raise SpecError(f"{what}: empty path; give a folder")
    if p.exists() and not p.is_dir():
        raise SpecError(f"{what}: {p} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, permissions, a read-only file system
        raise SpecError(f"{what}: cannot create folder {p}: {e.strerror or e}") from None
    _writable_folder(p, what)
    return p
