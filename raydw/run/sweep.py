"""The sweep driver: spec -> cells -> (1) pre-trained weights -> (2) masks and index sets -> (3) Ray Tune cells.

Each stage asks the store what exists first, so rerunning a sweep resumes it: only cells without a `done`
row run again (missing and failed ones), and a half-done cell's Train run continues from its last epoch.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import time
from dataclasses import dataclass

from raydw.cells import Cell, expand, pretrained_id
from raydw.spec import ImpSpec, SpecError, SweepSpec
from raydw.store import Store, config_json

# Ray Train's controller polls its workers every 2 s by default; a report then waits up to 2 s to surface
# and a toy cell pays ~6 s more (ray-notes sections 3 and 9). 0.2 s costs nothing measurable.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
DRIVER_RESOURCE = "TRAIN_DRIVER"
AUTOSCALE_CELLS = 4  # cells started on a cluster that has no fitting node yet (the autoscaler's demand signal)
_JOINED_CLUSTER = False  # connect() joined a cluster (--address / RAY_ADDRESS), rather than starting a local Ray
STOPPED_BY: int | None = None  # the signal (SIGTERM / SIGINT) that stopped this driver


@dataclass
class Summary:
    total: int
    done: int
    failed: int
    ran: int
    storage: str
    wall_s: float
    stopped: int = 0  # early stopping, by design (spec.early_stop)
    skipped: int = 0  # not needed by the extreme search, by design

    @property
    def complete(self) -> bool:
        """Every cell has its final state: done, or stopped / skipped as the spec asked. Failed or missing: not."""
        return self.done + self.stopped + self.skipped == self.total


def connect(address: str | None, verbose: bool = False) -> None:
    """Join a cluster (address or RAY_ADDRESS) or start a local Ray with a custom driver resource.

    Trial drivers (Tune trials that only drive a TorchTrainer) hold the custom resource TRAIN_DRIVER instead
    of a CPU, so on a 2-CPU machine the Train workers always find their CPUs: the deadlock of ray-notes
    pitfall 1 cannot happen by construction.
    """
    import logging

    global _JOINED_CLUSTER
    addr = _cluster_address(address)
    _JOINED_CLUSTER = bool(addr)
    if not addr:
        _loopback_only()
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    if not verbose:
        # Tune's console engine prints an experiment box ("Number of trials 9223372036854775807": the staged searcher
        # is open-ended) and a TensorBoard hint for a folder in /tmp; raydw's progress lines say what matters.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        _release_stale()
        return
    env = {"env_vars": {k: os.environ[k] for k in RAY_ENV}}
    # Train workers log every report and checkpoint; progress comes from the Tune callback instead, and a
    # cell's error lands in its trials row. --verbose brings the worker logs back.
    common = dict(include_dashboard=False, runtime_env=env, logging_level=logging.INFO if verbose else logging.WARNING,
                  log_to_driver=verbose)
    if addr:
        ray.init(address=addr, **common)
        _stop_on_signals()
        _release_stale()  # a killed driver's Train runs can leave placement groups holding the cluster's CPUs/GPUs
    else:  # "local" always starts a fresh Ray, never a dead cluster left in /tmp/ray (ray-notes section 9)
        ray.init(address="local", num_cpus=os.cpu_count(), resources={DRIVER_RESOURCE: 1000}, **common)
        _stop_on_signals()
        ip = ray.util.get_node_ip_address()
        if ip not in ("127.0.0.1", "::1"):
            print(f"warning: the local Ray took the node address {ip}, not loopback: its ports may be reachable from the "
                  "network", file=sys.stderr)


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" = a single-node Ray on 127.0.0.1 (its macOS default)


def _loopback_only() -> None:
    """A local Ray listens on 127.0.0.1 only (GCS, raylet, workers), not on every interface: a laptop on a shared
    network exposes none of its ports. Ray binds its gRPC servers to loopback exactly when the node address is
    127.0.0.1, which it picks on Linux only with its cluster mode off. Set before Ray starts (its processes inherit
    it); the constant is patched too in case ray was imported already. Never for --address (a cluster's nodes must
    reach each other)."""
    os.environ[LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT to the driver: raised in the main thread, out of Tune's loop, so the sweep stops at once."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT stop the driver cleanly (exit 143 / 130, `raydw sweep` says to rerun it to resume).

    Ray's own SIGTERM handler (sys.exit inside Tune's loop) ended in an abort (exit 134), and Tune's SIGINT handler
    stops the experiment and says to resume with Tuner.restore, which is not how raydw resumes: a rerun of the same
    command plans from the store. So both raise Interrupted here (Tune's handler off), the driver shuts Ray down, and
    the store is as a SIGKILL leaves it: every row is whole (atomic writes), a half-done cell continues from its
    last checkpoint on the rerun, and hidden temporaries of killed writers are removed by the next sweep."""
    import signal
    import threading

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        global STOPPED_BY
        STOPPED_BY = signum  # Tune may re-raise a plain KeyboardInterrupt: the CLI reads the signal here
        for s in (signal.SIGTERM, signal.SIGINT):  # a second signal while Ray shuts down is not another traceback
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)


