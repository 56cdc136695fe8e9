"""The sweep driver: spec -> cells -> (1) pre-trained weights -> (2) masks and index sets -> (3) Ray Tune cells.

Each stage asks the store what exists first, so rerunning a sweep resumes it: only cells without a `done`
row run again (missing and failed ones), and a half-done cell's Train run continues from its last epoch.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import sys
import time
from dataclasses import dataclass

from raydw.cells import Cell, expand, pretrained_id
from raydw.spec import SweepSpec
from raydw.store import Store, config_json

# Ray Train's controller polls its workers every 2 s by default; a report then waits up to 2 s to surface
# and a toy cell pays ~6 s more (ray-notes sections 3 and 9). 0.2 s costs nothing measurable.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
DRIVER_RESOURCE = "TRAIN_DRIVER"


@dataclass
class Summary:
    total: int
    done: int
    failed: int
    ran: int
    storage: str
    wall_s: float


def connect(address: str | None, verbose: bool = False) -> None:
    """Join a cluster (address or RAY_ADDRESS) or start a local Ray with a custom driver resource.

    Trial drivers (Tune trials that only drive a TorchTrainer) hold the custom resource TRAIN_DRIVER instead
    of a CPU, so on a 2-CPU machine the Train workers always find their CPUs: the deadlock of ray-notes
    pitfall 1 cannot happen by construction.
    """
    import logging

    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        return
    env = {"env_vars": {k: os.environ[k] for k in RAY_ENV}}
    addr = address or os.environ.get("RAY_ADDRESS")
    # Train workers log every report and checkpoint; progress comes from the Tune callback instead, and a
    # cell's error lands in its trials row. --verbose brings the worker logs back.
    common = dict(include_dashboard=False, runtime_env=env, logging_level=logging.INFO if verbose else logging.WARNING,
                  log_to_driver=verbose)
    if addr:
        ray.init(address=addr, **common)
    else:  # "local" always starts a fresh Ray, never a dead cluster left in /tmp/ray (ray-notes section 9)
        ray.init(address="local", num_cpus=os.cpu_count(), resources={DRIVER_RESOURCE: 1000}, **common)


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
    if n < 1:
        raise RuntimeError(f"the cluster ({dict(total)}) cannot fit one cell of {r.workers_per_cell} workers x "
                           f"{r.cpus_per_worker} CPU / {r.gpus_per_worker} GPU")
    return n


def _tune(entry, configs: list[dict], name: str, store: Store, concurrency: int, callbacks: list) -> None:
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(entry, driver_resources()),
        param_space={"job": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=name, storage_path=store.tune_path, verbose=0, callbacks=callbacks),
    )
    tuner.fit()


def _cell_entry(config: dict) -> None:
    from raydw.run.trials import cell_trial

    cell_trial(config["job"])


def _pretrain_entry(config: dict) -> None:
    from raydw.run.trials import pretrain_trial

    pretrain_trial(config["job"])


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _progress_callback(total: int, concurrency: int):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished cell, with an estimate of the time left."""

        def __init__(self):
            self.n, self.t0 = 0, time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.n += 1
            r = trial.last_result or {}
            c = trial.config["job"]["cell"]
            label = Cell.from_dict(c).label()
            took = r.get("time_total_s")
            if r.get("status") == "done":
                ra = r.get("ra_at_ra_best") if r.get("ra_at_ra_best") is not None else r.get("ra_at_sa_best")
                what = f"SA {_num(r.get('sa_at_sa_best')):.3f} RA {_num(ra):.3f}"
            else:
                what = f"FAILED: {str(r.get('error', 'see the trials row'))[:120]}"
            left = (time.time() - self.t0) / self.n * (total - self.n)
            _say(f"[{self.n}/{total}] {label}: {what}" + (f" ({took:.0f} s)" if took else "") +
                (f", ~{left / 60:.1f} min left" if self.n < total else ""))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.on_trial_complete(iteration, trials, trial)

    return Progress()


