"""Golden comparison of two demo stores: the trials rows of two fresh `raydw sweep` runs (say, before and after a
refactor) must agree in every column but the times, the versions and where the run happened.

    git clone -q . /tmp/before && (cd /tmp/before && git checkout -q OLD)
    (cd /tmp/before && PYTHONPATH=$PWD python -m raydw.cli sweep demo --storage /tmp/demo_before)
    python -m raydw.cli sweep demo --storage /tmp/demo_after
    python benchmarks/golden_demo.py /tmp/demo_before /tmp/demo_after

Prints the columns compared, each difference (cell, column, before, after) and exits 1 on any. Training on a CPU
is deterministic per cell (seeded data order, init and attacks), so equal code gives equal bits.
"""
from __future__ import annotations

import sys

import numpy as np

import raydw

# Times, versions and the machine's own facts differ between two runs of the same code.
IGNORED = {"wall_s", "train_s", "fit_s", "finished_at", "raydw_version", "torch_version", "ray_version", "git_commit",
           "node", "device"}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or a == b
    try:
        return bool(a == b) if not (a is None or b is None) else a is b
    except ValueError:  # arrays
        return np.array_equal(a, b)


def main(before: str, after: str) -> int:
    a = raydw.results.load(before, phase=None).set_index("cell_id").sort_index()
    b = raydw.results.load(after, phase=None).set_index("cell_id").sort_index()
    if list(a.index) != list(b.index):
        print(f"cell ids differ: {len(set(a.index) - set(b.index))} only before, {len(set(b.index) - set(a.index))} only after")
        return 1
    cols = [c for c in a.columns if c not in IGNORED]
    missing = sorted(set(cols) ^ set(c for c in b.columns if c not in IGNORED))
    diffs = [(cid, c, a.at[cid, c], b.at[cid, c]) for c in cols if c in b.columns for cid in a.index
             if not _same(a.at[cid, c], b.at[cid, c])]
    print(f"{len(a)} cells, {len(cols)} columns compared (ignored: {', '.join(sorted(IGNORED))})")
    if missing:
        print(f"columns in only one store: {missing}")
    for cid, c, x, y in diffs[:40]:
        print(f"  {cid} {c}: {str(x)[:60]!r} -> {str(y)[:60]!r}")
    print(f"{len(diffs)} differing values")
    return 1 if diffs or missing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
