"""Seconds per step of ResNet-50 at 224 px on this CPU, through the sweep's own code: what sizes a preflight.

    python benchmarks/resnet50_cpu_step.py [--batches 2 4] [--steps 2] [--threads 1] [--kinds standard pgd10_train pgd20_eval]

For each batch size: a standard training step and a PGD-10 training step (`raydw.train.loop.fit` on the paper
spec's regimes, one epoch of `steps` batches, its own epoch_s: augmentation to 224 px, the attack, forward,
backward, SGD and the mask included), and a PGD-20 evaluation of one batch (`evaluate`: clean forward, 20 attack
steps, forward of the attacked batch). CIFAR-shaped random uint8 images upsampled as the paper protocol does, a
10-class head, an 80 %-sparse magnitude mask (its cost is paid at every step), fp32 (CPUs never autocast), one
warm-up step first. One thread by default, as a sweep's CPU worker runs (resources.torch_threads). The load
average is printed beside the figures: on a shared machine they move with it.
"""
from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per training kind (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", nargs="+", default=["standard", "pgd10_train", "pgd20_eval"],
                    choices=["standard", "pgd10_train", "pgd20_eval"])
    a = ap.parse_args()

    from raydw.bench.ours import data, regimes
    from raydw.data import catalog
    from raydw.data.device import Split, Transform
    from raydw.models.build import Normalized, build_net
    from raydw.pruning.magnitude import one_shot
    from raydw.train.loop import fit, evaluate

    torch.set_num_threads(a.threads)
    info = catalog.get("cifar10")
    torch.manual_seed(0)
    net = build_net("resnet50", info.num_classes)
    mask = one_shot(net, 0.8)
    model = Normalized(net, info.mean, info.std).to(memory_format=torch.channels_last)
    bound = mask.bind(model.net)
    tf = Transform("cifar10", "paper", 32)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {os.cpu_count()} cores, fp32, resnet50 at 224 px")
    for b in a.batches:
        std, adv, eval_attack, tail = regimes(b)
        n = (1 + a.steps) * b
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        y = torch.randint(0, info.num_classes, (n,), generator=g)
        for kind in a.kinds:
            load = os.getloadavg()[0]
            if kind == "pgd20_eval":
                evaluate(model, Split(x[:b], y[:b]), tf, eval_attack, b)  # warm-up batch
                t0 = time.perf_counter()
                evaluate(model, Split(x[b:2 * b], y[b:2 * b]), tf, eval_attack, b)
                per, steps = time.perf_counter() - t0, 1
            else:
                regime = std if kind == "standard" else adv
                fit(model, bound, data(x, y, b, tf), regime, tail, seed=0)  # warm-up step
                out = fit(model, bound, data(x[b:], y[b:], a.steps * b, tf), regime, tail, seed=0)
                per, steps = out.history[0]["epoch_s"] / a.steps, a.steps
            print(f"batch {b:3d}  {kind:12s} {per:8.2f} s/step  {per / b:7.2f} s/image  "
                  f"({steps} timed step(s), load average {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
