"""Argument types of the `raydw` command: each refuses bad input with a message argparse prints (exit 2)."""
from __future__ import annotations

from pathlib import Path

from raydw.argtypes import MAX_COUNT, MIN_EVERY_S, positive_int, positive_seconds  # noqa: F401 - the flags' types


SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"  # raydw/sweeps: the packaged specs
DEMO = SWEEPS / "demo.yaml"


def spec_path(p: str) -> Path:
    """A spec file; 'demo' or 'paper' name the bundled ones (also installed with the package)."""
    path = Path(p)
    if not path.exists() and (SWEEPS / f"{p}.yaml").exists():
        return SWEEPS / f"{p}.yaml"
    return path

