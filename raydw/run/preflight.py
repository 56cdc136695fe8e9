"""`raydw sweep SPEC --preflight`: every distinct execution path of a sweep, run for a few steps before the sweep.

A path is what runs different code or different inputs: each (pre-training, dataset, regime, ticket method,
evaluation attack) of the spec's cells, each IMP job, each pre-training recipe. One cell stands for each cell path
(the lowest IMP round, else the first in plan order). Each path runs as the sweep runs it (a Ray Tune trial driving
Ray Train workers, the real model, weights, mask, data files, protocol and attacks) shrunk by a Probe
(raydw.train.probe): a warm-up epoch and a timed epoch of `steps` batches, one validation and one test batch with
the evaluation attack, a checkpoint reported and restored, and its rows written -- in a scratch store next to the
sweep's, never the sweep's own. Then the whole sweep's cost from what was measured (raydw.run.preflight_cost).
"""
from __future__ import annotations

import datetime as dt

from pathlib import Path as FsPath
from dataclasses import dataclass, replace

from raydw.cells import Cell, pretrained_id
from raydw.planning.inputs import check_inputs
from raydw.planning.plan import Needs, Plan, StoreView, imp_item
from raydw.run import tuner
from raydw.run.cluster import cluster_address, connect, max_concurrent
from raydw.run.jobs import ImpJob, JobBuilder, ProbeJob, batch_size
from raydw.run.pipeline import StagedSearcher
from raydw.planning.schedule import Task
from raydw.spec import ImpSpec, ResourceSpec, SpecError, SweepSpec
from raydw.store import Store
from raydw.tickets import registry
from raydw.train.probe import Probe
from raydw.ids import digest


@dataclass(frozen=True)
class Path:
    """One execution path: what kind of job, its axes (for --cover), and the cell that stands for it."""

    kind: str  # cell | imp | pretrain
    label: str
    pretraining: str
    axes: tuple[tuple[str, str], ...]
    cell: Cell | None = None
    ticket_index: int | None = None  # imp: which `tickets` entry

    @property
    def path_id(self) -> str:
        return digest(self.label)


def paths(spec: SweepSpec, cells: list[Cell]) -> list[Path]:
    """Every distinct path of the spec: recipes, then IMP jobs, then cell paths, in plan order."""
    out = [Path("pretrain", f"pre-train {p.name} ({p.recipe.kind} on {p.recipe.dataset})", p.name,
                (("pretraining", p.name),)) for p in spec.pretrainings if p.recipe is not None]
    seen = set()
    for i, t in enumerate(spec.tickets):
        if t.method != "imp":
            continue
        imp = t.imp or ImpSpec()
        for p in spec.pretrainings:
            key = (pretrained_id(p), registry.params_json(registry.get("imp").params(t, p.name)))
            if key not in seen:
                seen.add(key)
                out.append(Path("imp", f"IMP {p.name} ({imp.regime_for(p.name)} on {imp.dataset})", p.name,
                                (("imp", f"{p.name}/{imp.regime_for(p.name)}"),), ticket_index=i))
    reps: dict[tuple, Cell] = {}
    for c in cells:
        key = (c.pretraining, c.dataset, c.regime, c.ticket_method, str(c.eval_spec.model_dump(mode="json")))  # as before: path ids
        old = reps.get(key)
        if old is None or (c.ticket_round or 0) < (old.ticket_round or 0):
            reps[key] = c
    n_eval = len({k[4] for k in reps})
    for (pre, ds, reg, method, ev), c in reps.items():
        label = f"{pre} {method} {ds} {reg}" + (f" eval {ev}" if n_eval > 1 else "")
        out.append(Path("cell", label, pre, (("pretraining", pre), ("dataset", ds), ("regime", reg),
                                             ("method", method), ("eval", ev)), cell=c))
    return out


def cover(ps: list[Path]) -> list[Path]:
    """Fewest cell paths (greedy) that take every value of every axis at least once, with every IMP and recipe path:
    every branch runs, not every combination."""
    cells = [p for p in ps if p.kind == "cell"]
    need = {a for p in cells for a in p.axes}
    chosen: list[Path] = []
    while need:
        best = max(cells, key=lambda p: len(need & set(p.axes)))
        chosen.append(best)
        need -= set(best.axes)
    return [p for p in ps if p.kind != "cell" or p in chosen]


