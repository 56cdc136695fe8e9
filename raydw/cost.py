"""A cost plan before launch: FLOPs and GPU-hours per cell, per source-task job and per sweep, torch-free (for
--dry-run).

FLOPs are counted in forward-pass equivalents of one image (shared/docs/offline-data.md): a training step is
fwd + bwd = 3; a PGD-k training step with input gradients only is 2k + 3 (FGSM-RS: k = 1); a PGD-k evaluation is
2k + 2 (clean forward, k attack steps, forward of the attacked image). GPU time = FLOPs / (peak x utilisation).
The numbers are a FLOP-based estimate, labelled as such, until `raydw bench` has measured images/s on the device.
The source-task jobs (IMP on the pre-training task, `recipe:` pre-trainings) are in raydw.cost_source.
"""
from __future__ import annotations

from dataclasses import dataclass

from raydw.cells import Cell
from raydw.data import catalog as data_catalog

# Forward GFLOP per image, measured with torch.utils.flop_counter.FlopCounterMode (torch 2.14.1, 10-class head).
FWD_GFLOP = {
    ("resnet_tiny", 28): 0.005104,
    ("resnet18", 32): 0.0740,
    ("resnet18", 224): 3.627,
    ("resnet50", 32): 0.1669,
    ("resnet50", 224): 8.174,
}
H100_BF16_TFLOPS = 790.0  # achievable dense bf16 matmul measured on the workplace's H100/H200 (offline-data.md)
ASSUMED_UTILISATION = 0.35  # fraction of that peak a training pipeline reaches (best published pipelines: 19-37 %)


@dataclass
class CellCost:
    gflop: float
    gpu_hours: float
    train_images: int


def _input_size(c: Cell) -> int:
    return 224 if c.protocol == "paper" else data_catalog.get(c.dataset).size


def fwd_gflop(arch: str, px: int) -> float:
    """Forward GFLOP of one image; KeyError naming the known (arch, px) pairs where there is no count."""
    fwd = FWD_GFLOP.get((arch, px))
    if fwd is None:
        raise KeyError(f"no FLOP count for {arch} at {px} px; known: {sorted(FWD_GFLOP)}")
    return fwd


def train_step(attack_steps: int | None) -> int:
    """Forward equivalents of one training image: clean (None) or on k-step attack examples (input gradients)."""
    return 3 if attack_steps is None else 2 * attack_steps + 3


def gpu_hours(gflop: float) -> float:
    return gflop * 1e9 / (H100_BF16_TFLOPS * 1e12 * ASSUMED_UTILISATION) / 3600


def cell_cost(c: Cell, eval_steps: int, eval_schedule: tuple[int, int, int] | None = None) -> CellCost:
    """FLOPs of one cell: training epochs, per-epoch validation, test at up to 3 selected epochs."""
    fwd = fwd_gflop(c.arch, _input_size(c))
    train, evaluation, n = cell_units(c, eval_steps, eval_schedule)
    gflop = fwd * (train + evaluation)
    return CellCost(gflop, gpu_hours(gflop), n)


def cell_units(c: Cell, eval_steps: int, eval_schedule: tuple[int, int, int] | None = None) -> tuple[float, float, int]:
    """(training, evaluation) forward-equivalents of one cell's images, and its training images. The preflight
    prices them with measured seconds (raydw.run.preflight_cost), the plan with FLOPs."""
    info = data_catalog.get(c.dataset)
    r = c.regime_spec
    n = int(info.pool * c.data_fraction)
    step = train_step(None if r.kind == "standard" else r.attack.steps)
    train = r.epochs * n * step
    val_epochs = max(0, r.epochs - r.val_start_epoch)
    if eval_schedule is None:
        per = 1 + ((2 * eval_steps + 1) if r.validate_ra else 0)
        val = val_epochs * info.val * per
    else:
        every, steps, images = eval_schedule
        ra = (val_epochs // every + 1) * min(images, info.val) * (2 * steps + 1) if r.validate_ra else 0
        val = val_epochs * info.val + ra
    test = 3 * info.test * (2 * eval_steps + 2)
    return train, val + test, n


def plan_lines(cells: list[Cell], eval_steps: int, eval_schedule=None, done: set[str] = frozenset(),
               sources_below: bool = False) -> tuple[list[str], float]:
    """The fine-tuning plan of `cells` and its total H100-hours. `sources_below`: the caller adds the IMP and
    pre-training lines (raydw.cost_source.plan_text), and the header says so."""
    todo, costs, unknown = [], [], {}
    for c in (c for c in cells if c.cell_id not in done):
        try:
            costs.append(cell_cost(c, eval_steps, eval_schedule))
            todo.append(c)
        except KeyError:  # an arch at an input size without a FLOP count (resnet_tiny on CIFAR): the plan is still useful
            k = (c.arch, _input_size(c))
            unknown[k] = unknown.get(k, 0) + 1
    total = sum(x.gpu_hours for x in costs)
    by: dict[tuple, float] = {}
    for c, x in zip(todo, costs):
        k = (c.regime, c.data_fraction)
        by[k] = by.get(k, 0.0) + x.gpu_hours
    lines = [f"cost plan ({len(todo) + sum(unknown.values())} cells to run): ~{total:,.3g} H100-hours of fine-tuning and evaluation, a FLOP-based "
             f"estimate (bf16 {H100_BF16_TFLOPS:.0f} TFLOP/s at {ASSUMED_UTILISATION:.0%} utilisation; pre-training and IMP "
             f"{'below' if sources_below else 'not included'}; `raydw bench --profile gpu` on the device gives a measured basis)"]
    lines += [f"  {r} f={f:g}: {h:,.3g} H100-h" for (r, f), h in sorted(by.items())]
    lines += [f"  not estimated: {n} cell(s) of {a} at {px} px (no FLOP count for it)" for (a, px), n in sorted(unknown.items())]
    return lines, total
