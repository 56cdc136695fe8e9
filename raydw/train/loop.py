"""The fine-tuning loop: one readable function, Ray-free, shared by downstream cells and pre-training recipes.

Per epoch: train (clean CE, or CE on attack examples only), hold the mask, step the schedule, validate
SA/RA, track the SA-best and RA-best epochs, hand a resumable state to `on_epoch`. At the end: test SA/RA
at the SA-best, RA-best and last epochs, as the paper's scripts do.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from raydw import attacks
from raydw.data.device import Data, Split, Transform, epoch_batches, eval_batches
from raydw.pruning.mask import BoundMask
from raydw.spec import AttackSpec, RegimeSpec


# The reference script's logged validation value for epochs it does not validate (RegimeSpec.pre_validation).
REFERENCE_UNVALIDATED = 0.01


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: the cell is failed with this reason, not retried forever."""


@dataclass
class Outcome:
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # "sa"/"ra" -> {"epoch", "value"}
    test: dict = field(default_factory=dict)  # sa_at_sa_best, ra_at_sa_best, ...
    examples: dict = field(default_factory=dict)  # checkpoint -> outcome -> bool per test image (raydw.outcomes)
    train_s: float = 0.0


def make_optimizer(model: nn.Module, r: RegimeSpec) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    o = r.optimizer
    # foreach: one kernel per op over all parameters instead of a Python loop per tensor.
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, foreach=True)
    if o.schedule == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=o.milestones, gamma=o.gamma)
    elif o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def _correct(model: nn.Module, split: Split, transform: Transform, attack: AttackSpec | None, batch_size: int,
             autocast: bool, seed: int, final: Callable | None = None):
    """Per batch of this rank's shard: (labels, clean-correct, robust-correct or None, final-correct or None).

    `final(x, y) -> bool per image` is a stronger attack run only on the images the eval attack did not break
    (robust means robust to every attack, so the others need no second attack)."""
    model.eval()
    dev = split.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    for xb, yb in eval_batches(split, batch_size):
        x = transform.eval(xb)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            clean = model(x).argmax(1) == yb
        robust = fin = None
        if attack is not None:
            xa = attacks.from_spec(model, x, yb, attack, train=False, generator=gen, autocast=autocast)
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                robust = model(xa).argmax(1) == yb
            if final is not None:
                fin = robust.clone()
                if robust.any():
                    fin[robust] = final(x[robust], yb[robust]).to(fin.device)  # it restores the model's mode
        yield yb, clean, robust, fin


def evaluate(model: nn.Module, split: Split, transform: Transform, attack: AttackSpec | None,
             batch_size: int = 256, autocast: bool = False, seed: int = 0) -> tuple[float, float]:
    """(SA, RA) in [0,1] on a split (this rank's shard, counts summed over ranks). RA is NaN without attack."""
    counts = torch.zeros(3, device=split.device, dtype=torch.float64)  # clean correct, robust correct, n
    for yb, clean, robust, _ in _correct(model, split, transform, attack, batch_size, autocast, seed):
        counts[0] += clean.sum()
        if robust is not None:
            counts[1] += robust.sum()
        counts[2] += len(yb)
    c = _all_sum(counts).tolist()  # the one host sync of an evaluation
    return c[0] / c[2], (c[1] / c[2] if attack is not None else math.nan)


def evaluate_examples(model: nn.Module, split: Split, transform: Transform, attack: AttackSpec | None,
                      batch_size: int = 256, autocast: bool = False, seed: int = 0,
                      final: Callable | None = None) -> dict:
    """Per test image, in the split's order over all ranks: {"clean", "robust", "final"} -> bool numpy array (None
    where not evaluated). These are the stored outcomes (raydw.outcomes) every statistic is computed from."""
    parts: dict[str, list] = {"clean": [], "robust": [], "final": []}
    for _, clean, robust, fin in _correct(model, split, transform, attack, batch_size, autocast, seed, final):
        for k, v in (("clean", clean), ("robust", robust), ("final", fin)):
            if v is not None:
                parts[k].append(v)
    return {k: (_gather_examples(torch.cat(v)) if v else None) for k, v in parts.items()}


