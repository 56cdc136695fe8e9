"""Time the verdict table with intervals on a trials table the size of the paper's grid.

    python benchmarks/verdict_speed.py [--seeds 1] [--resamples 2000] [--repeat 2]

Builds, in memory, the trials rows of sweeps/paper.yaml's 468 cells (3 pre-trainings x 13 levels x CIFAR-10 /
CIFAR-100 / SVHN x standard 100 % + adversarial 100/10/1 %) times --seeds, each with per-example outcomes over the
real test-set sizes (10,000 / 10,000 / 26,032 images), then times `verdicts(rule="equivalence")` and the extreme
table. The outcomes are random (about 70 % / 30 % right): only the time means anything. Results: docs/findings.md.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from raydw import outcomes
from raydw.findings.analysis import extreme, verdicts
from raydw.data.catalog import get

DATASETS = ("cifar10", "cifar100", "svhn")
SETTINGS = [("standard", 1.0), ("adversarial", 1.0), ("adversarial", 0.1), ("adversarial", 0.01)]


def paper_grid(seeds: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for pre in ("ST", "FAT", "AT"):
        for k in range(13):
            method, s = ("dense", 0.0) if k == 0 else ("imp", 1 - 0.8 ** k)
            for ds in DATASETS:
                n = get(ds).test
                for regime, frac in SETTINGS:
                    for seed in range(1, seeds + 1):
                        clean = rng.random(n) < 0.7
                        robust = clean & (rng.random(n) < 0.45)
                        rows.append({
                            "cell_id": f"{pre}-{k}-{ds}-{regime}-{frac}-{seed}", "status": "done", "pretraining": pre,
                            "ticket_method": method, "ticket_round": k, "target_sparsity": s, "sparsity": s,
                            "dataset": ds, "regime": regime, "regime_kind": regime, "data_fraction": frac, "seed": seed,
                            "sa": clean.mean(), "ra": robust.mean(), "test_n": n,
                            outcomes.column("clean", "sa_best"): outcomes.pack(clean),
                            outcomes.column("robust", "ra_best"): outcomes.pack(robust)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    t = time.perf_counter()
    df = paper_grid(a.seeds, np.random.default_rng(0))
    print(f"built {len(df)} trials rows with outcomes in {time.perf_counter() - t:.1f} s")
    for _ in range(a.repeat):
        t = time.perf_counter()
        v = verdicts(df, rule="equivalence", resamples=a.resamples)
        t_v = time.perf_counter() - t
        t = time.perf_counter()
        extreme(v)
        t_e = time.perf_counter() - t
        print(f"{len(v)} verdict rows x 3 metrics, {a.resamples} resamples: verdicts {t_v:.1f} s, extreme {t_e:.2f} s")


if __name__ == "__main__":
    main()
