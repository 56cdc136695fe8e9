"""`raydw bench`'s row (a): the reference recipe (raydw.reference: Double-Win-LTH main_adv_eval.py / dataset.py /
utils_pruning.py, re-implemented) timed batch by batch through its own DataLoader."""
from __future__ import annotations

import contextlib
import time

import torch

from raydw.bench.profiles import LR, Profile, Row, augment_steps, count_flops, peak_mib, reset_peak, sync
from raydw.reference import reference_eval_step, reference_loader, reference_model, reference_train_step, reference_transforms


def _ref_batches(loader, dev):
    for xb, yb in loader:
        yield xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)


def _time_ref(kind: str, step, loader, prof: Profile, dev, warmup: int | None = None, steps: int | None = None) -> Row:
    """Warm-up steps (the first one counted by FlopCounterMode), then timed steps.

    The workers run ahead by up to PREFETCH batches, so a timed run of `steps` batches can be up to
    PREFETCH/steps optimistic for the reference when its augmentation, not the model, is the bottleneck.
    """
    warmup, steps = warmup or prof.warmup, steps or prof.steps
    it = _ref_batches(loader, dev)  # workers start here, before the clock
    flops = count_flops(lambda: step(*next(it)))
    for _ in range(warmup - 1):
        step(*next(it))
    sync(dev)
    reset_peak(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(it))
    sync(dev)
    return Row(kind, "reference", steps * prof.batch, time.perf_counter() - t0, flops / prof.batch, peak_mib(dev))


def reference_rows(net, mask, x_hwc, y_np, prof: Profile, dev, mean, std) -> dict:
    """kind -> a thunk that measures that row of the reference recipe."""
    model = reference_model(net, mask, mean, std, dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, foreach=False)
    train_tf, eval_tf = reference_transforms(prof.protocol)
    mk = lambda tf, shuffle: reference_loader(x_hwc, y_np, tf, prof.batch, shuffle, dev)  # noqa: E731
    std_step = lambda x, y: reference_train_step(model, opt, x, y, 0)  # noqa: E731
    adv_step = lambda x, y: reference_train_step(model, opt, x, y, 10)  # noqa: E731
    eval_step = lambda x, y: reference_eval_step(model, x, y)  # noqa: E731
    return {
        "standard": lambda: _time_ref("standard", std_step, mk(train_tf, True), prof, dev),
        "pgd10_train": lambda: _time_ref("pgd10_train", adv_step, mk(train_tf, True), prof, dev),
        "pgd20_eval": lambda: _time_ref("pgd20_eval", eval_step, mk(eval_tf, False), prof, dev),
        "augment_224": lambda: _augment_ref(x_hwc, y_np, prof, dev),
    }


@contextlib.contextmanager
def reference_cudnn():
    """setup_seed(1) in every reference script sets cudnn.deterministic; raydw keeps torch's default."""
    prev = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = prev


def _augment_ref(x_hwc, y_np, prof: Profile, dev) -> Row:
    train_tf, _ = reference_transforms("paper")
    warm, timed = augment_steps(prof)
    loader = reference_loader(x_hwc, y_np, train_tf, prof.batch, True, dev, length=(warm + timed) * prof.batch)
    row = _time_ref("augment_224", lambda x, y: None, loader, prof, dev, warm, timed)
    row.flops_per_image = None
    return row
