"""The whole sweep's cost from a preflight's measurements, next to the dry run's FLOP plan (raydw.cost).

A path measured seconds per training step at batch B and seconds per evaluated image. Priced per image, every cell
still to run, each IMP job and each recipe costs its forward-equivalents (the FLOP plan's own counts: training
steps with their attack, validation, tests) at the rate its path measured, times the workers it ran on. Cells of a
path that was not run (--cover) take the rate of a path with the same compute (arch, protocol, regime, attacks).
Per-image time at a small batch overstates what a large batch costs on a GPU: the lines say the batch.
"""
from __future__ import annotations

from raydw.cost import ASSUMED_UTILISATION, H100_BF16_TFLOPS, cell_cost, cell_units, train_step
from raydw.cost_source import imp_job, imp_units, recipe_job, recipe_units
from raydw.cells import pretraining_arch
from raydw.spec import ImpSpec
from raydw.tickets.registry import imp_rounds_needed


def _h(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _compute_key(c) -> tuple:
    r, ev = c.regime_spec, c.eval_spec
    return (c.arch, c.protocol, r.kind, r.attack.steps if r.kind != "standard" else None,
            ev.attack.steps, ev.schedule)


def _rate(rows: list[dict]) -> tuple[float, float, int] | None:
    """(s per training image, s per evaluated image, workers) averaged over the ok rows of one compute key."""
    ok = [r for r in rows if r["status"] == "ok" and r["s_per_step"] is not None and r["s_per_eval_image"] is not None]
    if not ok:
        return None
    n = len(ok)
    return (sum(r["s_per_step"] / r["batch"] for r in ok) / n, sum(r["s_per_eval_image"] for r in ok) / n,
            max(r["workers"] or 1 for r in ok))


def cost_lines(spec, full, rows, every) -> list[str]:
    rows = list(rows)
    by_id = {r["path_id"]: r for r in rows}
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return ["cost: not measured (no path ran)"]
    devices = sorted({r["device"] for r in ok if r["device"]})
    batches = sorted({r["batch"] for r in ok if r["batch"]})
    cell_paths = [p for p in every if p.kind == "cell"]
    by_key: dict[tuple, list[dict]] = {}
    for p in cell_paths:
        if p.path_id in by_id:
            by_key.setdefault(_compute_key(p.cell), []).append(by_id[p.path_id])
    measured_s = flop_h = gflop = 0.0
    groups: dict[tuple, list[float]] = {}
    unpriced = 0
    for c in (c for c in full.cells if c.cell_id not in full.done and c.cell_id not in full.waiting):
        ev = c.eval_spec
        sched = ev.val_schedule()
        sched = None if sched is None else (sched[0], sched[1].steps, sched[2])
        try:
            est = cell_cost(c, ev.attack.steps, sched)
        except KeyError:  # no FLOP count for its (arch, input size): priced by measurement alone
            est = None
        rate = _rate(by_key.get(_compute_key(c), []))
        g = groups.setdefault((c.regime, c.data_fraction), [0.0, 0.0])
        g[1] += est.gpu_hours if est else 0.0
        flop_h += est.gpu_hours if est else 0.0
        if rate is None:
            unpriced += 1
            continue
        train, evaluation, _ = cell_units(c, ev.attack.steps, sched)
        r = c.regime_spec
        step = train_step(None if r.kind == "standard" else r.attack.steps)
        s = (train / step * rate[0] + evaluation / (2 * ev.attack.steps + 2) * rate[1]) * rate[2]
        g[0] += s / 3600
        if est:
            measured_s += s
            gflop += est.gflop
    head = (f"cost of the sweep as measured (on {', '.join(devices)}; at batch {', '.join(map(str, batches))}; "
            f"device-hours = measured seconds x workers; the dry run's FLOP plan beside it in H100-hours at "
            f"{ASSUMED_UTILISATION:.0%} utilisation):")
    lines = [head]
    for (reg, f), (m, e) in sorted(groups.items()):
        lines.append(f"  {reg} f={f:g}: {_h(m)} device-h measured (FLOP plan {_h(e)} H100-h)")
    if unpriced:
        lines.append(f"  not priced: {unpriced} cell(s) whose path did not run ok")
    src_m = src_f = 0.0
    for p in (p for p in every if p.kind in ("imp", "pretrain")):
        r = by_id.get(p.path_id)
        pre = next(x for x in spec.pretrainings if x.name == p.pretraining)
        if p.kind == "imp":
            t = spec.tickets[p.ticket_index]
            imp = t.imp or ImpSpec()
            regime = imp.regime_for(pre.name)
            trained = imp_rounds_needed(t) - 1  # the preflight prices the whole job; a rerun resumes after stored rounds
            est = imp_job(pretraining_arch(pre), regime, imp.dataset, imp.attack.steps, imp.epochs_per_round, trained, p.label)
            train, evaluation = imp_units(regime, imp.dataset, imp.attack.steps, imp.epochs_per_round, trained)
            step, per_eval = train_step(imp.attack.steps if regime == "adversarial" else None), 1
        else:
            est = recipe_job(pre.recipe, p.label)
            train, evaluation = recipe_units(pre.recipe)
            step = train_step({"standard": None, "fast_adversarial": 1, "pgd_adversarial": pre.recipe.pgd_steps}[pre.recipe.kind])
            per_eval = 2 * 10 + 2  # the recipe's validation and tests: PGD-10 (raydw.train.setup.recipe_eval_attack)
        src_f += est.gpu_hours or 0.0
        if r is None or r["status"] != "ok":
            lines.append(f"  {p.label}: not measured (its path did not run ok); FLOP plan {_h(est.gpu_hours or 0)} H100-h")
            continue
        s = (train / step * r["s_per_step"] / r["batch"] + evaluation / per_eval * r["s_per_eval_image"]) * (r["workers"] or 1)
        src_m += s / 3600
        if est.gpu_hours:
            gflop += est.gpu_hours * 3600 * H100_BF16_TFLOPS * 1e3 * ASSUMED_UTILISATION
            measured_s += s
        lines.append(f"  {p.label}: {_h(s / 3600)} device-h measured (FLOP plan {_h(est.gpu_hours or 0)} H100-h)")
    total_m = sum(g[0] for g in groups.values()) + src_m
    lines.append(f"  whole sweep: {_h(total_m)} device-hours measured on {', '.join(devices)} "
                 f"(FLOP plan {_h(flop_h + src_f)} H100-hours)")
    if measured_s:
        tflops = gflop / measured_s / 1e3
        lines.append(f"  the measured rate is {tflops:.3g} TFLOP/s per device, {100 * tflops / H100_BF16_TFLOPS:.2g} % of the "
                     f"H100 bf16 peak ({H100_BF16_TFLOPS:.0f}) of which the FLOP plan assumes {ASSUMED_UTILISATION:.0%}")
    return lines