def _imp_entry(config: dict) -> None:
    from raydw.run.trials import imp_trial

    imp_trial(config["job"])


def _run_imp(spec: SweepSpec, store: Store, pres, stamp: str, out) -> None:
    """One Ray Train IMP job per pre-training that lacks rounds, all in parallel; each stores its rounds as found."""
    from raydw import tickets as tk

    cfgs = []
    for t in (t for t in spec.tickets if t.method == "imp"):
        need = tk.imp_rounds_needed(t)
        for p in pres:
            pid, params = pretrained_id(p), tk.mask_params(t, p.name)
            have = tk.stored_imp_rounds(store, pid, params)
            if all(k in have for k in range(1, need + 1)):
                continue
            out(f"  IMP {p.name}: rounds {sorted(have) or 'none'} stored, running to round {need}")
            cfgs.append({"storage": store.uri, "pretrained_id": pid, "name": p.name, "params": params,
                         "tickets": t.model_dump(mode="json"), "resources": spec.resources.model_dump(),
                         "torch_threads": spec.resources.torch_threads})
    if cfgs:
        _tune(_imp_entry, cfgs, f"{spec.name}-imp-{stamp}", store, max_concurrent(spec), [])


def _pretrain_config(store: Store, spec: SweepSpec, p, data_root: str | None) -> dict:
    recipe = p.recipe.model_dump(mode="json")
    return {"storage": store.uri, "pretrained_id": pretrained_id(p), "name": p.name, "recipe": recipe,
            "recipe_json": config_json(recipe), "resources": spec.resources.model_dump(),
            "torch_threads": spec.resources.torch_threads, "data_root": data_root or spec.data.root}


def plan(spec: SweepSpec, store: Store) -> tuple[list[Cell], set[str]]:
    return expand(spec), store.done_cells()


def run_sweep(spec: SweepSpec, storage: str | None = None, address: str | None = None, data_root: str | None = None,
              out=print) -> Summary:
    t0 = time.time()
    store = Store(storage or spec.storage)
    store.check_writable()
    with store.lock(f"raydw sweep {spec.name}"):
        return _run_locked(spec, store, address, data_root, out, t0)