def _shutdown_after_interrupt() -> None:
    import signal

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    try:
        import ray

        ray.shutdown()
    except Exception:  # noqa: BLE001 - stopping anyway
        pass


def _release_stale() -> None:
    from raydw.run.orphans import release_stale_placement_groups

    try:
        release_stale_placement_groups(out=_say)
    except Exception as e:  # noqa: BLE001 - a best-effort clean-up must never stop a sweep
        _say(f"(could not check for placement groups left by ended drivers: {type(e).__name__}: {e})")


def driver_resources() -> dict:
    import ray

    if ray.cluster_resources().get(DRIVER_RESOURCE, 0) >= 1:
        return {"cpu": 0, DRIVER_RESOURCE: 1}
    print(f"warning: the cluster has no '{DRIVER_RESOURCE}' resource (see cluster.yaml); each cell's driver takes 0.01 CPU",
          file=sys.stderr)
    return {"cpu": 0.01}


def max_concurrent(spec: SweepSpec) -> int:
    import ray

    r = spec.resources
    if r.max_concurrent_cells:
        return r.max_concurrent_cells
    total = ray.cluster_resources()
    n = int(total.get("CPU", 1) // (r.workers_per_cell * r.cpus_per_worker))
    if r.gpus_per_worker > 0:
        n = min(n, int(total.get("GPU", 0) // (r.workers_per_cell * r.gpus_per_worker)))
    if n < 1 and total.get(DRIVER_RESOURCE, 0) >= 1 and _JOINED_CLUSTER:
        # An autoscaling cluster (cluster.yaml) starts without GPU nodes: pending cells are the demand that makes
        # the autoscaler add them, so start some instead of refusing.
        print(f"warning: the cluster has no node that fits a cell yet ({dict(total)}); starting {AUTOSCALE_CELLS} cells so "
              "the autoscaler adds nodes (set resources.max_concurrent_cells to choose)", file=sys.stderr)
        return AUTOSCALE_CELLS
    if n < 1:
        raise RuntimeError(f"the cluster ({dict(total)}) cannot fit one cell of {r.workers_per_cell} workers x "
                           f"{r.cpus_per_worker} CPU / {r.gpus_per_worker} GPU")
    return n


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _no_row(trial) -> dict:
    """A finished trial left no trials row: its writer failed (a full disk, say). The trial's own error says why."""
    why = "no trials row was stored"
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001 - only for the message
        err = None
    lines = [ln.strip() for ln in str(err or "").splitlines() if ln.strip()]
    if lines:
        why += f" ({lines[-1][:200]})"
    return {"status": "failed", "error": why}


def _progress_callback(total: int, concurrency: int):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished cell, with an estimate of the time left."""

        def __init__(self):
            self.n, self.t0 = 0, time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            kind, r = trial.config.get("kind", "cell"), trial.last_result or {}
            if kind == "pretrain":
                _say(f"pre-trained {trial.config['job']['name']}: source-task clean {_num(r.get('clean_acc')):.3f}, "
                     f"robust {_num(r.get('robust_acc')):.3f}")
            if kind == "imp":
                _say(f"IMP {trial.config['job']['name']}: {'all rounds stored' if r.get('final') else 'FAILED (see the Ray logs)'}")
            if kind == "pack":  # one line per packed cell, from the rows its workers stored
                store = Store(trial.config["job"]["storage"])
                for c in trial.config["job"]["cells"]:
                    row = store.get("trials", c["cell"]["cell_id"]) or _no_row(trial)
                    self._line(Cell.from_dict(c["cell"]).label(), row, row.get("wall_s"))
                return
            if kind != "cell":
                return
            job = trial.config["job"]
            # The cell's stored row says how it ended (a failed cell's error starts with its cause).
            row = Store(job["storage"]).get("trials", job["cell"]["cell_id"]) or _no_row(trial)
            self._line(Cell.from_dict(job["cell"]).label(), row, (trial.last_result or {}).get("time_total_s"))

        def _line(self, label: str, r: dict, took) -> None:
            self.n += 1
            if r.get("status") == "done":
                ra = r.get("ra_at_ra_best") if r.get("ra_at_ra_best") is not None else r.get("ra_at_sa_best")
                what = f"SA {_num(r.get('sa_at_sa_best')):.3f} RA {_num(ra):.3f}"
            elif r.get("status") == "stopped":
                what = f"stopped early: {str(r.get('error'))[:120]}"
            else:
                what = f"FAILED: {str(r.get('error') or 'no error recorded').splitlines()[0][:160]}"
            if self.n == 1:  # pace from the first finished cell on: pre-training and start-up are not per cell
                self.t0 = time.time()
            left = (time.time() - self.t0) / max(self.n - 1, 1) * (total - self.n) if self.n > 1 else None
            _say(f"[{self.n}/{total}] {label}: {what}" + (f" ({took:.0f} s)" if took else "") +
                (f", ~{left / 60:.1f} min left" if left is not None and self.n < total else ""))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.on_trial_complete(iteration, trials, trial)

    return Progress()


def _pretrain_config(store: Store, spec: SweepSpec, p, data_root: str | None) -> dict:
    recipe = p.recipe.model_dump(mode="json")
    return {"storage": store.uri, "pretrained_id": pretrained_id(p), "name": p.name, "recipe": recipe,
            "recipe_json": config_json(recipe), "resources": spec.resources.model_dump(),
            "torch_threads": spec.resources.torch_threads, "data_root": data_root or spec.data.root}


def plan(spec: SweepSpec, store: Store, recipes: dict[str, dict] | None = None) -> tuple[list[Cell], set[str]]:
    """The cells (with the stored tuned recipes applied, `tune:` on) and the ids already final in the store."""
    if recipes is None and spec.tune.enabled:
        recipes = store.recipes()
    return expand(spec, recipes), store.done_cells(include_stopped=spec.early_stop.enabled)


def dense_of(cells: list[Cell]) -> dict[str, str]:
    """ticket cell_id -> the cell_id of its dense baseline (same pre-training, dataset, regime, fraction, seed)."""
    key = lambda c: (c.pretrained_id, c.dataset, c.regime, c.data_fraction, c.seed)  # noqa: E731
    dense = {key(c): c.cell_id for c in cells if c.ticket_method == "dense"}
    return {c.cell_id: dense[key(c)] for c in cells if c.ticket_method != "dense" and key(c) in dense}


def run_sweep(spec: SweepSpec, storage: str | None = None, address: str | None = None, data_root: str | None = None,
              out=print, live=None) -> Summary:
    """`live`: a raydw.live.LiveReport (`--live-report`), started once the store is locked, stopped at the end."""
    t0 = time.time()
    store = Store(storage or spec.storage)
    _preflight(spec, store, address, data_root, out)
    store.check_writable()
    with store.lock(f"raydw sweep {spec.name}"):
        store.check_tables()  # bad files move to quarantine/ (said) before anything is planned from them
        if live is not None:  # LIVE-REPORT HOOK (issue 18): rewrites the report while the cells run
            live.start(store.uri)
        try:
            summary = _run_locked(spec, store, address, data_root, out, t0)
        except KeyboardInterrupt:  # Interrupted (SIGTERM / SIGINT): Ray down first, then the lock is released
            if live is not None:  # LIVE-REPORT HOOK: no last write, the driver exits at once
                live.stop()
            _shutdown_after_interrupt()
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


def _cluster_address(address: str | None) -> str | None:
    """The cluster this driver joins (--address, else RAY_ADDRESS); None: it starts a local Ray of its own."""
    return address or os.environ.get("RAY_ADDRESS")


def _check_fits(res: dict, what: str, address: str | None, out) -> None:
    """A Train run asking for more than the whole Ray cluster would wait forever without a word: refuse on a local
    Ray (before any trial starts); on a cluster, say that it waits for the autoscaler. Every kind of Train run a
    sweep starts is checked: cells (and packed cells, tuning trials), pre-training and IMP jobs."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": res["workers_per_cell"] * res["cpus_per_worker"], "GPU": res["workers_per_cell"] * res["gpus_per_worker"]}
    short = {k: (v, total.get(k, 0)) for k, v in need.items() if v > total.get(k, 0)}
    if not short:
        return
    said = ", ".join(f"{v:g} {k} (Ray has {have:g})" for k, (v, have) in short.items())
    if _cluster_address(address):
        out(f"warning: {what} needs {said}: it waits until the autoscaler adds a node that fits")
        return
    raise SpecError(f"{what} needs {said} on this machine's Ray; lower them in the spec, or run on a cluster "
                    "(docs/cluster.md). Nothing was run")


def _check_cells_fit(spec: SweepSpec, address: str | None, out) -> None:
    r = spec.resources
    _check_fits(r.model_dump(), f"each cell ({r.workers_per_cell} workers x {r.cpus_per_worker:g} CPU / "
                f"{r.gpus_per_worker:g} GPU: resources.workers_per_cell, cpus_per_worker, gpus_per_worker)", address, out)


def _preflight(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out) -> None:
    """Missing weights or data, before anything runs. On local Ray the driver's files are the workers' files, so a
    sweep that lacks them is refused (else every cell would start, fail and be retried on each rerun). On a
    cluster the workers may hold them (docs/cluster.md: data on the GPU nodes), so it is a warning."""
    from raydw.plan import missing_inputs
    from raydw.trackers import check as check_trackers

    check_trackers(spec.trackers, f"sweep {spec.name}")  # issue 18: a tracker whose package is absent, before Ray
    miss = missing_inputs(spec, data_root, store)
    bad = unreadable_inputs(spec, store)  # files that are there but cannot be used: refused wherever the cells run
    if bad:
        listed = "\n".join(f"  {m}" for m in bad)
        raise SpecError(f"sweep {spec.name}: input files that cannot be used, nothing was run:\n{listed}")
    if not miss:
        return
    listed = "\n".join(f"  {m}" for m in miss)
    if _cluster_address(address):
        out(f"inputs missing on this machine (the driver); cells fail unless the cluster's workers have them:\n{listed}")
        return
    raise SpecError(f"sweep {spec.name}: inputs missing on this machine, nothing was run:\n{listed}")


def unreadable_inputs(spec: SweepSpec, store: Store) -> list[str]:
    """`weights:` files and import mask files present on this machine that the sweep could not use (damaged,
    a pickle payload, not a state dict, wrong keys or shapes for the arch), each with the file and the reason.
    Checked before Ray starts, where the driver reads them (register_weights, ensure_masks); cheap: tensors are
    memory-mapped and compared by shape with the arch built on the meta device."""
    from raydw.cells import pretraining_arch
    from raydw.models.catalog import PRETRAINED, local_weights_path
    from raydw.models.convert import CheckpointError, check_weights
    from raydw.pruning.importer import check_mask_file

    out = []
    for i, p in enumerate(spec.pretrainings):
        if p.weights is None or store.get("pretrained", pretrained_id(p)) is not None:
            continue
        path = local_weights_path(p.weights)
        if not path.is_file():
            continue  # missing: missing_inputs says so, with the command that fetches it
        entry = PRETRAINED.get(p.weights)
        try:
            check_weights(path, pretraining_arch(p), entry.format if entry else None)
        except CheckpointError as e:
            out.append(f"pretrainings.{i}.weights ({p.name}): {e}")
    for i, t in enumerate(spec.tickets):
        for name, f in (t.files.items() if t.method == "import" else ()):
            try:
                check_mask_file(f)
            except FileNotFoundError:
                continue  # missing_inputs says so (unless its mask is stored already)
            except ValueError as e:
                out.append(f"tickets.{i}.files.{name}: {e}")
    return out


def _pretrain_jobs(spec: SweepSpec, store: Store, needed: set[str], data_root: str | None) -> list:
    """Stage 1: pre-trained weights. Files are registered now; recipes not yet stored become Ray Train jobs."""
    from raydw import tickets
    from raydw.run.pipeline import Job

    jobs = []
    for p in (p for p in spec.pretrainings if pretrained_id(p) in needed):
        pid = pretrained_id(p)
        if p.weights is not None:
            tickets.register_weights(store, p)
        elif store.get("pretrained", pid) is None:
            jobs.append(Job("pretrain", pid, f"pre-train {p.name}", lambda p=p: _pretrain_config(store, spec, p, data_root)))
    return jobs


def _base_config(spec: SweepSpec, store: Store, data_root: str | None) -> dict:
    return {"storage": store.uri, "sweep": spec.name, "eval": spec.eval.model_dump(mode="json"),
            "resources": spec.resources.model_dump(), "torch_threads": spec.resources.torch_threads,
            "data_root": data_root or spec.data.root, "git_commit": _commit()}


def _tune_stage(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out) -> dict[str, dict]:
    """`tune:` on: tune every group without a stored recipe (its pre-trained model first), then return all recipes."""
    from raydw.cells import tune_groups

    recipes = store.recipes()
    pending = [g for g in tune_groups(spec) if g.tune_id not in recipes]
    if not pending:
        return recipes
    from raydw.run.pipeline import StagedSearcher
    from raydw.run.tuning import run_tuning

    out(f"tune: {len(pending)} dense recipe(s) to tune first, {spec.tune.num_samples} Optuna trials each "
        "(the chosen recipe is then held fixed for the dense cell and every ticket of its group)")
    connect(address)
    _check_cells_fit(spec, address, out)
    conc = max_concurrent(spec)
    jobs = _pretrain_jobs(spec, store, {g.base.pretrained_id for g in pending}, data_root)
    if jobs:
        _tune_jobs(StagedSearcher(jobs, store), f"{spec.name}-pretrain-{dt.datetime.now():%Y%m%d-%H%M%S}", store, conc,
                   [_progress_callback(0, conc)])
    ready = set(store.names("pretrained"))
    for g in (g for g in pending if g.base.pretrained_id not in ready):
        out(f"  not tuned: {g.label()} (pre-trained model {g.base.pretrained_id} was not stored; its pre-training failed?)")
    pending = [g for g in pending if g.base.pretrained_id in ready]
    run_tuning(spec, store, pending, _base_config(spec, store, data_root), _index_sets(store, [g.base for g in pending]),
               conc, out)
    return store.recipes()


def _run_locked(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out, t0: float) -> Summary:
    recipes = _tune_stage(spec, store, address, data_root, out) if spec.tune.enabled else None
    cells, done = plan(spec, store, recipes)
    if spec.tune.enabled:  # a group's dense cell at the tuning seed is its best trial: stored, not trained twice
        from raydw.run.tuning import reuse_best_trials

        done |= reuse_best_trials(spec, store, cells, done, out)
    # A tuned group without a recipe (its pre-training failed, or every tuning trial did) does not run untuned.
    waiting = {c.cell_id for c in cells if c.tune_id is not None and c.recipe_id is None}
    todo = [c for c in cells if c.cell_id not in done and c.cell_id not in waiting]
    out(f"sweep {spec.name}: {len(cells)} cells, {len(cells) - len(todo) - len(waiting)} already done, {len(todo)} to run"
        + (f", {len(waiting)} without a tuned recipe (not run)" if waiting else "") + f"; store {store.uri}")
    if not todo:
        return _summary(spec, store, cells, 0, t0, out, not_run=waiting)

    from raydw.run.pipeline import Job, StagedSearcher

    connect(address)
    _check_cells_fit(spec, address, out)
    needed = {c.pretrained_id for c in todo}
    pres = [p for p in spec.pretrainings if pretrained_id(p) in needed]
    jobs: list[Job] = _pretrain_jobs(spec, store, needed, data_root)
    # Stage 2: IMP jobs (one per pre-training and IMP spec, each storing its rounds as found), index sets.
    for t in (t for t in spec.tickets if t.method == "imp"):
        for p in pres:
            cfg = _imp_config(store, spec, t, p)
            if cfg is not None:
                _check_fits(cfg["resources"], f"IMP {p.name} (tickets.imp.workers / cpus_per_worker)", address, out)
                jobs.append(Job("imp", f"imp-{cfg['pretrained_id']}-{t.rate}", f"IMP {p.name}", lambda cfg=cfg: cfg,
                                needs_pretrained=cfg["pretrained_id"]))
    index_ids = _index_sets(store, todo)
    # Stage 3: each cell starts as soon as its pre-trained model and its mask exist (an IMP round k cell does not
    # wait for round k+1), all in one Tuner so Tune's concurrency covers every stage.
    masks = _MaskBook(store, spec, out)
    base = _base_config(spec, store, data_root)
    stop = _early_stop_plan(spec, [c for c in cells if c.cell_id not in waiting])
    gate = None
    if spec.search.mode == "extreme":
        from raydw.run.adaptive import LevelGate

        gate = LevelGate(spec, cells, store)
    for c in todo:
        jobs.append(Job("cell", c.cell_id, c.label(),
                        lambda c=c: {**base, **masks.cell_inputs(c), "cell": c.to_dict(), "early_stop": stop.get(c.cell_id),
                                     "pretraining_kind": (store.get("pretrained", c.pretrained_id) or {}).get("kind"),
                                     "index_set_id": index_ids[_index_key(c)]},
                        needs_pretrained=c.pretrained_id, needs_imp=masks.imp_need(c),
                        needs_cell=stop[c.cell_id]["dense_cell_id"] if c.cell_id in stop else None,
                        gated=gate is not None and c.ticket_method != "dense"))
    conc = max_concurrent(spec)
    out(f"running {sum(j.kind == 'cell' for j in jobs)} cells"
        + "".join(f", {sum(j.kind == k for j in jobs)} {k} job(s)" for k in ("pretrain", "imp") if any(j.kind == k for j in jobs))
        + f" on Ray Tune + Ray Train, {conc} at a time")
    searcher = StagedSearcher(jobs, store, gate, cells_per_run=spec.resources.cells_per_run)
    from raydw import trackers  # issue 18: the spec's experiment trackers get every cell as a run

    _tune_jobs(searcher, f"{spec.name}-{dt.datetime.now():%Y%m%d-%H%M%S}", store, conc,
               [_progress_callback(len(todo), conc), *trackers.callbacks(spec.trackers, spec.name, out)])
    for j in searcher.blocked():
        out(f"  not run: {j.label} ({j.why_blocked})")
    if gate is not None:
        gate.update()
        rows = gate.rows(spec.name)
        for r in rows:
            store.write_row("searches", r)
            pct = lambda v: "none" if v is None else f"{v:.1%}"  # noqa: E731
            run = ", ".join(pct(v) for v in json.loads(r["levels_run"]))
            out(f"  search {r['pretraining']} {r['dataset']} f={r['data_fraction']:g} {r['ticket_method']} ({r['rule']}): "
                f"levels run {run}; extreme double-win {pct(r['max_win'])} (contiguous {pct(r['max_contig_win'])}); "
                f"{r['cells_saved']} cells saved{'' if r['consistent'] else '; NOT monotone'}")
    skipped = len(searcher.skipped()) if gate is not None else 0
    return _summary(spec, store, cells, len(todo) - skipped, t0, out, skipped, not_run=waiting)


def _early_stop_plan(spec: SweepSpec, cells: list[Cell]) -> dict[str, dict]:
    """Per ticket cell: its dense baseline (which then runs first) and when and how to compare against it."""
    es = spec.early_stop
    if not es.enabled:
        return {}
    by_id = {c.cell_id: c for c in cells}
    return {cid: {"dense_cell_id": did, "margin": es.margin, "metrics": list(es.metrics),
                  "grace": es.grace_for(by_id[cid].regime_obj())} for cid, did in dense_of(cells).items()}


def _commit() -> str | None:
    from raydw.provenance import git_commit

    return git_commit()


def _index_key(c: Cell) -> tuple:
    return (c.dataset, c.data_fraction, c.fraction_method, c.seed if c.fraction_method == "stratified" else 0)


def _index_sets(store: Store, todo: list[Cell]) -> dict[tuple, str]:
    """Persist each data fraction's training indices once; every cell with the same key reuses them."""
    from raydw.train.setup import index_set

    ids: dict[tuple, str] = {}
    for c in todo:
        key = _index_key(c)
        if key not in ids:
            iid, idx = index_set(*key)
            if store.get("index_sets", iid) is None:
                store.write_row("index_sets", {"index_set_id": iid, "dataset": key[0], "fraction": key[1], "method": key[2],
                                               "seed": key[3], "n": len(idx), "indices": idx.tolist()})
            ids[key] = iid
    return ids


class _MaskBook:
    """Which mask a cell uses: IMP rounds are looked up as their job stores them; omp/random/import masks are
    computed in the driver the first time a cell of that (pre-training, ticket spec) is ready."""

    def __init__(self, store: Store, spec: SweepSpec, out):
        self.store, self.spec, self.out = store, spec, out
        self.by_pair: dict[tuple, dict] = {}

    def imp_need(self, c: Cell) -> tuple | None:
        from raydw import tickets

        t = self.spec.tickets[c.ticket_index]
        if c.ticket_method != "imp":
            return None
        return (c.pretrained_id, tickets.mask_params(t, c.pretraining), c.ticket_round)

    def cell_inputs(self, c: Cell) -> dict:
        from raydw import tickets

        if c.ticket_method == "dense":
            return {"mask_id": None, "sparsity": 0.0}
        t = self.spec.tickets[c.ticket_index]
        if c.ticket_method == "imp":
            row = tickets.stored_imp_rounds(self.store, c.pretrained_id, tickets.mask_params(t, c.pretraining))[c.ticket_round]
        else:
            key = (c.pretrained_id, c.ticket_index)
            if key not in self.by_pair:
                p = next(p for p in self.spec.pretrainings if p.name == c.pretraining)
                self.by_pair[key] = tickets.ensure_masks(self.store, p, t, log=self.out)
            row = self.by_pair[key][c.target_sparsity]
        return {"mask_id": row["mask_id"], "sparsity": row["sparsity"]}


def _imp_config(store: Store, spec: SweepSpec, t, p) -> dict | None:
    from raydw import tickets as tk

    need = tk.imp_rounds_needed(t)
    pid, params = pretrained_id(p), tk.mask_params(t, p.name)
    if all(k in tk.stored_imp_rounds(store, pid, params) for k in range(1, need + 1)):
        return None
    imp = t.imp or ImpSpec()
    resources = spec.resources.model_dump()  # an IMP job may ask for its own (ImageNet: DDP, JPEG decoding)
    if imp.workers is not None:
        resources["workers_per_cell"] = imp.workers
    if imp.cpus_per_worker is not None:
        resources["cpus_per_worker"] = imp.cpus_per_worker
    return {"storage": store.uri, "pretrained_id": pid, "name": p.name, "params": params,
            "tickets": t.model_dump(mode="json"), "resources": resources, "torch_threads": spec.resources.torch_threads}


def _tune_jobs(searcher, name: str, store: Store, concurrency: int, callbacks: list, grid: list[dict] | None = None) -> None:
    """The one place a Tuner is built: trials come from `searcher` (the sweep's staged searcher), or, with `grid`,
    one trial per config (`raydw pretrain`); each trial runs _job_entry in the driver's small resource bundle."""
    from ray import tune

    if grid is not None:
        space, tc = {"kind": "pretrain", "job": tune.grid_search(grid)}, {}
    else:
        space, tc = None, {"search_alg": searcher, "num_samples": -1}
    tuner = tune.Tuner(
        tune.with_resources(_job_entry, driver_resources()), param_space=space,
        tune_config=tune.TuneConfig(**tc, max_concurrent_trials=concurrency, reuse_actors=True,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=name, storage_path=store.tune_path, verbose=0, callbacks=callbacks),
    )
    tuner.fit()


def _job_entry(config: dict) -> None:
    from raydw.run import trials

    job = config["job"]
    {"pretrain": trials.pretrain_trial, "imp": trials.imp_trial, "cell": trials.cell_trial,
     "pack": trials.pack_trial}[config["kind"]](job)


def _summary(spec: SweepSpec, store: Store, cells: list[Cell], ran: int, t0: float, out, skipped: int = 0,
             not_run: set[str] = frozenset()) -> Summary:
    ids = {c.cell_id for c in cells} - set(not_run)  # cells waiting for a tuned recipe count as missing
    t = store.read_table("trials", columns=["cell_id", "status"]).to_pylist()
    status = {r["cell_id"]: r["status"] for r in t if r["cell_id"] in ids}
    done = sum(1 for s in status.values() if s == "done")
    failed = sum(1 for s in status.values() if s == "failed")
    stopped = sum(1 for s in status.values() if s == "stopped")
    s = Summary(total=len(cells), done=done, failed=failed, ran=ran, storage=store.uri, wall_s=time.time() - t0,
                stopped=stopped, skipped=skipped)
    out(f"\n{done}/{len(cells)} cells done, {failed} failed" + (f", {stopped} stopped early" if stopped else "")
        + (f", {skipped} not needed by the extreme search" if skipped else "")
        + f", {len(cells) - done - failed - stopped - skipped} missing"
        + (f" ({len(not_run)} without a tuned recipe)" if not_run else "") + f" ({s.wall_s:.0f} s)")
    if spec.tune.enabled:
        out(_recipes_text(store, cells))
    if done:
        out(_table(store, ids))
        out(_verdict_text(spec, store, ids))
        if not store.local:  # an object store: write the report where the user reads it
            out(f"report: raydw report {store.uri} --out report/")
        else:
            try:  # the report is a convenience here: a plotting problem must not turn a finished sweep into an error
                from raydw.report import write_report

                out(f"report: {write_report(store.uri, store.path('report'), cells=ids, **_verdict_settings(spec))}")
            except Exception as e:  # noqa: BLE001
                out(f"report: not written ({type(e).__name__}: {e}); try `raydw report {store.uri} --out DIR`")
    out(f"results: {store.uri}")
    out(f"  load:  python -c \"import raydw; print(raydw.results.load('{store.uri}').head())\"")
    out(f"  print: raydw results {store.uri}   verdicts: raydw verdicts {store.uri}")
    if failed:
        out("  failed cells are retried by running the same sweep again")
    return s


def _recipes_text(store: Store, cells: list[Cell]) -> str:
    """The tuned recipes the cells used, one line per group."""
    rows = {r["tune_id"]: r for r in store.read_table("recipes").to_pylist()}
    used = sorted({c.tune_id for c in cells if c.tune_id in rows}, key=lambda t: (rows[t]["pretraining"], rows[t]["regime"],
                                                                                 -rows[t]["data_fraction"]))
    lines = [f"tuned dense recipes (Optuna TPE; held fixed for every ticket of the group): {len(used)}"]
    for t in used:
        r = rows[t]
        lines.append(f"  {r['pretraining']} {r['dataset']} {r['regime']} f={r['data_fraction']:g}: {r['recipe']} "
                     f"({r['metric']} {r['value']:.3f}, best of {r['trials']} trials; recipe_id {r['recipe_id']})")
    return "\n".join(lines)


def _table(store: Store, ids: set[str]) -> str:
    """Test SA / RA (%) per pre-training and ticket level, one column per (regime, fraction), mean over seeds."""
    import pandas as pd

    from raydw.results import load

    df = load(store.uri)
    df = df[df.cell_id.isin(ids) & (df.status == "done")]
    if not len(df):
        return ""
    df = df.assign(ticket=[("dense" if m == "dense" else f"{m} {s:.1%}") for m, s in zip(df.ticket_method, df.sparsity)],
                   setting=[f"{r} f={f:g}" for r, f in zip(df.regime, df.data_fraction)])
    g = df.groupby(["pretraining", "dataset", "ticket", "setting"])[["sa", "ra"]].mean().reset_index()
    g["value"] = [f"{100 * a:.1f} / {100 * b:.1f}" for a, b in zip(g.sa, g.ra)]
    t = g.pivot(index=["pretraining", "dataset", "ticket"], columns="setting", values="value").fillna("-")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 200):
        return f"\ntest SA / RA in % (mean over seeds; SA at the SA-best, RA at the RA-best epoch)\n{t.to_string()}\n"


def _verdict_settings(spec: SweepSpec) -> dict:
    """The spec's `verdicts:` section as analysis.verdicts arguments (tol only for rule tol)."""
    v = spec.verdicts.model_dump()
    if v["rule"] != "tol":
        v["tol"] = 0.0
    return v


def _verdict_text(spec: SweepSpec, store: Store, ids: set[str]) -> str:
    """The sweep's verdicts with their intervals, under the spec's rule; a problem is said, never fatal here."""
    from raydw.analysis import AnalysisError, format_verdicts, trials_frame, verdicts

    try:
        df = trials_frame(store.uri, ids)
        if not (df["ticket_method"] != "dense").any():
            return ""
        return "\n" + format_verdicts(verdicts(df, **_verdict_settings(spec))) + "\n"
    except AnalysisError as e:
        return f"\nverdicts: not computed ({e})\n"


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
                _check_cells_fit(spec, address, out)
                cfgs = [_pretrain_config(store, spec, p, None) for p in recipes]
                _tune_jobs(None, f"{spec.name}-pretrain-{dt.datetime.now():%Y%m%d-%H%M%S}", store, max_concurrent(spec),
                           [], grid=cfgs)
            except KeyboardInterrupt:
                _shutdown_after_interrupt()
                raise
    for p in spec.pretrainings:
        row = store.get("pretrained", pretrained_id(p))
        out(f"{p.name}: " + (f"{row['pretrained_id']} {row['kind']} clean {row['clean_acc']:.3f} robust {row['robust_acc']:.3f}"
                             if row and row.get("clean_acc") is not None else "not trained (weights come from a file)"))
