"""The sweep driver: spec -> plan -> (1) pre-trained weights -> (2) masks and index sets -> (3) Ray Tune cells.

Each stage asks the store what exists first (raydw.plan), so rerunning a sweep resumes it: only cells without a
final row run again (missing and failed ones), and a half-done cell's Train run continues from its last epoch.
What runs is built by raydw.run.jobs.JobBuilder and run by the one Tuner of raydw.run.tuner.
"""
from __future__ import annotations

import json
import time

from raydw import trackers
from raydw.cells import pretrained_id, tune_groups
from raydw.compact import after_sweep
from raydw.inputs import check_inputs
from raydw.plan import plan
from raydw.run import tuner
from raydw.run.adaptive import LevelGate
from raydw.run.cluster import check_cells_fit, check_fits, connect, max_concurrent, shutdown_after_interrupt
from raydw.run.jobs import JobBuilder
from raydw.run.pipeline import StagedSearcher, Task
from raydw.run.tuning import reuse_best_trials, run_tuning
from raydw.spec import SweepSpec
from raydw.store import Store
from raydw.summary import Summary, end_of_sweep
from raydw.train.weights import register_weights


def run_sweep(spec: SweepSpec, storage: str | None = None, address: str | None = None, data_root: str | None = None,
              out=print, live=None) -> Summary:
    """`live`: a raydw.live.LiveReport (`--live-report`), started once the store is locked, stopped at the end."""
    t0 = time.time()
    store = Store(storage or spec.storage)
    check_inputs(spec, store, address, data_root, out)
    store.check_writable()
    with store.lock(f"raydw sweep {spec.name}"):
        store.check_tables()  # bad files move to quarantine/ (said) before anything is planned from them
        if live is not None:  # LIVE-REPORT HOOK (issue 18): rewrites the report while the cells run
            live.start(store.uri)
        try:
            summary = _run_locked(spec, store, address, data_root, out, t0)
            if summary.ran:  # its finished cells' rows into a few large files, still under the lock (`raydw compact`)
                after_sweep(store, t0, out)
        except KeyboardInterrupt:  # Interrupted (SIGTERM / SIGINT): Ray down first, then the lock is released
            if live is not None:  # LIVE-REPORT HOOK: no last write, the driver exits at once
                live.stop()
            shutdown_after_interrupt()
            raise
        except BaseException:
            if live is not None:  # LIVE-REPORT HOOK: the thread stops with the failed sweep
                live.stop()
            raise
        if live is not None:  # LIVE-REPORT HOOK: the last page, after the sweep's own report (same cells, settings)
            live.stop(final="finished" if summary.complete else "ended, some cells not done: rerun to retry them")
        for f in store.remove_temporaries(older_than=t0):  # half-written files of an earlier, killed driver's writers
            out(f"removed {f} (a write killed half-way before this sweep started)")
        return summary


def _pretrain_tasks(spec: SweepSpec, store: Store, builder: JobBuilder, needed: set[str]) -> list[Task]:
    """Stage 1: pre-trained weights. Files are registered now; recipes not yet stored become Ray Train jobs."""
    tasks = []
    for p in (p for p in spec.pretrainings if pretrained_id(p) in needed):
        pid = pretrained_id(p)
        if p.weights is not None:
            register_weights(store, p)
        elif store.get("pretrained", pid) is None:
            tasks.append(Task("pretrain", pid, f"pre-train {p.name}", lambda p=p: builder.pretrain(p)))
    return tasks


def _tune_stage(spec: SweepSpec, store: Store, builder: JobBuilder, address: str | None, out) -> dict[str, dict]:
    """`tune:` on: tune every group without a stored recipe (its pre-trained model first), then return all recipes."""
    recipes = store.recipes()
    pending = [g for g in tune_groups(spec) if g.tune_id not in recipes]
    if not pending:
        return recipes
    out(f"tune: {len(pending)} dense recipe(s) to tune first, {spec.tune.num_samples} Optuna trials each "
        "(the chosen recipe is then held fixed for the dense cell and every ticket of its group)")
    connect(address)
    check_cells_fit(spec, address, out)
    conc = max_concurrent(spec)
    tasks = _pretrain_tasks(spec, store, builder, {g.base.pretrained_id for g in pending})
    if tasks:
        tuner.fit(tuner.run_name(spec.name, "pretrain"), store, conc, [tuner.Progress(0, tuner.sweep_lines)],
                  StagedSearcher(tasks, store))
    ready = set(store.names("pretrained"))
    for g in (g for g in pending if g.base.pretrained_id not in ready):
        out(f"  not tuned: {g.label()} (pre-trained model {g.base.pretrained_id} was not stored; its pre-training failed?)")
    pending = [g for g in pending if g.base.pretrained_id in ready]
    builder.index_sets([g.base for g in pending])
    run_tuning(spec, store, pending, builder, conc, out)
    return store.recipes()


