"""Grid expansion at scale: `raydw.cells.expand` of sweeps/paper.yaml (468 cells) and of the same grid with 100 seeds
(46,800 cells, a study across many pre-trainings is as large): best-of-3 wall and CPU seconds, traced peak memory,
and the size of the cells pickled (Tune checkpoints its searcher, which holds every cell's task).

    python benchmarks/expand_cells.py        (from the repository root)
"""
import pickle
import time
import tracemalloc
from pathlib import Path

from raydw.cells import expand
from raydw.spec import load_spec

spec = load_spec(Path(__file__).resolve().parents[1] / "raydw" / "sweeps" / "paper.yaml")
for mult in (1, 100):
    s = spec.model_copy(update={"seeds": list(range(1, mult + 1))})
    wall, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time(); cells = expand(s)
        wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    tracemalloc.start(); cells = expand(s); cur, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
    size = len(pickle.dumps(cells))
    print(f"seeds x{mult}: {len(cells)} cells, expand best of 3 {min(wall):.3f} s wall / {min(cpu):.3f} s CPU, "
          f"traced peak {peak/2**20:.0f} MiB (held {cur/2**20:.0f} MiB), pickled {size/2**20:.1f} MiB")
