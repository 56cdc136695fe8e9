"""The sweep driver: spec -> plan -> (1) pre-trained weights -> (2) masks and index sets -> (3) Ray Tune cells.

What each stage does is what its plan (raydw.planning.plan.Plan, one read of the store) says is left, so rerunning a sweep
resumes it: only cells without a final row run again (missing and failed ones), and a half-done cell's Train run
continues from its last epoch. The jobs are listed by raydw.planning.schedule.sweep_tasks, built by
raydw.run.jobs.JobBuilder and run by the one Tuner of raydw.run.tuner.
"""
from __future__ import annotations

import json
import time

from raydw import trackers
from raydw.cells import pretrained_id
from raydw.store.compact import after_sweep, pending as compaction_pending
from raydw.planning.inputs import check_inputs
from raydw.planning.plan import Plan, StoreView
from raydw.run import tuner
from raydw.run.adaptive import LevelGate
from raydw.run.cluster import check_cells_fit, check_fits, connect, max_concurrent, shutdown_after_interrupt
from raydw.run.jobs import JobBuilder
from raydw.run.pipeline import StagedSearcher
from raydw.run.tuning import reuse_best_trials, run_tuning
from raydw.planning.schedule import Task, sweep_tasks
from raydw.planning.seedgate import Gates, SeedGate
from raydw.spec import SweepSpec
from raydw.store import Store
from raydw.reporting.summary import Summary, end_of_sweep


def run_sweep(spec: SweepSpec, storage: str | None = None, address: str | None = None, data_root: str | None = None,
              out=print, live=None) -> Summary:
    """`live`: a raydw.reporting.live.LiveReport (`--live-report`), started once the store is locked, stopped at the end."""
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
            # its finished cells' rows into a few large files, still under the lock (`raydw compact`); also one that an
            # interrupted earlier sweep left half-done (issue 28: else the rerun of "0 to run" never finishes it)
            if summary.ran or compaction_pending(store):
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


def _register(items, store: Store) -> None:
    """`weights:` files the plan found unrecorded: recorded by the driver (a row and the file's hash), nothing trains."""
    from raydw.train.weights import register_weights  # torch: only a driver that has weights files to record needs it

    for item in items:
        register_weights(store, item.spec)


def _pretrain_first(p: Plan, pids: set[str], store: Store, builder: JobBuilder, conc: int) -> None:
    """Stage 1 alone, for the pre-trainings `pids` (tuning needs them before any cell is planned)."""
    _register(p.to_register(pids), store)
    tasks = [Task("pretrain", i.pretrained_id, f"pre-train {i.spec.name}", lambda v, i=i: builder.pretrain(i.spec))
             for i in p.pretrain_jobs(pids)]
    if tasks:
        tuner.fit(tuner.run_name(p.spec.name, "pretrain"), store, conc, [tuner.Progress(0, tuner.sweep_lines)],
                  StagedSearcher(tasks, store))


def _tune_stage(p: Plan, store: Store, builder: JobBuilder, address: str | None, out) -> Plan:
    """`tune:` on: tune every group without a stored recipe (its pre-trained model first); the plan again after."""
    pending = p.to_tune()
    spec = p.spec
    out(f"tune: {len(pending)} dense recipe(s) to tune first, {spec.tune.num_samples} Optuna trials each "
        "(the chosen recipe is then held fixed for the dense cell and every ticket of its group)")
    connect(address)
    check_cells_fit(spec, address, out)
    conc = max_concurrent(spec)
    _pretrain_first(p, {t.group.base.pretrained_id for t in pending}, store, builder, conc)
    ready = StoreView.read(store, ("pretrained",)).pretrained
    for t in (t for t in pending if t.group.base.pretrained_id not in ready):
        out(f"  not tuned: {t.group.label()} (pre-trained model {t.group.base.pretrained_id} was not stored; its pre-training failed?)")
    groups = [t.group for t in pending if t.group.base.pretrained_id in ready]
    builder.index_sets([g.base for g in groups])
    run_tuning(spec, store, groups, builder, conc, out)
    return Plan.of(spec, store)


