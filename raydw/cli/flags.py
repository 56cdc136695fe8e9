"""Argument types of the `raydw` command: each refuses bad input with a message argparse prints (exit 2)."""
from __future__ import annotations

import argparse
from pathlib import Path


SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"  # raydw/sweeps: the packaged specs
DEMO = SWEEPS / "demo.yaml"


def spec_path(p: str) -> Path:
    """A spec file; 'demo' or 'paper' name the bundled ones (also installed with the package)."""
    path = Path(p)
    if not path.exists() and (SWEEPS / f"{p}.yaml").exists():
        return SWEEPS / f"{p}.yaml"
    return path


MAX_COUNT = 1 << 20  # steps, batch, threads: a batch of 2**63 images was accepted and failed every path minutes later


def positive_int(text: str) -> int:
    """argparse type: a whole number in [1, 2**20] (a batch of -1 images fails deep in torch, 0 steps times nothing,
    2**63 starts Ray and fails every path minutes later)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not >= 1")
    if v > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{v} is larger than {MAX_COUNT:,}")
    return v


MIN_EVERY_S = 0.1  # a rewrite reads the store and renders plots: more often than this is the busy loop of --every 0


def positive_seconds(text: str) -> float:
    """argparse type: seconds >= 0.1 and finite (--every 0 or 1e-9 would rewrite the report in a busy loop)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    if v < MIN_EVERY_S:
        raise argparse.ArgumentTypeError(f"{text} s is below {MIN_EVERY_S:g} s (a rewrite that often is a busy loop)")
    return v
