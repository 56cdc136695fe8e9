"""raydw: distributed sweeps for double-win lottery tickets (Chen et al., ICML 2022) on Ray Tune + Ray Train.

`raydw.results.load(uri)` reads a results store into pandas without importing torch or Ray.

The package reads as the flow (docs/architecture.md, "Layout"): spec/ (the sweep spec and its cells), planning/
(the plan: what runs, its order and cost, where a sweep stands), the science core (models/, data/, pruning/,
attacks/, tickets/, train/), store/ (the Parquet results store), run/ (the layer on Ray), findings/ (outcomes,
intervals, verdicts, the report). Modules that moved keep their old import paths (raydw._aliases).
"""
from raydw import _aliases

_aliases.install()

from raydw.findings import results  # noqa: E402 - after the old paths are installed; the public `raydw.findings.results`

__all__ = ["results"]