def scratch_uri(storage: str) -> str:
    """A fresh scratch store beside the sweep's (on the same shared storage, so a cluster's workers reach it)."""
    base, sep, query = storage.partition("?")
    return f"{base.rstrip('/')}-preflight/{dt.datetime.now():%Y%m%d-%H%M%S}" + (sep + query if sep else "")


def fitted(res: ResourceSpec, total: dict, on_cluster: bool) -> ResourceSpec:
    """Resources a path runs on: the job's own where the cluster has them (or on a cluster, whose autoscaler adds
    nodes), else one worker with what this machine has (a laptop or CI checking the paper's GPU spec). Never
    restarted: a path that fails is the finding."""
    need_cpu, need_gpu = res.workers_per_cell * res.cpus_per_worker, res.workers_per_cell * res.gpus_per_worker
    if on_cluster or (need_cpu <= total.get("CPU", 0) and need_gpu <= total.get("GPU", 0)):
        return res.model_copy(update={"max_failures": 0})
    gpu = 1 if res.gpus_per_worker > 0 and total.get("GPU", 0) >= 1 else 0
    return res.model_copy(update={"workers_per_cell": 1, "cpus_per_worker": min(res.cpus_per_worker, max(1, total.get("CPU", 1) // 2)),
                                  "gpus_per_worker": gpu, "max_failures": 0})


def probe_for(probe: Probe, batch: int, asked: int, workers: int) -> Probe:
    """A path fitted onto fewer workers than its spec asks keeps each worker's batch (and so its memory), not the
    whole batch on one; an explicit --batch is kept as given."""
    if probe.batch is not None or workers >= asked:
        return probe
    return replace(probe, batch=max(1, batch * workers // asked))


def preflight(spec: SweepSpec, storage: str | None = None, address: str | None = None, data_root: str | None = None,
              steps: int = 2, batch: int | None = None, cover_only: bool = False, scratch: str | None = None,
              out=print) -> int:
    """Run the spec's paths; print one line per path and the measured cost plan. 0 only when every path ran."""
    import ray

    from raydw.run.preflight_cost import cost_lines

    real = Store(storage or spec.storage)
    check_inputs(spec, real, address, data_root, out, readable=False)  # a damaged file fails its own paths, named
    full = Plan.of(spec, real)
    every = paths(spec, full.cells)
    chosen = cover(every) if cover_only else every
    store = Store(scratch or scratch_uri(real.uri))
    _check_scratch(store, real)
    store.check_writable()
    probe = Probe(steps, batch, rounds=max([2, *(p.cell.ticket_round or 0 for p in chosen if p.kind == "cell")]))
    out(f"preflight {spec.name}: {len(chosen)} of {len(every)} paths" + (" (--cover: every value of every axis)" if cover_only else "")
        + f", {steps} timed step(s) each at " + (f"batch {batch}" if batch else "each path's own batch size")
        + f"; scratch store {store.uri} (the sweep's store {real.uri} is not touched)")
    connect(address)
    total, on_cluster = ray.cluster_resources(), bool(cluster_address(address))
    res = fitted(spec.resources, total, on_cluster)
    if res.workers_per_cell != spec.resources.workers_per_cell or res.gpus_per_worker != spec.resources.gpus_per_worker:
        r = spec.resources
        out(f"  resources: the spec asks {r.workers_per_cell} worker(s) x {r.cpus_per_worker:g} CPU / {r.gpus_per_worker:g} GPU "
            f"per cell; this Ray has {total.get('CPU', 0):g} CPU / {total.get('GPU', 0):g} GPU: each path runs on "
            f"{res.workers_per_cell} worker x {res.cpus_per_worker:g} CPU / {res.gpus_per_worker:g} GPU, and its figures are for that")
    probe_spec = spec.model_copy(update={"name": f"{spec.name}-preflight", "resources": res})
    builder = JobBuilder(probe_spec, store, data_root, out)
    failed: dict[str, str] = {}
    tasks = []
    from raydw.train.weights import register_weights  # torch, imported where needed (raydw.run.sweep._register)

    for p in spec.pretrainings:  # weights files are converted and checked into the scratch store, as a sweep does
        if p.weights is not None:
            try:
                register_weights(store, p)
            except Exception as e:  # noqa: BLE001 - this pre-training's paths fail, named; the others run
                failed[p.name] = f"its weights could not be registered: {type(e).__name__}: {str(e).splitlines()[0]}"
    by_pre = {p.name: p for p in spec.pretrainings}
    for path in chosen:
        if path.pretraining in failed:
            continue
        pre = by_pre[path.pretraining]
        pid = pretrained_id(pre)
        def wrap(job, path=path) -> ProbeJob:
            asked = job.resources.workers_per_cell
            if isinstance(job, ImpJob):  # IMP asks for its own workers / CPUs (tickets.imp): fitted as the cells are
                job = replace(job, resources=fitted(job.resources, total, on_cluster))
            return ProbeJob(job, probe_for(probe, batch_size(job), asked, job.resources.workers_per_cell),
                            path.path_id, path.label)
        if path.kind == "pretrain":
            tasks.append(Task("pretrain", path.path_id, path.label, lambda v, pre=pre, wrap=wrap: wrap(builder.pretrain(pre))))
        elif path.kind == "imp":
            t = spec.tickets[path.ticket_index]
            item = imp_item(spec, t, pre, StoreView())  # the scratch store holds no round: the job from round 1
            tasks.append(Task("imp", path.path_id, path.label, lambda v, item=item, wrap=wrap: wrap(builder.imp(item)),
                              Needs(pretrained=pid)))
        else:
            c = path.cell
            builder.index_sets([c])
            tasks.append(Task("cell", path.path_id, path.label, lambda v, c=c, wrap=wrap: wrap(builder.cell(c, v)),
                              Needs(pretrained=pid, imp=full.imp_need(c))))
    searcher = StagedSearcher(tasks, store)
    if tasks:
        conc = max_concurrent(probe_spec)  # the sweep's rule, on the fitted resources
        out(f"  running {len(tasks)} path(s) on Ray Tune + Ray Train, {conc} at a time")
        tuner.fit(tuner.run_name(spec.name, "preflight"), store, conc,
                  [tuner.Progress(len(tasks), _lines, prefix="  ")], searcher)
    for t in searcher.blocked():
        failed.setdefault(t.key, f"not run: {t.why_blocked}")
    got = {r["path_id"]: r for r in store.read_table("preflight").to_pylist()}
    lines, ok = [], True
    for path in chosen:
        r = got.get(path.path_id)
        why = failed.get(path.path_id) or failed.get(path.pretraining)
        if why or r is None or r["status"] != "ok":
            ok = False
            lines.append(f"  FAILED  {path.label}: {why or (r or {}).get('error') or 'no row was stored'}")
        else:
            lines.append(f"  ok      {path.label}: {figures_text(r)}")
    out(f"paths ({sum(ln.startswith('  ok') for ln in lines)} of {len(chosen)} ok):")
    for ln in lines:
        out(ln)
    for ln in cost_lines(spec, full, got.values(), every):
        out(ln)
    out(f"rows of the probes: {store.uri} (tables preflight, trials, epochs, masks); delete it when done")
    return 0 if ok else 1


def _check_scratch(store: Store, real: Store) -> None:
    """The scratch store is a new place: not the sweep's store, not inside it, and not an earlier preflight's (whose
    rows and Train runs would be taken for this one's)."""
    inside = store.local and real.local and FsPath(store.root).resolve().is_relative_to(FsPath(real.root).resolve())
    if store.uri == real.uri or inside:
        raise SpecError(f"--scratch {store.uri} is (inside) the sweep's store {real.uri}: a preflight never writes there; "
                        "give another folder, or leave --scratch out for one beside it")
    if store.local and FsPath(store.root).exists() and any(FsPath(store.root).iterdir()):
        raise SpecError(f"--scratch {store.uri} is not empty (an earlier preflight's?): give a new folder, or leave "
                        "--scratch out for a fresh one")
    if not store.local and store.names("preflight"):
        raise SpecError(f"--scratch {store.uri} holds an earlier preflight's rows: give a new URI")


def figures_text(r: dict) -> str:
    what = "per evaluated image (clean + evaluation attack)" if r["kind"] == "cell" else "per validation image"
    mem = f"{r['peak_bytes'] / 2**30:.2f} GiB" if r.get("peak_bytes") is not None else "?"
    return (f"{r['s_per_step']:.3g} s/step at batch {r['batch']}, {r['s_per_eval_image']:.3g} s {what}, "
            f"peak {r['memory']} {mem}, {r['device']} x{r['workers']}, checkpoint restored")


def _lines(trial) -> list:
    pj: ProbeJob = trial.config["job"]
    r = Store(pj.run.storage).get("preflight", pj.path_id)
    if r is None:
        return [(pj.label, "FAILED: no row was stored")]
    return [(pj.label, "ok, " + figures_text(r) if r["status"] == "ok" else f"FAILED: {r['error']}")]


