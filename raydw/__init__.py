"""raydw: distributed sweeps for double-win lottery tickets (Chen et al., ICML 2022) on Ray Tune + Ray Train.

`raydw.results.load(uri)` reads a results store into pandas without importing torch or Ray.
"""
from raydw import results  # noqa: F401

__all__ = ["results"]
