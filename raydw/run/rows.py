"""The `trials` row of a finished cell, built the same way by a one-cell trial and by a packed Train run."""
from __future__ import annotations

import datetime as dt
import math
import re

from raydw import outcomes
from raydw.provenance import versions
from raydw.store import config_json

ERROR_CHARS = 4000  # the end of a traceback is what says what went wrong

TRIAL_METRICS = {"status", "error", "sa_at_sa_best", "ra_at_sa_best", "sa_at_ra_best", "ra_at_ra_best", "sa_last",
                 "ra_last", "val_sa_best", "val_ra_best", "best_epoch_sa", "best_epoch_ra", "epochs", "train_s", "fit_s",
                 "device", "node", "workers", "amp", "train_images", "test_n", "final_attack", "ra_final_at_sa_best",
                 "ra_final_at_ra_best", "ra_final_last"}


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


def failed(error: str) -> dict:
    """A failed cell's row fields. The error's first line is its cause, so every one-line view (the progress line,
    `raydw status`, a verdict's reason) says what went wrong; the end of the full text follows."""
    why, tail = cause(error), error[-ERROR_CHARS:]
    return {"status": "failed", "error": tail if tail.startswith(why) else f"{why}\n\n{tail}"}


def _known(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def cell_row(job, metrics: dict, wall_s: float) -> dict:
    """The one place a trials row is made. job: the cell's CellJob (cell, mask, index set, sweep); metrics: the
    worker's final report."""
    cell = job.cell
    row = {
        **cell.row_fields(),
        **{k: v for k, v in metrics.items() if k in TRIAL_METRICS},
        **{k: outcomes.from_text(metrics.get(k)) for k in outcomes.COLUMNS if metrics.get(k) is not None},
        "sweep": job.run.sweep, "mask_id": job.mask_id, "sparsity": job.sparsity, "pretraining_kind": job.pretraining_kind,
        "index_set_id": job.index_set_id, "wall_s": wall_s, "git_commit": job.run.git_commit,
        "config": config_json(cell.canonical), "finished_at": dt.datetime.now(dt.timezone.utc), **versions(),
    }
    if row.get("status") in ("done", "stopped"):
        # The paper's early stopping: SA from the SA-best epoch, RA from the RA-best epoch. Without validation
        # RA (standard fine-tuning in the paper), RA is taken at the SA-best epoch.
        row["sa"] = row.get("sa_at_sa_best")
        at_ra = _known(row.get("ra_at_ra_best"))  # NaN: no RA-best epoch (RA not validated), as None
        row["ra"] = row.get("ra_at_ra_best") if at_ra else row.get("ra_at_sa_best")
        row["ra_final"] = row.get("ra_final_at_ra_best") if at_ra else row.get("ra_final_at_sa_best")
    return row
