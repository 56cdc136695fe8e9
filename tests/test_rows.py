"""A cell's trials row without Ray: the one constructor (`rows.cell_row`) turns a CellJob built from a tiny spec and
the worker's typed result (`rows.CellResult`) into the row, for a done, a stopped and a failed cell and for tuning's
reuse of its best trial; and no other code in the package makes a trials row."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from raydw import outcomes
from raydw.cells import expand, tune_groups
from raydw.planning.plan import StoreView
from raydw.run.jobs import JobBuilder
from raydw.run.rows import CellResult, cell_row
from raydw.spec import parse_spec
from raydw.store import TRIALS, Store, config_json

PKG = Path(__file__).resolve().parents[1] / "raydw"
RAN = dict(device="cpu (1 threads)", node="127.0.0.1", workers=1, amp="fp32", train_images=1000)


def _builder(text: str, tmp_path, **edits) -> JobBuilder:
    d = yaml.safe_load(text)
    d.update(edits)
    return JobBuilder(parse_spec(d), Store(str(tmp_path / "store")))


def _dense_job(builder: JobBuilder):
    return builder.cell(next(c for c in expand(builder.spec) if c.ticket_method == "dense"), StoreView.read(builder.store))


def _done(**edits) -> CellResult:
    """A done cell's result as the worker builds it: test metrics at three checkpoints, outcome bits, timings."""
    rng = np.random.default_rng(0)
    bits = {c: outcomes.pack(rng.random(10) < 0.5) for c in outcomes.COLUMNS}
    fields = dict(status="done", error="", sa_at_sa_best=0.8, ra_at_sa_best=0.3, sa_at_ra_best=0.7, ra_at_ra_best=0.4,
                  sa_last=0.75, ra_last=0.35, ra_final_at_sa_best=0.2, ra_final_at_ra_best=0.25, ra_final_last=0.22,
                  val_sa_best=0.82, val_ra_best=0.41, best_epoch_sa=1, best_epoch_ra=0, epochs=2, train_s=3.0, fit_s=4.5,
                  final_attack="autoattack", test_n=10, bits=bits, **RAN)
    return CellResult(**{**fields, **edits})


def test_a_done_cells_row_fills_every_trials_column_from_its_job_and_result(tmp_path, tiny_spec_text):
    builder = _builder(tiny_spec_text, tmp_path)
    job, result = _dense_job(builder), _done()
    row = cell_row(job, result, 12.5)
    assert set(TRIALS.names) - set(row) == {"reused_from"} and set(row) <= set(TRIALS.names)
    assert {k: row[k] for k in job.cell.row_fields()} == job.cell.row_fields()
    assert (row["sweep"], row["mask_id"], row["sparsity"], row["index_set_id"], row["wall_s"]) == (
        "tiny", None, 0.0, job.index_set_id, 12.5)
    assert row["config"] == config_json(job.cell.canonical)
    # The paper's early stopping: SA at the SA-best epoch, RA (and RA under the final attack) at the RA-best epoch.
    assert (row["sa"], row["ra"], row["ra_final"]) == (0.8, 0.4, 0.25)
    builder.store.write_row("trials", row)
    stored = builder.store.get("trials", job.cell.cell_id)
    assert {c: stored[c] for c in outcomes.COLUMNS} == result.bits and stored["test_n"] == 10
    assert CellResult.from_row(stored) == result  # what the row holds is the result, whole


def test_a_result_crosses_ray_as_a_json_report_and_comes_back_equal():
    result = _done(val_ra_best=None, final_attack=None)
    report = json.loads(json.dumps(result.report()))  # Train's report -> Tune's JSON results / the final checkpoint
    assert report["final"] == 1 and "final_attack" not in report  # None is left out, as the worker reported before
    assert CellResult.from_report(report) == result


def test_without_validation_ra_the_rows_ra_is_taken_at_the_sa_best_epoch(tmp_path, tiny_spec_text):
    row = cell_row(_dense_job(_builder(tiny_spec_text, tmp_path)), _done(ra_at_ra_best=None, ra_final_at_ra_best=None), 1.0)
    assert (row["ra"], row["ra_final"]) == (0.3, 0.2)


def test_a_stopped_cells_row_keeps_its_reason_and_what_its_epochs_said(tmp_path, tiny_spec_text):
    why = "stopped at epoch 1: validation SA 0.4000 trails the dense model's 0.6000 by more than the margin 0.05"
    result = CellResult(status="stopped", error=why, fit_s=2.0, epochs=2, val_sa_best=0.4, best_epoch_sa=1, **RAN)
    row = cell_row(_dense_job(_builder(tiny_spec_text, tmp_path)), result, 3.0)
    assert (row["status"], row["error"], row["epochs"], row["val_sa_best"], row["device"]) == (
        "stopped", why, 2, 0.4, RAN["device"])
    assert row["sa"] is None and row["ra"] is None and not any(row.get(c) for c in outcomes.COLUMNS)


