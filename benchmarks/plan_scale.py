"""The plan and the scheduler, without Ray, over 10x and 100x the paper's grid on a store holding part of it.

    python benchmarks/plan_scale.py [SCALE ...]        # default: 1 10 100 (468, 4,680 and 46,800 cells)

Each scale is sweeps/paper.yaml with SCALE x its seeds (seeds 1..SCALE), against a store that holds done rows for
half of its cells (one compacted part, as a store looks after a sweep), its three pre-trained models and every IMP
round. Each measurement runs in a fresh process (peak RSS is the process's): the spec's load and expansion, the
plan (one read of the store, every stage's items), and the scheduler releasing every cell to run, one per call, as
Ray Tune would ask (the jobs are not built: the builder returns the cell; JobBuilder's cost is the cell's own).
Prints one line per scale: seconds and peak memory to plan, seconds per cell handed out.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spec(scale: int):
    import yaml

    from raydw.spec import parse_spec

    d = yaml.safe_load((ROOT / "sweeps" / "paper.yaml").read_text())
    d["seeds"] = list(range(1, scale + 1))
    d["max_cells"] = 10 ** 7
    return parse_spec(d)


def make_store(scale: int, where: Path) -> str:
    """A store with the pre-trainings, every IMP round and done rows for every other cell (one compacted part)."""
    from raydw.cells import expand, pretrained_id
    from raydw.store import TRIALS, Store
    from raydw.tickets.registry import get, params_json

    spec = _spec(scale)
    store = Store(str(where))
    for p in spec.pretrainings:
        store.write_row("pretrained", {"pretrained_id": pretrained_id(p), "name": p.name, "arch": "resnet50", "kind": "standard"})
        t = spec.tickets[0]
        params = get("imp").params(t, p.name)
        for k, target in t.levels():
            if k:
                store.write_row("masks", {"mask_id": f"{pretrained_id(p)}-{k}", "pretrained_id": pretrained_id(p), "method": "imp",
                                          "params": params_json(params), "round": k, "target_sparsity": target, "sparsity": target,
                                          "bits": b""})  # provenance only: the scheduler never reads the bits
    cells = expand(spec)
    rows = [{**{k: v for k, v in c.row_fields().items() if k in TRIALS.names}, "status": "done"} for c in cells[::2]]
    store.write_rows("trials", "part-000001-00000000", sorted(rows, key=lambda r: r["cell_id"]))  # as raydw compact leaves it
    return store.uri


def measure(scale: int, uri: str) -> dict:
    """In this process: load + expand, plan, then hand out every cell to run."""
    from raydw.planning.plan import Plan
    from raydw.planning.schedule import FINISHED, Scheduler, sweep_tasks
    from raydw.store import Store

    t0 = time.perf_counter()
    spec = _spec(scale)
    store = Store(uri)
    t1 = time.perf_counter()
    plan = Plan.of(spec, store)
    t2 = time.perf_counter()
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    class CellsOnly:  # the scheduler's own cost: a released job is not built (JobBuilder's cost is the cell's own)
        def cell(self, c, view, dense_cell_id=None):
            return c

    tasks = sweep_tasks(plan, CellsOnly())
    sched = Scheduler(tasks, store)
    handed = 0
    t3 = time.perf_counter()
    while True:
        got = sched.next()
        if got == FINISHED:
            break
        if got is None:
            continue
        handed += len(got)
        sched.ended()  # the trial ends at once: every call looks at the store again (the worst case for polling)
    t4 = time.perf_counter()
    return {"scale": scale, "cells": len(plan.cells), "done": len(plan.done), "todo": len(plan.todo),
            "load_s": t1 - t0, "plan_s": t2 - t1, "rss_plan_mib": rss_plan, "handed": handed,
            "schedule_s": t4 - t3, "per_cell_ms": 1000 * (t4 - t3) / max(handed, 1),
            "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--measure"]:
        print(json.dumps(measure(int(argv[1]), argv[2])))
        return
    scales = [int(a) for a in argv] or [1, 10, 100]
    for scale in scales:
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            uri = make_store(scale, Path(d) / "store")
            made = time.perf_counter() - t
            out = subprocess.run([sys.executable, __file__, "--measure", str(scale), uri], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"x{scale:<4d} {r['cells']:>6,} cells ({r['done']:,} done, {r['todo']:,} to run; store made in {made:.0f} s): "
                  f"spec {r['load_s']:.2f} s, plan {r['plan_s']:.2f} s, peak RSS after planning {r['rss_plan_mib']:.0f} MiB; "
                  f"scheduler handed out {r['handed']:,} cells in {r['schedule_s']:.2f} s ({r['per_cell_ms']:.2f} ms per cell, "
                  f"peak RSS {r['rss_peak_mib']:.0f} MiB)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
