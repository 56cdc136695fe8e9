"""`raydw sweep --dry-run`: the cells, what each asks of the cluster, what is already done, what is missing.

Torch- and Ray-free, so it answers in about a second even for the paper's grid.
"""
from __future__ import annotations

import json
from collections import Counter

from raydw.planning.cost_source import plan_text
from raydw.planning.inputs import missing_inputs
from raydw.planning.plan import Plan
from raydw.spec import SweepSpec
from raydw.store import Store


def dry_run(spec: SweepSpec, storage: str, data_root: str | None = None) -> str:
    store = Store(storage)
    p = Plan.of(spec, store)
    cells, done = p.cells, p.done
    r = spec.resources
    lines = [f"sweep {spec.name}: {len(cells)} cells, {len(done)} done, {p.to_run_text()}"
             + (f", {len(p.waiting)} waiting for a tuned recipe" if p.waiting else "") + f" -> store {store.uri}",
             f"each cell: {r.workers_per_cell} Ray Train worker(s) x ({r.cpus_per_worker} CPU, {r.gpus_per_worker} GPU)"
             + (f", at most {r.max_concurrent_cells} at once" if r.max_concurrent_cells else "")]
    if spec.search.mode == "extreme":
        lines.append(f"search: extreme ({spec.search.rule} rule, verify {spec.search.verify}): the table is the full grid; "
                     "dense cells run first, then only the ticket levels the search asks for (docs/search.md)")
    if p.seeds is not None:
        lines.append(p.seeds.describe() + "; the table lists every seed up to max: 'todo' runs now, 'may follow' runs "
                     "if its comparison stays open, 'not needed' will not (docs/findings.md, \"Adaptive seeds\")")
    if spec.early_stop.enabled:
        lines.append(f"early stopping: tickets trailing their dense model by > {spec.early_stop.margin} after the grace period stop")
    if spec.tune.enabled:
        lines += _tune_lines(p)
    lines.append("")
    hdr = f"{'cell_id':16s}  {'pretraining':11s} {'ticket':7s} {'sparsity':>8s}  {'dataset':9s} {'regime':12s} {'fraction':>8s} {'seed':>4s} {'epochs':>6s}  status"
    lines += [hdr, "-" * len(hdr)]
    for c in cells:
        lines.append(f"{c.cell_id:16s}  {c.pretraining:11s} {c.ticket_method:7s} {c.target_sparsity:8.4f}  {c.dataset:9s} "
                     f"{c.regime:12s} {c.data_fraction:8g} {c.seed:4d} {c.regime_spec.epochs:6d}  "
                     f"{_state(c.cell_id, p)}")
    by = Counter((c.pretraining, c.regime, c.data_fraction) for c in cells)
    lines += ["", "cells per (pretraining, regime, fraction): " + ", ".join(f"{k[0]}/{k[1]}/{k[2]:g}: {v}" for k, v in sorted(by.items()))]
    epochs = sum(c.regime_spec.epochs for c in cells)
    lines.append(f"fine-tuning epochs in total: {epochs}")
    lines += ["", plan_text(p)]
    miss = missing_inputs(spec, data_root, plan=p)
    lines += ["", "missing inputs:" if miss else "inputs: all present"] + [f"  {m}" for m in miss]
    return "\n".join(lines)


def _state(cell_id: str, p) -> str:
    """A cell's line in the table: done (or stopped, final), tune first, or todo with why it runs again."""
    stored = p.status.get(cell_id)
    if cell_id in p.done:
        return stored
    if cell_id in p.waiting:
        return "tune first"
    if cell_id in p.not_needed:
        return "not needed (decided)"
    if p.seeds is not None and cell_id not in p.seeds.asked:
        return "may follow"
    return f"todo ({stored})" if stored else "todo"


def _tune_lines(p: Plan) -> list[str]:
    """Which dense recipes are tuned (stored) and which are still to tune, with their stored trial counts."""
    t = p.spec.tune
    todo = [i for i in p.tuning if i.recipe is None]
    out = [f"tune: {len(p.tuning)} dense recipe(s) (pre-training, dataset, regime, fraction), {len(p.tuning) - len(todo)} tuned "
           f"(stored), {len(todo)} to tune first: Optuna TPE (seed {t.seed}, {t.n_startup()} random startup trials), "
           f"{t.num_samples} dense trials each over {sorted(t.space.fields())}; the chosen recipe is then held fixed for "
           "the group's dense cell and every ticket (docs/tuning.md)"]
    for i in p.tuning:
        g = i.group
        if i.recipe is not None:
            r = p.view.recipe_rows.get(g.tune_id, {})
            out.append(f"  tuned   {g.label()}: {json.dumps(i.recipe, sort_keys=True)} ({g.metric} "
                       f"{r.get('value', float('nan')):.3f}, {r.get('trials')} trials)")
        else:
            out.append(f"  to tune {g.label()}: {i.trials} of {t.num_samples} trials stored, maximize {g.metric}")
    if todo:
        out.append("  cells marked 'tune first' are listed with their regime as written: their ids (and epochs, where tuned) "
                   "are known only once their recipe is chosen")
    return out
