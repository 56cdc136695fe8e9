"""The import paths modules had before the package was grouped by concern (issue 27) still import.

`import raydw.analysis`, `from raydw.cells import expand`, `raydw.results.load(...)`: each old path gives the module
object of its new path (the same object: a monkeypatch, a private name or an isinstance check sees one module),
without a shim file per module in raydw/. `python -m` needs a real file and keeps one (raydw/nodes.py).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {  # old name under raydw -> new name under raydw
    "safeyaml": "spec.safeyaml", "names": "spec.names",
    "plan": "planning.plan", "schedule": "planning.schedule", "search": "planning.search", "inputs": "planning.inputs",
    "dryrun": "planning.dryrun", "cost": "planning.cost", "cost_source": "planning.cost_source",
    "status": "reporting.status", "summary": "reporting.summary",
    "uncertainty": "findings.uncertainty", "analysis": "findings.analysis",
    "sequential": "findings.sequential", "report": "reporting.report", "live": "reporting.live", "results": "findings.results",
    "compact": "store.compact", "objectlock": "store.objectlock", "atomic": "store.atomic", "remote": "store.remote",
    "safepickle": "data.safepickle",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        old = name[len("raydw."):] if name.startswith("raydw.") else None
        if old not in MOVED:
            return None
        spec = importlib.util.spec_from_loader(name, self)
        spec.loader_state = "raydw." + MOVED[old]
        return spec

    def create_module(self, spec):
        module = importlib.import_module(spec.loader_state)
        spec.loader_state = module.__spec__  # importlib sets the alias spec on the module next; exec_module puts it back
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
