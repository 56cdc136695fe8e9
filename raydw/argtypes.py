"""Argument types every command line of raydw shares (`raydw`, `python -m raydw.nodes`, `python -m
raydw.testinputs`): each refuses bad input with a message argparse prints (exit 2). A leaf, so that an entry point
outside raydw.cli (raydw.run.nodes, which raydw.cli imports) uses the same checks."""
from __future__ import annotations

import argparse


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


def host_port(text: str) -> str:
    """argparse type: a Ray address HOST:PORT (the head's GCS; slurm/raydw.sbatch passes IP:6379), port in 1-65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT with a port in 1-65535 (e.g. 10.0.0.1:6379)")
    return text