def _run_locked(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out, t0: float) -> Summary:
    builder = JobBuilder(spec, store, data_root, out)
    recipes = _tune_stage(spec, store, builder, address, out) if spec.tune.enabled else None
    p = plan(spec, store, recipes)
    if spec.tune.enabled and reuse_best_trials(spec, store, p.cells, p.done, builder, out):
        p = plan(spec, store, p.recipes)  # a group's dense cell at the tuning seed is its best trial: stored, not trained twice
    cells, todo, waiting = p.cells, p.todo, p.waiting  # a tuned group without a recipe does not run untuned
    out(f"sweep {spec.name}: {len(cells)} cells, {len(p.done)} already done, {len(todo)} to run"
        + (f", {len(waiting)} without a tuned recipe (not run)" if waiting else "") + f"; store {store.uri}")
    if not todo:
        return end_of_sweep(spec, store, cells, 0, t0, out, not_run=waiting)

    connect(address)
    check_cells_fit(spec, address, out)
    needed = {c.pretrained_id for c in todo}
    pres = [p for p in spec.pretrainings if pretrained_id(p) in needed]
    tasks = _pretrain_tasks(spec, store, builder, needed)
    # Stage 2: IMP jobs (one per pre-training and IMP spec, each storing its rounds as found), index sets.
    for t in (t for t in spec.tickets if t.method == "imp"):
        for pre in pres:
            job = builder.imp(t, pre)
            if job is not None:
                check_fits(job.resources.model_dump(), f"IMP {pre.name} (tickets.imp.workers / cpus_per_worker)", address, out)
                tasks.append(Task("imp", job.train_name, f"IMP {pre.name}", lambda job=job: job,
                                  needs_pretrained=job.pretrained_id))
    builder.index_sets(todo)
    # Stage 3: each cell starts as soon as its pre-trained model and its mask exist (an IMP round k cell does not
    # wait for round k+1), all in one Tuner so Tune's concurrency covers every stage.
    stop = builder.plan_early_stop([c for c in cells if c.cell_id not in waiting])
    gate = LevelGate(spec, cells, store) if spec.search.mode == "extreme" else None
    for c in todo:
        tasks.append(Task("cell", c.cell_id, c.label(), lambda c=c: builder.cell(c),
                          needs_pretrained=c.pretrained_id, needs_imp=builder.imp_need(c),
                          needs_cell=stop[c.cell_id].dense_cell_id if c.cell_id in stop else None,
                          gated=gate is not None and c.ticket_method != "dense"))
    conc = max_concurrent(spec)
    out(f"running {sum(t.kind == 'cell' for t in tasks)} cells"
        + "".join(f", {sum(t.kind == k for t in tasks)} {k} job(s)" for k in ("pretrain", "imp") if any(t.kind == k for t in tasks))
        + f" on Ray Tune + Ray Train, {conc} at a time")
    searcher = StagedSearcher(tasks, store, gate, cells_per_run=spec.resources.cells_per_run)
    tuner.fit(tuner.run_name(spec.name), store, conc,
              [tuner.Progress(len(todo), tuner.sweep_lines), *trackers.callbacks(spec.trackers, spec.name, tuner.trial_jobs, out)],
              searcher)
    for t in searcher.blocked():
        out(f"  not run: {t.label} ({t.why_blocked})")
    if gate is not None:
        gate.update()
        for r in gate.rows(spec.name):
            store.write_row("searches", r)
            pct = lambda v: "none" if v is None else f"{v:.1%}"  # noqa: E731
            run = ", ".join(pct(v) for v in json.loads(r["levels_run"]))
            out(f"  search {r['pretraining']} {r['dataset']} f={r['data_fraction']:g} {r['ticket_method']} ({r['rule']}): "
                f"levels run {run}; extreme double-win {pct(r['max_win'])} (contiguous {pct(r['max_contig_win'])}); "
                f"{r['cells_saved']} cells saved{'' if r['consistent'] else '; NOT monotone'}")
    skipped = len(searcher.skipped()) if gate is not None else 0
    return end_of_sweep(spec, store, cells, len(todo) - skipped, t0, out, skipped, not_run=waiting)


def run_pretraining(spec: SweepSpec, storage: str | None = None, address: str | None = None, out=print) -> None:
    """`raydw pretrain`: stage 1 alone (a later sweep with the same recipes finds them in the store)."""
    store = Store(storage or spec.storage)
    store.check_writable()
    # The store's one lock, as a sweep takes it: a pretrain and a sweep (or two pretrains) on one store would train
    # the same recipe twice and write its row and weights twice.
    with store.lock(f"raydw pretrain {spec.name}"):
        store.check_tables(("pretrained",))
        recipes = [p for p in spec.pretrainings if p.recipe is not None and store.get("pretrained", pretrained_id(p)) is None]
        if recipes:
            try:
                connect(address)
                check_cells_fit(spec, address, out)
                builder = JobBuilder(spec, store, out=out)
                tasks = [Task("pretrain", pretrained_id(p), f"pre-train {p.name}", lambda p=p: builder.pretrain(p))
                         for p in recipes]
                tuner.fit(tuner.run_name(spec.name, "pretrain"), store, max_concurrent(spec), [], StagedSearcher(tasks, store))
            except KeyboardInterrupt:
                shutdown_after_interrupt()
                raise
    for p in spec.pretrainings:
        row = store.get("pretrained", pretrained_id(p))
        out(f"{p.name}: " + (f"{row['pretrained_id']} {row['kind']} clean {row['clean_acc']:.3f} robust {row['robust_acc']:.3f}"
                             if row and row.get("clean_acc") is not None else "not trained (weights come from a file)"))
