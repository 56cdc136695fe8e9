"""The cost of a sweep's source-task jobs, on the FLOP basis of raydw.planning.cost: IMP on the pre-training task, and the
`recipe:` pre-trainings. Torch-free (for --dry-run).

In the paper's protocol these cost about as much as all the fine-tuning, so a plan without them understates the
sweep by a large factor. What a job trains, as the worker runs it (raydw.run.sourceworkers, raydw.pruning.imp):
- IMP, per (pre-training, IMP ticket spec): round 1 is magnitude pruning of the pre-trained weights (no training)
  and the last round is never trained, so K rounds train K-1 times, each `epochs_per_round` epochs over the whole
  source training set, clean or on PGD examples (tickets.imp.attack), with clean validation every epoch and a
  clean test at up to 3 selected epochs. A rerun resumes after the last stored round.
- A recipe: `epochs` over the source pool (standard, FGSM-RS or PGD-k), clean validation every epoch, then PGD-10
  tests at up to 3 selected epochs and once more on the final weights. `weights:` files cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from raydw.planning.cost import fwd_gflop, gpu_hours, plan_lines, train_step
from raydw.data import catalog as data_catalog
from raydw.data.catalog import STREAMED
from raydw.spec import ImpSpec

RECIPE_TEST_PASSES = 4 * (2 * 10 + 2)  # 3 selected epochs + the final weights, each PGD-10 (recipe_eval_attack)


@dataclass
class JobCost:
    part: str  # "IMP" | "pre-training"
    label: str  # one line's description
    gpu_hours: float | None  # None: no FLOP count for its (arch, input size)


def imp_job(arch: str, regime: str, dataset: str, attack_steps: int, epochs_per_round: int, trained_rounds: int,
            label: str) -> JobCost:
    """One IMP job's remaining training: `trained_rounds` x `epochs_per_round` epochs on `dataset`."""
    info = data_catalog.get(dataset)
    how = f"PGD-{attack_steps}" if regime == "adversarial" else "clean"
    what = (f"{label}: {regime} ({how}) on {dataset}, {trained_rounds} trained round(s) x {epochs_per_round} epochs x "
            f"{info.pool:,} images, {arch} at {info.size} px")
    try:  # the count is for a 10-class head; ImageNet's 1000-way fc adds 4.1 MFLOP (0.05 % of ResNet-50's 8.17 G)
        fwd = fwd_gflop(arch, info.size)
    except KeyError:
        return JobCost("IMP", what, None)
    train, evaluation = imp_units(regime, dataset, attack_steps, epochs_per_round, trained_rounds)
    return JobCost("IMP", what, gpu_hours(fwd * (train + evaluation)))


def imp_units(regime: str, dataset: str, attack_steps: int, epochs_per_round: int, trained_rounds: int) -> tuple[float, float]:
    """(training, clean evaluation) forward-equivalents of an IMP job's remaining rounds."""
    info = data_catalog.get(dataset)
    step = train_step(attack_steps if regime == "adversarial" else None)
    epochs = trained_rounds * epochs_per_round
    val = info.test if dataset in STREAMED else info.val  # ImageFolder: val/ is both the validation and the test split
    return epochs * info.pool * step, epochs * val + (3 * info.test if trained_rounds else 0)


def recipe_job(recipe, label: str) -> JobCost:
    info = data_catalog.get(recipe.dataset)
    what = f"{label}: recipe {recipe.kind}, {recipe.epochs} epochs x {info.pool:,} images of {recipe.dataset}, {recipe.arch} at {info.size} px"
    try:
        fwd = fwd_gflop(recipe.arch, info.size)
    except KeyError:
        return JobCost("pre-training", what, None)
    train, evaluation = recipe_units(recipe)
    return JobCost("pre-training", what, gpu_hours(fwd * (train + evaluation)))


def recipe_units(recipe) -> tuple[float, float]:
    """(training, evaluation) forward-equivalents of a recipe's pre-training."""
    info = data_catalog.get(recipe.dataset)
    steps = {"standard": None, "fast_adversarial": 1, "pgd_adversarial": recipe.pgd_steps}[recipe.kind]
    return recipe.epochs * info.pool * train_step(steps), recipe.epochs * info.val + info.test * RECIPE_TEST_PASSES


def source_jobs(plan) -> tuple[list[JobCost], dict[str, list[str]]]:
    """The IMP and recipe jobs still to run, by the plan (what the store holds is left out), and the pre-trainings
    with nothing to train, by why: "weights file(s)" or "stored"."""
    from raydw.cells import pretraining_arch

    jobs, free = [], {}
    for item in plan.pretrainings:
        p = item.spec
        if p.recipe is None:
            free.setdefault("weights file(s)", []).append(p.name)
        elif item.state == "stored":
            free.setdefault("stored", []).append(p.name)
        else:
            jobs.append(recipe_job(p.recipe, f"pre-training {p.name}"))
        # once per (pre-training, masks' params): ticket specs asking for the same masks share one IMP job
        for i in (i for i in plan.imp if i.pretraining is p):
            imp = i.tickets.imp or ImpSpec()
            jobs.append(imp_job(pretraining_arch(p), imp.regime_for(p.name), imp.dataset, imp.attack.steps,
                                imp.epochs_per_round, i.trained_rounds_left, f"IMP {p.name}"))
    return jobs, free


def source_lines(plan, fine_tuning_hours: float) -> list[str]:
    """The plan's lines for the source-task jobs, the whole sweep's total, and which part dominates."""
    jobs, free = source_jobs(plan)
    parts = {"fine-tuning and evaluation": fine_tuning_hours}
    for part in ("IMP", "pre-training"):
        parts[part] = sum(j.gpu_hours or 0.0 for j in jobs if j.part == part)
    src = parts["IMP"] + parts["pre-training"]
    lines = [f"source-task jobs ({len(jobs)} to run): ~{src:,.3g} H100-hours of IMP and pre-training, the same FLOP-based estimate"]
    lines += [f"  {j.label}: " + (f"{j.gpu_hours:,.3g} H100-h" if j.gpu_hours is not None else "not estimated (no FLOP count for it)")
              for j in jobs]
    lines += [f"  pre-training {', '.join(names)}: {why}, nothing to train" for why, names in free.items()]
    total = sum(parts.values())
    shares = ", ".join(f"{k} {v:,.3g} ({v / total:.0%})" if total else f"{k} 0" for k, v in parts.items())
    lines.append(f"whole sweep: ~{total:,.3g} H100-hours: {shares}")
    if total:
        top, h = max(parts.items(), key=lambda kv: kv[1])
        lines.append(f"  {top} {'dominates' if h > total / 2 else 'is the largest part'} ({h / total:.0%} of the FLOPs)")
    if any(j.gpu_hours is None for j in jobs):
        lines.append("  (jobs marked 'not estimated' are not in these totals)")
    return lines


def plan_text(plan) -> str:
    """The dry run's cost plan: fine-tuning per (regime, fraction), then the IMP and pre-training jobs (what the
    store holds already costs nothing), the whole sweep's total and which part dominates it."""
    from raydw.planning.seed_price import price_lines

    ev = plan.spec.eval
    sched = ev.val_schedule()
    # adaptive seeds: the cells of the round to run now; what later rounds may add is priced by price_lines
    cells = plan.cells if plan.seeds is None else plan.todo
    lines, total = plan_lines(cells, ev.attack.steps, None if sched is None else (sched[0], sched[1].steps, sched[2]),
                              plan.done, sources_below=True)
    return "\n".join(lines + source_lines(plan, total) + price_lines(plan))
