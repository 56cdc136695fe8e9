"""The price of an adaptive seed design before launch: cells and GPU-hours against 1 and 3 fixed seeds.

An adaptive sweep's size is not known in advance: it runs round 1 (every ticket cell's first `start` seeds, every
dense cell's first `replicate`) and then a seed more only for comparisons still open, up to `max`. The dry run
gives the hard bounds (round 1 only; every comparison to `max`) and, for the designs simulated by
benchmarks/seed_design.py, the expected cells: its measured ratio of cells to the fixed-1-seed grid times this
grid's fixed-1-seed cells. Those ratios are simulated expectations on paper-like grids (12 ticket levels per dense
model, a known true Delta per level), not measurements of this grid, and they depend on how large the seed spread
is against the margin (docs/findings.md, "Seed designs, simulated"). GPU-hours scale with the cells the same way
per setting, since every seed of a cell costs the same. Torch-free (for --dry-run).
"""
from __future__ import annotations

from raydw.planning.cost import cell_cost

# cells / cells of fixed 1 seed, per design (start, replicate, max) and scenario: `python benchmarks/seed_design.py`
# (50 grids per scenario; docs/findings.md, "Seed designs, simulated", where the table and its settings are).
_C02, _C05, _C10 = ("CIFAR 10,000 images, seed SD 0.2 pt, margin 1", "CIFAR, seed SD 0.5 pt, models disagreeing",
                     "CIFAR, seed SD 1.0 pt, margin 1")
_DEMO = "demo: 360 images, seed SD 3 pt, margin 3"
SIMULATED = {
    (1, 3, 3): {_C02: 1.85, _C05: 2.48, _C10: 2.72, _DEMO: 2.79},
    (1, 3, 5): {_C02: 2.47, _C05: 3.69, _C10: 4.35, _DEMO: 4.54},
}
MARGIN = {_C02: 1.0, _C05: 1.0, _C10: 1.0, _DEMO: 3.0}  # each scenario's margin in points: a spec is priced by its own
SOURCE = "python benchmarks/seed_design.py (simulated, 50 grids per scenario; docs/findings.md)"


def _hours(cells, plan) -> float | None:
    ev = plan.spec.eval
    sched = ev.val_schedule()
    try:
        return sum(cell_cost(c, ev.attack.steps, None if sched is None else (sched[0], sched[1].steps, sched[2])).gpu_hours
                   for c in cells)
    except KeyError:  # no FLOP count for an (arch, input size): cells only
        return None


def _h(x: float | None) -> str:
    return "" if x is None else f", ~{x:,.4g} H100-h"


def price_lines(plan) -> list[str]:
    """The dry run's lines for an adaptive spec (none for fixed seeds)."""
    a = plan.spec.adaptive_seeds()
    if a is None:
        return []
    rank = {s: i + 1 for i, s in enumerate(a.seeds())}
    cells = [c for c in plan.cells if c.cell_id not in plan.waiting]
    one = [c for c in cells if rank[c.seed] == 1]
    three = [c for c in cells if rank[c.seed] <= 3]
    first = [c for c in cells if rank[c.seed] <= (a.replicate if c.ticket_method == "dense" else a.start)]
    h1 = _hours(one, plan)
    lines = [f"seed design (fine-tuning only; pre-training and IMP do not depend on seeds): adaptive start {a.start}, "
             f"dense replicate {a.replicate}, max {a.max}",
             f"  fixed 1 seed: {len(one)} cells{_h(h1)}"
             + (f"; fixed 3 seeds: {len(three)} cells{_h(_hours(three, plan))}" if a.max >= 3 else ""),
             f"  adaptive: at least {len(first)} cells (round 1{_h(_hours(first, plan))}), at most {len(cells)} "
             f"(every comparison open to {a.max} seeds{_h(_hours(cells, plan))})"]
    ratios = SIMULATED.get((a.start, a.replicate, a.max))
    if ratios is None:
        lines.append(f"  expected: no simulated ratio for this design (simulated: "
                     f"{', '.join('/'.join(map(str, k)) for k in SIMULATED)}); {SOURCE} can add it")
        return lines
    margin = plan.spec.verdicts.margin
    same = {what: r for what, r in ratios.items() if MARGIN[what] == margin}
    lines.append(f"  expected (simulated, not measured on this grid; {SOURCE})"
                 + (f", the scenarios at margin {margin:g}:" if same else f"; none at margin {margin:g}, all listed:"))
    lines += [f"    where {what}: {r:.2f} x fixed 1 = ~{r * len(one):,.0f} cells" + ("" if h1 is None else f", ~{r * h1:,.4g} H100-h")
              for what, r in (same or ratios).items()]
    return lines
