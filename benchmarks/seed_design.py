"""Which seed design decides the most verdicts per cell run, at the spec's error? A simulation on grids with a
known true Delta per level (docs/findings.md, "Seed designs, simulated").

    python benchmarks/seed_design.py                 # 4 scenarios x 50 grids, about 2-3 minutes on one core
    python benchmarks/seed_design.py --grids 10      # a quick look

One grid = one family (one dataset, regime, fraction and metric): P pre-trainings x (12 ticket levels + the dense
model), every model with up to 5 seeds on N shared test images. Correct answers follow a probit model,
correct = [z_image + a_model + u_seed + e_image,seed > 0]: z is the image's difficulty (shared: the pairing), u the
training randomness (SEED_SD accuracy points per model), e per-image noise (it sets how often two models disagree
on an image). The true Delta of a level is its expectation over seeds and images, set per level in units of the
margin. For each design the same bits are judged by raydw's own code: the image resamples
(uncertainty.resampled_accuracy, 100 resamples), the pooled family variance (seed_stats, pool_seed_variance:
Bartlett's check included), Delta's se and df (delta_stats) and the decision at each look (sequential.decide);
adaptive rounds follow sequential.Design.bounds and freeze each comparison at the look that decides it, as
sequential.replay does on a store.

Designs: fixed 1 seed (the paper's; nothing replicated, so no seed part), fixed 3 seeds (every cell; pooled), and
adaptive (start 1, dense replicate 3, max 3 or 5; the error split over 3 or 5 looks). Reported per scenario and design: false
matches (levels with true Delta <= -margin called match; nominal at most (1 - level) / 2 = 2.5 %), false
no-matches (true Delta > -margin called no match), the share of levels decided, and the cells run per grid.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from raydw.findings.sequential import Design, decide
from raydw.findings.uncertainty import Bootstrap, delta_stats, pool_seed_variance, resampled_accuracy, seed_stats

LEVELS = (0.3, 0.3, 0.2, 0.2, 0.1, 0.0, -0.2, -0.5, -1.0, -1.5, -2.5, -4.0)  # true Delta / margin: a paper-like curve
LEVEL, ALPHA = 0.95, 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    images: int
    seed_sd: float      # accuracy points per model, seed to seed
    noise: float        # per-image noise e: the larger, the more two models disagree image by image
    margin: float       # points
    pretrainings: int
    dense_acc: float = 0.85


SCENARIOS = (
    Scenario("paper CIFAR, seed SD 0.2", 10_000, 0.2, 0.3, 1.0, 3),
    Scenario("paper CIFAR, seed SD 1.0", 10_000, 1.0, 0.3, 1.0, 3),
    Scenario("paper CIFAR, disagreeing", 10_000, 0.5, 1.0, 1.0, 3),
    Scenario("demo digits (360 images)", 360, 3.0, 1.0, 3.0, 2),
)


def simulate(sc: Scenario, rng: np.random.Generator, seeds: int = 5):
    """{(model, seed): bits}, the true Delta per level, the measured ticket-dense disagreement rate."""
    s = np.sqrt(1 + sc.noise ** 2)
    su = sc.seed_sd / 100 / (norm.pdf(norm.ppf(sc.dense_acc)) / s)  # points -> probit units at the dense accuracy
    spread = np.sqrt(s ** 2 + su ** 2)  # accuracy over seeds and images is Phi(a / spread)
    a_d = norm.ppf(sc.dense_acc) * spread
    z = rng.standard_normal(sc.images)
    bits, truth = {}, {}
    for p in range(sc.pretrainings):
        models = {(p, "d"): a_d}
        for lvl, d in enumerate(LEVELS):
            truth[(p, lvl)] = d * sc.margin / 100
            models[(p, lvl)] = norm.ppf(sc.dense_acc + truth[(p, lvl)]) * spread
        for m, a in models.items():
            for j in range(seeds):
                bits[(m, j)] = z + a + su * rng.standard_normal() + sc.noise * rng.standard_normal(sc.images) > 0
    disagree = float(np.mean(bits[((0, 8), 0)] != bits[((0, "d"), 0)]))  # the level at -margin
    return bits, truth, disagree


def judge(bits, acc, sc: Scenario, truth: dict, kt: dict, kd: dict, look: int, looks: int) -> dict:
    """State of every comparison given each model's seeds (kt: ticket, kd: dense per pre-training)."""
    def side(m, k):
        return [(float(bits[(m, j)].mean()), acc[(m, j)]) for j in range(k)]

    cells = [seed_stats([bits[(m, j)] for j in range(k)]) for m, k in [*kt.items(), *[((p, "d"), k) for p, k in kd.items()]]
             if k >= 2]
    fam = pool_seed_variance(cells)
    out = {}
    for (p, lvl) in truth:
        d, se, df = delta_stats(side((p, lvl), kt[(p, lvl)]), side((p, "d"), kd[p]), fam, fam)
        out[(p, lvl)] = decide(look, looks, d, se, df, sc.margin, ALPHA)
    return out


