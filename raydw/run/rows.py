"""A cell's trials row: the typed result its run ended with (`CellResult`), and the one constructor that turns a
job and its result into the row (`cell_row`), used by a one-cell trial, a packed Train run and tuning's reuse."""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field, fields

from raydw import outcomes
from raydw.provenance import versions
from raydw.store import config_json

ERROR_CHARS = 4000  # the end of a traceback is what says what went wrong


@dataclass(frozen=True)
class CellResult:
    """What one cell's run ended with, as its worker measured it: each field is the trials column of its name.

    It crosses Ray as a plain dict (`report()`: Ray Train's report and Tune's JSON results take dicts, and the final
    checkpoint holds it for a rerun) and is read back with `from_report()`. Test metrics are None, or NaN, where the
    run has no such checkpoint (no RA-best epoch without validation RA) or stopped before testing."""

    status: str  # done | stopped | failed
    error: str | None = None  # "" when done; the stop's or failure's reason
    # test SA / RA / RA under eval.final_attack at the SA-best, RA-best and last epochs (raydw.train.loop)
    sa_at_sa_best: float | None = None
    ra_at_sa_best: float | None = None
    sa_at_ra_best: float | None = None
    ra_at_ra_best: float | None = None
    sa_last: float | None = None
    ra_last: float | None = None
    ra_final_at_sa_best: float | None = None
    ra_final_at_ra_best: float | None = None
    ra_final_last: float | None = None
    val_sa_best: float | None = None
    val_ra_best: float | None = None
    best_epoch_sa: int | None = None
    best_epoch_ra: int | None = None
    epochs: int | None = None
    train_s: float | None = None  # seconds in training steps
    fit_s: float | None = None  # seconds in the training loop (epochs, validation, test)
    device: str | None = None
    node: str | None = None
    workers: int | None = None
    amp: str | None = None
    train_images: int | None = None
    final_attack: str | None = None
    test_n: int | None = None  # test images behind each outcome's bits
    bits: dict[str, bytes] = field(default_factory=dict)  # outcomes column -> packed bits (raydw.outcomes)

    @classmethod
    def failed(cls, error: str) -> "CellResult":
        """A run that ended without its worker's result (its Train run failed, or a packed run stopped first)."""
        return cls(status="failed", error=error_text(error))

    def report(self) -> dict:
        """The worker's final report to Ray Train: the fields (None left out), bits as ASCII, and final = 1."""
        out = {"final": 1, **{k: v for k, v in self.columns().items() if v is not None}}
        return out | {c: outcomes.to_text(b) for c, b in self.bits.items()}

    @classmethod
    def from_report(cls, m: dict) -> "CellResult":
        """The result back from a final report (a Train run's last metrics, or a finished run's checkpoint)."""
        return cls._from(m, outcomes.from_text)

    @classmethod
    def from_row(cls, row: dict) -> "CellResult":
        """The result a stored trials row holds (tuning's best trial, stored again under its main cell)."""
        return cls._from(row, lambda b: b)

    @classmethod
    def _from(cls, m: dict, bits) -> "CellResult":
        return cls(**{k: m.get(k) for k in METRICS},
                   bits={c: bits(m[c]) for c in outcomes.COLUMNS if m.get(c) is not None})

    def columns(self) -> dict:
        """The result's trials columns but the bits."""
        return {k: getattr(self, k) for k in METRICS}


METRICS = tuple(f.name for f in fields(CellResult) if f.name != "bits")  # the row's columns a result gives
# A stored run's provenance, kept when its row is stored again under another cell (tuning's reuse).
RUN_PROVENANCE = ("git_commit", "finished_at", "raydw_version", "torch_version", "ray_version")


# An exception line of a traceback, unindented: "ValueError: ...", "raydw.train.loop.Diverged: ...", a bare
# "AssertionError". Frames and source lines are indented; "Traceback (...)" and "The above exception ..." have spaces.
_EXCEPTION_LINE = re.compile(r"^([a-z_]\w*\.)*[A-Z]\w*(: .*)?$")
_RANK = re.compile(r"^\[Rank \d+ Error Snippet\]:\s*$", re.M)


def cause(error: str) -> str:
    """The line that says what went wrong: the exception raised in the worker. Ray Train wraps it as
    "WorkerGroupError: Training failed due to worker errors:" + one "[Rank N Error Snippet]:" traceback per failed
    rank; the first rank's section is read, and its last exception line is the one that ended it."""
    sections = _RANK.split(error)
    body = sections[1] if len(sections) > 1 else error
    raised = [ln.rstrip() for ln in body.splitlines() if ln.strip() and _EXCEPTION_LINE.match(ln.rstrip())]
    if raised:
        return raised[-1]
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def error_text(error: str) -> str:
    """A failed cell's error column. Its first line is the cause, so every one-line view (the progress line,
    `raydw status`, a verdict's reason) says what went wrong; the end of the full text follows."""
    why, tail = cause(error), error[-ERROR_CHARS:]
    return tail if tail.startswith(why) else f"{why}\n\n{tail}"


def _known(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def cell_row(job, result: CellResult, wall_s: float, reused_from: dict | None = None) -> dict:
    """The one place a trials row is made. job: the cell's CellJob (cell, mask, index set, sweep); result: what its
    run ended with. `reused_from`: a stored trials row whose run this cell's is (tuning's best trial, the same
    recipe, seed and data): its run's provenance is kept and named."""
    cell = job.cell
    row = {
        **cell.row_fields(), **result.columns(), **result.bits,
        "sweep": job.run.sweep, "mask_id": job.mask_id, "sparsity": job.sparsity, "pretraining_kind": job.pretraining_kind,
        "index_set_id": job.index_set_id, "wall_s": wall_s, "git_commit": job.run.git_commit,
        "config": config_json(cell.canonical), "finished_at": dt.datetime.now(dt.timezone.utc), **versions(),
    }
    if reused_from is not None:
        row.update({k: reused_from.get(k) for k in RUN_PROVENANCE}, reused_from=reused_from["cell_id"])
    if row.get("status") in ("done", "stopped"):
        # The paper's early stopping: SA from the SA-best epoch, RA from the RA-best epoch. Without validation
        # RA (standard fine-tuning in the paper), RA is taken at the SA-best epoch.
        row["sa"] = row.get("sa_at_sa_best")
        at_ra = _known(row.get("ra_at_ra_best"))  # NaN: no RA-best epoch (RA not validated), as None
        row["ra"] = row.get("ra_at_ra_best") if at_ra else row.get("ra_at_sa_best")
        row["ra_final"] = row.get("ra_final_at_ra_best") if at_ra else row.get("ra_final_at_sa_best")
    return row