def test_a_failed_cells_row_says_its_cause_first(tmp_path, tiny_spec_text):
    job = _dense_job(_builder(tiny_spec_text, tmp_path))
    ray_text = ("WorkerGroupError: Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most "
                "recent call last):\n  File \"w.py\", line 1, in f\nValueError: ST takes 1-channel input\n")
    row = cell_row(job, CellResult.failed(ray_text), 0.0)  # the trial's failure: no result from the worker
    assert row["status"] == "failed" and row["error"].splitlines()[0] == "ValueError: ST takes 1-channel input"
    assert "sa" not in row and row["device"] is None and row["cell_id"] == job.cell.cell_id
    diverged = CellResult(status="failed", error="training loss is nan at epoch 0 (lr 1e+12)", **RAN)  # the worker's
    row = cell_row(job, diverged, 5.0)
    assert (row["status"], row["error"], row["workers"], row["sa_at_sa_best"]) == ("failed", diverged.error, 1, None)


def test_a_reused_best_trial_is_stored_under_its_cell_as_the_same_run(tmp_path, tiny_spec_text):
    """Tuning's reuse goes through the one constructor and stores what it stored before: the trial's row with the
    cell's id, phase, tags, sweep and config, and `reused_from` naming the trial."""
    from raydw.run.tuning import reuse_best_trials

    tune = {"enabled": True, "num_samples": 2, "space": {"lr": {"kind": "loguniform", "low": 0.005, "high": 0.05}}}
    builder = _builder(tiny_spec_text, tmp_path, tune=tune, seeds=[1, 2])
    spec, store = builder.spec, builder.store
    (g,) = tune_groups(spec)
    rec = {"lr": 0.02}
    trial_job = builder.cell(g.base, StoreView.read(store)).for_cell(g.trial_cell(rec))  # as run_tuning builds it
    trial = cell_row(trial_job, _done(), 7.0)
    store.write_row("trials", trial)
    store.write_row("recipes", {"tune_id": g.tune_id, "recipe": config_json(rec), "best_cell_id": trial["cell_id"]})
    cells = expand(spec, StoreView.read(store, ("recipes",)).recipes)
    (cell,) = [c for c in cells if c.ticket_method == "dense" and c.seed == 1]
    assert reuse_best_trials(spec, store, cells, set(), builder, lambda line: None) == {cell.cell_id}
    stored_trial = store.get("trials", trial["cell_id"])
    before = {**stored_trial, "cell_id": cell.cell_id, "phase": "main", "tune_id": cell.tune_id,  # the earlier rule
              "recipe_id": cell.recipe_id, "sweep": spec.name, "config": config_json(cell.canonical),
              "reused_from": trial["cell_id"]}
    assert store.get("trials", cell.cell_id) == before


def _trials_writes() -> list[tuple[str, str, ast.Call]]:
    """(module, enclosing function, call) of every store write of the trials table in the package."""
    out = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                f = call.func
                if (isinstance(f, ast.Attribute) and f.attr in ("write_row", "write_rows") and call.args
                        and isinstance(call.args[0], ast.Constant) and call.args[0].value == "trials"):
                    out.append((path.relative_to(PKG).as_posix(), fn.name, call))
    return out


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def test_every_trials_row_the_package_writes_is_made_by_the_one_constructor():
    writes = _trials_writes()
    assert writes, "no trials writes found: the scan is broken"
    made_elsewhere = [f"{m}:{fn} line {c.lineno}" for m, fn, c in writes if _called(c.args[-1]) != "cell_row"]
    assert made_elsewhere == [], "a trials row made outside rows.cell_row"
    # The three paths: a one-cell trial (and a preflight cell, and a pack's unfinished cells), a packed Train run's
    # worker, and tuning's reuse of its best trial.
    assert {(m, fn) for m, fn, _ in writes} == {
        ("run/trials.py", "cell_trial"), ("run/trials.py", "pack_trial"), ("run/trials.py", "probe_trial"),
        ("run/worker.py", "pack_worker"), ("run/tuning.py", "reuse_best_trials")}
    defined = [p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
               if any(isinstance(n, ast.FunctionDef) and n.name == "cell_row" for n in ast.walk(ast.parse(p.read_text())))]
    assert defined == ["run/rows.py"]


def test_a_train_run_carries_its_job_in_the_loop_not_in_the_context_its_controller_unpickles(tmp_path, tiny_spec_text):
    """raydw.run.trials._trainer: Ray keeps `train_loop_config` in the run's context, which the Train controller
    unpickles (it imported raydw's job module and torch for it in every run); the job rides in the loop instead,
    which only the workers receive. Built without Ray: a Trainer starts nothing until fit()."""
    from raydw.run.trials import LOOPS, _trainer, loop

    job = _dense_job(_builder(tiny_spec_text, tmp_path))
    trainer = _trainer("cell", job)
    assert not trainer.train_run_context.train_loop_config  # nothing of raydw's for the controller to unpickle
    bound = trainer.train_loop_per_worker
    assert bound.func is loop and bound.args == (LOOPS["cell"], {"job": job})


def test_every_worker_loop_resolves_and_a_trial_imports_no_torch():
    """raydw.run.trials names the Train workers' loops (LOOPS) and imports them on the workers only: a Tune trial that
    unpickles its job and runs cell_trial then never imports torch (it cost ~1.4 CPU-s and ~470 MB of resident memory, much of it torch's library pages)."""
    import importlib

    from raydw.run.trials import LOOPS

    for kind, target in LOOPS.items():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name)), kind
    code = ("import sys, raydw.run.trials, raydw.run.jobs, raydw.run.preflight_rows; "
            "print(sorted(m for m in ('torch', 'raydw.run.worker', 'raydw.run.sourceworkers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
