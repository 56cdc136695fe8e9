"""`raydw bench`'s row (b): raydw's own engine, the sweep's `fit` and `evaluate` on the bundled paper spec's
regimes, the model built as cell_worker builds it."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from raydw.bench.profiles import DATASET, LR, Profile, Row, augment_steps, count_flops, peak_mib, reset_peak, sync
from raydw.reference import EPS, STEP


def regimes(batch: int):
    """The bundled paper spec's regimes, cut to one epoch with no validation; its PGD-20 eval attack."""
    from raydw.spec import AttackSpec, load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml")
    cut = {"epochs": 1, "batch_size": batch, "val_start_epoch": 1, "validate_ra": False, "per_dataset": {}}
    # lr 0.01 for both recipes: it changes no cost, and random labels at the paper's 0.1 could diverge.
    std, adv = (r.model_copy(update={**cut, "optimizer": r.optimizer.model_copy(update={"lr": LR})})
                for r in (spec.regimes["standard"], spec.regimes["adversarial"]))
    tail = AttackSpec(eps=EPS, step_size=STEP, steps=1)  # fit's closing test on one image: cheap, untimed
    return std, adv, spec.eval.attack, tail


def data(x, y, n: int, transform):
    from raydw.data.device import Split
    from raydw.data.device import Data

    one = Split(x[:1], y[:1])
    return Data(train=Split(x[:n], y[:n]), val=one, test=one, transform=transform, train_images=n)


def _time_fit(kind: str, model, bound, x, y, transform, regime, tail, prof: Profile, dev, autocast: bool) -> Row:
    """Warm-up `fit` under FlopCounterMode (less its closing one-image test), then a timed `fit`:
    the loop's own epoch_s is the time, host sync at the epoch's end included."""
    from raydw.train.loop import evaluate, fit

    warm = data(x, y, prof.warmup * prof.batch, transform)
    total = count_flops(lambda: fit(model, bound, warm, regime, tail, seed=0, autocast=autocast))
    tail_flops = count_flops(lambda: evaluate(model, warm.test, transform, tail, autocast=autocast))
    sync(dev)
    reset_peak(dev)
    out = fit(model, bound, data(x, y, prof.steps * prof.batch, transform), regime, tail, seed=0, autocast=autocast)
    return Row(kind, "raydw", prof.steps * prof.batch, out.history[0]["epoch_s"],
               (total - tail_flops) / (prof.warmup * prof.batch), peak_mib(dev))


def _time_eval(model, x, y, transform, attack, prof: Profile, dev, autocast: bool) -> Row:
    from raydw.data.device import Split
    from raydw.train.loop import evaluate

    n_warm, n = prof.warmup * prof.batch, prof.steps * prof.batch
    flops = count_flops(lambda: evaluate(model, Split(x[:n_warm], y[:n_warm]), transform, attack, prof.batch, autocast))
    sync(dev)
    reset_peak(dev)
    t0 = time.perf_counter()
    evaluate(model, Split(x[:n], y[:n]), transform, attack, prof.batch, autocast)  # ends on its one host sync
    return Row("pgd20_eval", "raydw", n, time.perf_counter() - t0, flops / n_warm, peak_mib(dev))


def _augment_raydw(x, prof: Profile, dev) -> Row:
    from raydw.data.device import Transform

    tf, gen = Transform(DATASET, "paper", 32), torch.Generator(device="cpu").manual_seed(0)
    warm, timed = augment_steps(prof)
    starts = [(i * prof.batch) % (len(x) - prof.batch + 1) for i in range(warm + timed)]
    batches = [x[s:s + prof.batch] for s in starts]
    for xb in batches[:warm]:
        tf.train(xb, gen)
    sync(dev)
    reset_peak(dev)
    t0 = time.perf_counter()
    for xb in batches[warm:]:
        tf.train(xb, gen)
    sync(dev)
    return Row("augment_224", "raydw", timed * prof.batch, time.perf_counter() - t0, None, peak_mib(dev))


def raydw_rows(net, mask, x, y, prof: Profile, dev, mean, std) -> dict:
    """kind -> a thunk measuring raydw's row. The model is built as cell_worker builds it: Normalized, on the
    device, channels_last, the mask bound; bf16 autocast only on CUDA."""
    from raydw.data.device import Transform
    from raydw.models.build import Normalized

    model = Normalized(copy.deepcopy(net), mean, std).to(dev).to(memory_format=torch.channels_last)
    bound = mask.bind(model.net) if mask is not None else None
    autocast = dev.type == "cuda"
    tf = Transform(DATASET, prof.protocol, 32)
    std_regime, adv_regime, eval_attack, tail = regimes(prof.batch)
    return {
        "standard": lambda: _time_fit("standard", model, bound, x, y, tf, std_regime, tail, prof, dev, autocast),
        "pgd10_train": lambda: _time_fit("pgd10_train", model, bound, x, y, tf, adv_regime, tail, prof, dev, autocast),
        "pgd20_eval": lambda: _time_eval(model, x, y, tf, eval_attack, prof, dev, autocast),
        "augment_224": lambda: _augment_raydw(x, prof, dev),
    }