def _run_locked(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out, t0: float) -> Summary:
    """The stage flow: each stage's work is what the plan says is left (rerun = resume)."""
    builder = JobBuilder(spec, store, data_root, out)
    p = Plan.of(spec, store)
    if p.to_tune():
        p = _tune_stage(p, store, builder, address, out)
    if spec.tune.enabled and reuse_best_trials(spec, store, p.cells, p.done, builder, out):
        p = Plan.of(spec, store)  # a group's dense cell at the tuning seed is its best trial: stored, not trained twice
    out(p.headline() + f"; store {store.uri}")
    if not p.todo:
        return end_of_sweep(p, store, 0, t0, out)

    connect(address)
    check_cells_fit(spec, address, out)
    _register(p.to_register(), store)
    builder.index_sets([*p.todo, *p.more])
    level, gate = _gates(p, store)
    tasks = sweep_tasks(p, builder, gated=level is not None)
    for t in (t for t in tasks if t.kind == "imp"):  # IMP may ask for its own workers / CPUs (tickets.imp)
        check_fits(t.build(p.view).resources.model_dump(), f"{t.label} (tickets.imp.workers / cpus_per_worker)", address, out)
    conc = max_concurrent(spec)
    out(f"running {len(p.todo)} cells" + (f" now, up to {len(p.more)} more as seed rounds ask for them" if p.seeds else "")
        + "".join(f", {sum(t.kind == k for t in tasks)} {k} job(s)" for k in ("pretrain", "imp") if any(t.kind == k for t in tasks))
        + f" on Ray Tune + Ray Train, {conc} at a time")
    searcher = StagedSearcher(tasks, store, gate, cells_per_run=spec.resources.cells_per_run)
    tuner.fit(tuner.run_name(spec.name), store, conc,
              [tuner.Progress(lambda: max(len(p.todo), searcher.handed()), tuner.sweep_lines,  # rounds add cells
                              not_started=searcher.not_started), *trackers.callbacks(spec.trackers, spec.name, tuner.trial_jobs, out)],
              searcher)
    for t in searcher.blocked():
        out(f"  not run: {t.label} ({t.why_blocked})")
    final = Plan.of(spec, store)  # the store as the sweep left it (adaptive seeds: which cells were not needed)
    skipped = set()
    if level is not None:  # cells of levels the search did not ask for (the seed design's are final.not_needed)
        skipped = {t.key for t in searcher.skipped()} - final.not_needed
        gate.update()
        for r in level.rows(spec.name):
            store.write_row("searches", r)
            pct = lambda v: "none" if v is None else f"{v:.1%}"  # noqa: E731
            run = ", ".join(pct(v) for v in json.loads(r["levels_run"]))
            out(f"  search {r['pretraining']} {r['dataset']} f={r['data_fraction']:g} {r['ticket_method']} ({r['rule']}): "
                f"levels run {run}; extreme double-win {pct(r['max_win'])} (contiguous {pct(r['max_contig_win'])}); "
                f"{r['cells_saved']} cells saved{'' if r['consistent'] else '; NOT monotone'}")
    return end_of_sweep(final, store, searcher.handed(), t0, out, skipped)


def _gates(p: Plan, store: Store):
    """(the extreme search's LevelGate or None, the gate the scheduler asks): the LevelGate, the SeedGate of adaptive
    seeds, or both (a cell runs when its level is asked for and its seed round released)."""
    seeds = SeedGate(p, store) if p.seeds is not None else None
    level = LevelGate(p.spec, p.cells, store, seeds=seeds) if p.spec.search.mode == "extreme" else None
    if seeds is not None:
        seeds.within = level
    return level, Gates(seeds, level) if seeds and level else seeds or level


def run_pretraining(spec: SweepSpec, storage: str | None = None, address: str | None = None, out=print) -> None:
    """`raydw pretrain`: stage 1 alone (a later sweep with the same recipes finds them in the store)."""
    store = Store(storage or spec.storage)
    store.check_writable()
    # The store's one lock, as a sweep takes it: a pretrain and a sweep (or two pretrains) on one store would train
    # the same recipe twice and write its row and weights twice.
    with store.lock(f"raydw pretrain {spec.name}"):
        store.check_tables(("pretrained",))
        p = Plan.of(spec, store)
        ids = {i.pretrained_id for i in p.pretrainings}
        if p.pretrain_jobs(ids):
            try:
                connect(address)
                check_cells_fit(spec, address, out)
                _pretrain_first(p, ids - {i.pretrained_id for i in p.to_register(ids)}, store, JobBuilder(spec, store, out=out),
                                max_concurrent(spec))
            except KeyboardInterrupt:
                shutdown_after_interrupt()
                raise
    for p in spec.pretrainings:
        row = store.get("pretrained", pretrained_id(p))
        out(f"{p.name}: " + (f"{row['pretrained_id']} {row['kind']} clean {row['clean_acc']:.3f} robust {row['robust_acc']:.3f}"
                             if row and row.get("clean_acc") is not None else "not trained (weights come from a file)"))