def _run_locked(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out, t0: float) -> Summary:
    cells, done = plan(spec, store)
    todo = [c for c in cells if c.cell_id not in done]
    out(f"sweep {spec.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run; store {store.uri}")
    if not todo:
        return _summary(spec, store, cells, 0, t0, out)

    from raydw import tickets
    from raydw.provenance import git_commit
    from raydw.train.setup import index_set

    connect(address)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    needed = {c.pretrained_id for c in todo}
    pres = [p for p in spec.pretrainings if pretrained_id(p) in needed]

    # Stage 1: pre-trained weights (recipes train as Ray Train jobs, in parallel; files are registered).
    recipes = [p for p in pres if p.recipe is not None and store.get("pretrained", pretrained_id(p)) is None]
    if recipes:
        out(f"stage 1: pre-training {len(recipes)} model(s) on Ray Train: {', '.join(p.name for p in recipes)}")
        _tune(_pretrain_entry, [_pretrain_config(store, spec, p, data_root) for p in recipes],
              f"{spec.name}-pretrain-{stamp}", store, max_concurrent(spec), [])
        missing = [p.name for p in recipes if store.get("pretrained", pretrained_id(p)) is None]
        if missing:
            raise RuntimeError(f"pre-training failed for {missing}; see the Ray logs above")
    for p in pres:
        if p.weights is not None:
            tickets.register_weights(store, p)
        row = store.get("pretrained", pretrained_id(p))
        out(f"  pre-trained {p.name}: {row['kind']} {row['arch']} on {row['dataset']}"
            + (f", clean {row['clean_acc']:.3f} robust {row['robust_acc']:.3f}" if row.get("clean_acc") is not None else ""))

    # Stage 2: masks per pre-training, index sets per data fraction; computed once, stored as they appear.
    out("stage 2: tickets and data fractions")
    if any(t.method == "imp" for t in spec.tickets):
        _run_imp(spec, store, pres, stamp, out)
    masks = {(pretrained_id(p), i): tickets.ensure_masks(store, p, t, log=out)
             for p in pres for i, t in enumerate(spec.tickets)}
    index_ids: dict[tuple, str] = {}
    for c in todo:
        key = (c.dataset, c.data_fraction, c.fraction_method, c.seed if c.fraction_method == "stratified" else 0)
        if key not in index_ids:
            iid, idx = index_set(*key)
            if store.get("index_sets", iid) is None:
                store.write_row("index_sets", {"index_set_id": iid, "dataset": key[0], "fraction": key[1], "method": key[2],
                                               "seed": key[3], "n": len(idx), "indices": idx.tolist()})
            index_ids[key] = iid

    # Stage 3: one Tune trial per missing cell, each a Ray Train run.
    commit = git_commit()
    configs = []
    for c in todo:
        m = None if c.ticket_method == "dense" else masks[(c.pretrained_id, c.ticket_index)][c.target_sparsity]
        configs.append({
            "storage": store.uri, "sweep": spec.name, "cell": c.to_dict(),
            "mask_id": m["mask_id"] if m else None, "sparsity": m["sparsity"] if m else 0.0,
            "index_set_id": index_ids[(c.dataset, c.data_fraction, c.fraction_method, c.seed if c.fraction_method == "stratified" else 0)],
            "eval_attack": spec.eval.attack.model_dump(mode="json"), "resources": spec.resources.model_dump(),
            "torch_threads": spec.resources.torch_threads, "data_root": data_root or spec.data.root, "git_commit": commit,
        })
    conc = max_concurrent(spec)
    out(f"stage 3: {len(configs)} cells on Ray Tune + Ray Train, {conc} at a time")
    _tune(_cell_entry, configs, f"{spec.name}-{stamp}", store, conc, [_progress_callback(len(configs), conc)])
    return _summary(spec, store, cells, len(configs), t0, out)


def _summary(spec: SweepSpec, store: Store, cells: list[Cell], ran: int, t0: float, out) -> Summary:
    ids = {c.cell_id for c in cells}
    t = store.read_table("trials", columns=["cell_id", "status"]).to_pylist()
    status = {r["cell_id"]: r["status"] for r in t if r["cell_id"] in ids}
    done = sum(1 for s in status.values() if s == "done")
    failed = sum(1 for s in status.values() if s == "failed")
    s = Summary(total=len(cells), done=done, failed=failed, ran=ran, storage=store.uri, wall_s=time.time() - t0)
    out(f"\n{done}/{len(cells)} cells done, {failed} failed, {len(cells) - done - failed} missing ({s.wall_s:.0f} s)")
    out(f"results: {store.uri}")
    out(f"  load:  python -c \"import raydw; print(raydw.results.load('{store.uri}').head())\"")
    out(f"  print: raydw results {store.uri}")
    if failed:
        out("  failed cells are retried by running the same sweep again")
    return s


def run_pretraining(spec: SweepSpec, storage: str | None = None, address: str | None = None, out=print) -> None:
    """`raydw pretrain`: stage 1 alone (a later sweep with the same recipes finds them in the store)."""
    store = Store(storage or spec.storage)
    store.check_writable()
    recipes = [p for p in spec.pretrainings if p.recipe is not None and store.get("pretrained", pretrained_id(p)) is None]
    if recipes:
        connect(address)
        cfgs = [_pretrain_config(store, spec, p, None) for p in recipes]
        _tune(_pretrain_entry, cfgs, f"{spec.name}-pretrain-{dt.datetime.now():%Y%m%d-%H%M%S}", store,
              max_concurrent(spec), [])
    for p in spec.pretrainings:
        row = store.get("pretrained", pretrained_id(p))
        out(f"{p.name}: " + (f"{row['pretrained_id']} {row['kind']} clean {row['clean_acc']:.3f} robust {row['robust_acc']:.3f}"
                             if row and row.get("clean_acc") is not None else "not trained (weights come from a file)"))