def _gather_examples(local: torch.Tensor):
    """Bools of this rank's shard (images rank, rank + world, ...) -> all images in split order, on every rank."""
    world = _world()
    if world == 1:
        return local.cpu().numpy()
    n = torch.tensor([len(local)], device=local.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=local.device)
    padded[: len(local)] = local.to(torch.uint8)
    got = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(got, padded)
    total = int(sum(s.item() for s in sizes))
    out = torch.zeros(total, dtype=torch.bool)
    for r, (t, s) in enumerate(zip(got, sizes)):
        out[r::world] = t[: int(s.item())].cpu().bool()  # Split.shard gives rank r the images r::world
    return out.numpy()


def fit(model: nn.Module, mask: BoundMask | None, data: Data, regime: RegimeSpec, eval_attack: AttackSpec,
        seed: int, on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None,
        resume: dict | None = None, autocast: bool = False, ddp: nn.Module | None = None,
        val_schedule: tuple[int, AttackSpec, int] | None = None, final_attack: Callable | None = None) -> Outcome:
    """Train `model` under `regime`; return its history, best epochs and test metrics.

    `model` is the plain (Normalized) module; `ddp` its DistributedDataParallel wrapper when there are
    several workers (attacks always run on the plain module: they need no gradient all-reduce).
    `on_epoch(record, state_fn)` is called after every epoch; `state_fn()` builds the resumable state.
    `val_schedule=(every, attack, images)` validates RA with `attack` on the first `images` validation images
    every `every` epochs (and at the last); None validates SA and RA with `eval_attack` on all of it every epoch.
    `final_attack(x, y) -> robust bools` (raydw.final_attacks) is added to `eval_attack` on the test set only.
    """
    dev = data.train.device
    fwd = ddp if ddp is not None else model
    opt, sched = make_optimizer(model, regime)
    out = Outcome(best={"sa": {"epoch": -1, "value": -1.0}, "ra": {"epoch": -1, "value": -1.0}})
    best_states: dict[str, dict | None] = {"sa": None, "ra": None}
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        out.history, out.best, out.train_s = resume["history"], resume["best"], resume["train_s"]
        best_states = resume["best_states"]
        start = resume["epoch"] + 1
    if mask is not None:
        mask.apply_()
    attack = regime.attack if regime.kind == "adversarial" else None
    train_gen = torch.Generator(device="cpu")
    attack_gen = torch.Generator(device=dev)

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "history": out.history, "best": out.best, "best_states": best_states, "train_s": out.train_s,
                "epoch": out.history[-1]["epoch"]}

    for epoch in range(start, regime.epochs):
        t0 = time.perf_counter()
        train_gen.manual_seed(seed * 7919 + epoch)
        attack_gen.manual_seed(seed * 104_729 + epoch)
        model.train()
        sums = torch.zeros(3, device=dev, dtype=torch.float64)  # loss*n, correct, n: read once per epoch
        seen = 0  # images this rank trained on, counted on the host: no per-step host-to-device copy
        for xb, yb in epoch_batches(data.train, max(1, regime.batch_size // _world()), seed, epoch):
            x = data.transform.train(xb, train_gen)
            if attack is not None:  # the paper trains on the adversarial examples only
                x = attacks.from_spec(model, x, yb, attack, train=True, generator=attack_gen, autocast=autocast)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                logits = fwd(x)
                loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if mask is not None:
                mask.mask_grads_()
            opt.step()
            if mask is not None:
                mask.apply_()  # masked weights are exactly zero after every step
            sums[0] += loss.detach().double() * len(yb)
            sums[1] += (logits.argmax(1) == yb).sum()
            seen += len(yb)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        sums[2] = seen
        loss_sum, correct, n = _all_sum(sums).tolist()
        if not math.isfinite(loss_sum):
            raise Diverged(f"training loss is {loss_sum / max(n, 1)} at epoch {epoch} (lr {lr})")
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        val_sa = val_ra = math.nan
        candidates = (math.nan, math.nan)  # what competes for SA-best / RA-best this epoch
        if epoch >= regime.val_start_epoch:
            if val_schedule is None:  # the paper's: SA and RA on the whole validation split, every epoch
                val_sa, val_ra = evaluate(model, data.val, data.transform, eval_attack if regime.validate_ra else None,
                                          autocast=autocast, seed=seed)
            else:
                every, ra_attack, images = val_schedule
                val_sa, _ = evaluate(model, data.val, data.transform, None, autocast=autocast)
                due = (epoch - regime.val_start_epoch) % every == 0 or epoch == regime.epochs - 1
                if regime.validate_ra and due:
                    sub = Split(data.val.x[:images], data.val.y[:images])
                    _, val_ra = evaluate(model, sub, data.transform, ra_attack, autocast=autocast, seed=seed)
            candidates = (val_sa, val_ra)
        elif regime.pre_validation == "reference":
            # The reference script logs val SA = RA = 1 % before its first validated epoch, so with its strict `>` the
            # first epoch's weights stay the best candidate until a validated epoch beats 1 %. The rows keep NaN.
            candidates = (REFERENCE_UNVALIDATED, REFERENCE_UNVALIDATED if regime.validate_ra else math.nan)
        # Strictly better only: ties keep the earlier epoch, as the paper's `>` comparison does.
        snapshot = None
        for key, v in zip(("sa", "ra"), candidates):
            if not math.isnan(v) and v > out.best[key]["value"]:
                out.best[key] = {"epoch": epoch, "value": v}
                if snapshot is None:
                    snapshot = {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}
                best_states[key] = snapshot
        eval_s = time.perf_counter() - t1
        out.train_s += train_s
        record = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / n, "train_acc": correct / n,
                  "val_sa": val_sa, "val_ra": val_ra, "epoch_s": train_s, "eval_s": eval_s,
                  "train_images": data.train_images}
        out.history.append(record)
        if on_epoch is not None:
            on_epoch(record, state)

    last_epoch = out.history[-1]["epoch"] if out.history else None
    out.test, out.examples = _test_at_best(model, data, eval_attack, best_states, out.best, autocast, seed, final_attack,
                                           last_epoch)
    return out


def _test_at_best(model, data: Data, attack: AttackSpec, best_states: dict, best: dict, autocast: bool, seed: int,
                  final: Callable | None, last_epoch: int | None = None) -> tuple[dict, dict]:
    """Test SA/RA at the last, SA-best and RA-best epochs (an epoch without a best state falls back: NaN), and the
    per-example outcomes behind them: {"last" | "sa_best" | "ra_best": {"clean" | "robust" | "final": bools}}."""
    res, examples = {}, {}
    last = copy.deepcopy(model.state_dict())

    def run() -> dict:
        return evaluate_examples(model, data.test, data.transform, attack, autocast=autocast, seed=seed, final=final)

    def rates(ex: dict) -> tuple:
        return tuple(math.nan if ex[k] is None else float(ex[k].mean()) for k in ("clean", "robust", "final"))

    examples["last"] = run()
    res["sa_last"], res["ra_last"], res["ra_final_last"] = rates(examples["last"])
    # By epoch: evaluate each distinct state once (SA-best is often RA-best, and often the last epoch itself).
    done: dict[int, dict] = {} if last_epoch is None else {last_epoch: examples["last"]}
    for key in ("sa", "ra"):
        st = best_states.get(key)
        if st is None:
            res[f"sa_at_{key}_best"] = res[f"ra_at_{key}_best"] = res[f"ra_final_at_{key}_best"] = math.nan
            continue
        ep = best[key]["epoch"]
        if ep not in done:
            model.load_state_dict(st)
            done[ep] = run()
        examples[f"{key}_best"] = done[ep]
        res[f"sa_at_{key}_best"], res[f"ra_at_{key}_best"], res[f"ra_final_at_{key}_best"] = rates(done[ep])
    model.load_state_dict(last)
    return res, examples


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