def fixed(bits, acc, sc, truth, k: int):
    kt = {m: k for m in truth}
    kd = {p: k for p in range(sc.pretrainings)}
    return judge(bits, acc, sc, truth, kt, kd, 1, 1), len(truth) * k + sc.pretrainings * k


def adaptive(bits, acc, sc, truth, design: Design):
    """Rounds as sequential.replay: freeze each comparison at its deciding look; only open tickets (and their dense
    model, where it would have fewer seeds) get the next seed."""
    frozen: dict = {}
    kt = {m: 0 for m in truth}
    kd = {p: 0 for p in range(sc.pretrainings)}
    for r in range(1, design.rounds + 1):
        t_k, d_k = design.bounds(r)
        open_ = [m for m in truth if m not in frozen]
        for m in open_:
            kt[m] = t_k
        for p in {m[0] for m in open_} | ({*kd} if r == 1 else set()):
            kd[p] = max(kd[p], d_k)
        states = judge(bits, acc, sc, truth, kt, kd, r, design.rounds)
        for m in open_:
            if states[m] != "inconclusive":
                frozen[m] = states[m]
        if len(frozen) == len(truth):
            break
    return {m: frozen.get(m, "inconclusive") for m in truth}, sum(kt.values()) + sum(kd.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grids", type=int, default=50, help="simulated grids per scenario (default 50)")
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()
    designs = {"fixed 1 seed": lambda *x: fixed(*x, 1), "fixed 3 seeds": lambda *x: fixed(*x, 3),
               "adaptive 1/3/3": lambda *x: adaptive(*x, Design(start=1, replicate=3, max=3)),
               "adaptive 1/3/5": lambda *x: adaptive(*x, Design(start=1, replicate=3, max=5))}
    print(f"{a.grids} grids per scenario; levels' true Delta / margin {LEVELS}; level {LEVEL}, "
          f"so at most {(1 - LEVEL) / 2:.1%} false matches")
    print(f"{'scenario':27s} {'disagree':>8s} {'design':15s} {'false match':>14s} {'false no-match':>15s} "
          f"{'decided':>8s} {'cells/grid':>10s} {'vs fixed 1':>10s}")
    t0 = time.time()
    for sc in SCENARIOS:
        rng = np.random.default_rng(a.seed)
        tally = {d: np.zeros(6) for d in designs}  # false match, losses, false no-match, non-losses, decided, cells
        dis = []
        for g in range(a.grids):
            bits, truth, disagree = simulate(sc, rng)
            dis.append(disagree)
            acc = resampled_accuracy(bits, Bootstrap(100, LEVEL, seed=g), f"{sc.name}{g}")
            acc = {k: v for k, v in acc.items()}
            for name, run in designs.items():
                states, cells = run(bits, acc, sc, truth)
                loss = [m for m, d in truth.items() if d <= -sc.margin / 100 + 1e-12]
                fine = [m for m in truth if m not in loss]
                tally[name] += [sum(states[m] == "match" for m in loss), len(loss),
                                sum(states[m] == "no match" for m in fine), len(fine),
                                sum(s != "inconclusive" for s in states.values()) / len(states), cells]
        base = tally["fixed 1 seed"][5]
        for name, t in tally.items():
            print(f"{sc.name:27s} {np.mean(dis):8.1%} {name:15s} {t[0] / t[1]:7.2%} ({int(t[0]):3d}) "
                  f"{t[2] / t[3]:8.2%} ({int(t[2]):3d}) {t[4] / a.grids:8.1%} {t[5] / a.grids:10.1f} "
                  f"{t[5] / base:9.2f}x", flush=True)
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
