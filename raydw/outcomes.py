"""Per-example test outcomes: which test images a cell classified correctly, clean and under attack.

Every test evaluation (the SA-best, RA-best and last checkpoints) stores one bit per test image and outcome,
bit-packed as masks are, in the trials row. The bits are in test-split order, so two cells of one dataset are
paired by test image; every interval of the verdicts is computed from them (raydw.uncertainty), and a later rule
can be recomputed without re-running a cell. CIFAR's 10,000 test images take 1,250 bytes per outcome.
Torch-free.
"""
from __future__ import annotations

import base64

import numpy as np

CHECKPOINTS = ("sa_best", "ra_best", "last")  # the three evaluated states, as in sa_at_sa_best / ra_at_ra_best / *_last
OUTCOMES = ("clean", "robust", "final")  # clean-correct; robust to the eval attack; robust to it and the final attack


def column(outcome: str, checkpoint: str) -> str:
    """The trials column that holds one outcome's bits at one checkpoint, e.g. bits_robust_ra_best."""
    return f"bits_{outcome}_{checkpoint}"


COLUMNS = tuple(column(o, c) for o in OUTCOMES for c in CHECKPOINTS)


def pack(correct) -> bytes:
    """Bool per example -> bytes (little bit order, so example i is bit i % 8 of byte i // 8)."""
    return np.packbits(np.asarray(correct, dtype=bool), bitorder="little").tobytes()


def unpack(bits: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=int(n), bitorder="little").astype(bool)


def to_text(packed: bytes) -> str:
    """Packed bits as ASCII for a Ray Train report (metrics travel through Tune's JSON results)."""
    return base64.b64encode(packed).decode("ascii")


def from_text(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


# Which stored outcome stands behind each analysed value: SA is read at the SA-best epoch, RA at the RA-best epoch
# (the paper's early stopping, as `sa` / `ra` in the trials row) or at the last epoch; RA without validation RA
# falls back to the SA-best epoch, as rows.cell_row does for the `ra` column.
VALUE_BITS = {
    "paper": {"sa": ("clean", "sa_best"), "ra": ("robust", "ra_best"), "ra_final": ("final", "ra_best")},
    "last": {"sa": ("clean", "last"), "ra": ("robust", "last"), "ra_final": ("final", "last")},
}
