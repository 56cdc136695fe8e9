"""Golden identities: the run-layer redesign (issue 15) and any later refactor must keep every cell id and every
mask lookup key of the shipped sweeps, or old stores would re-run their cells and recompute their masks.

The digests were computed before the redesign, from the code that wrote the stores now in use. A change here is a
change of every shipped store's identity: it needs HASH_VERSION's bump and a migration note, never a new digest.
"""
import hashlib
import json
from pathlib import Path

import pytest

from raydw.cells import expand
from raydw.spec import load_spec
from raydw.tickets import registry

SWEEPS = Path(__file__).resolve().parents[1] / "raydw" / "sweeps"

# name: (cells, sha256 of the sorted "cell_id label" lines, mask keys, sha256 of the sorted mask-key lines)
GOLDEN = {
    "demo": (54, "0c6259ddf36b43ec", 2, "7dda5cc36676993c"),
    "paper": (468, "1902e6bf7c18f561", 3, "de36aaff72be5234"),
    "paper-fast": (468, "844740080696c9e8", 3, "de36aaff72be5234"),
    "demo-tickets": (42, "86033e64304f1a9e", 9, "650d8be0ff4f02d6"),
    "demo-search": (42, "25509e5acdcf4e33", 3, "0921b9f7fc4d4695"),
    "demo-tune": (6, "da5b7d6b22db47ae", 1, "c9fb4bce1bcaee46"),
}


def _digest(lines) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_cell_ids_and_mask_keys_unchanged(name):
    spec = load_spec(SWEEPS / f"{name}.yaml")
    n_cells, cells_digest, n_keys, keys_digest = GOLDEN[name]
    cells = expand(spec)
    assert (len(cells), _digest(f"{c.cell_id} {c.label()}" for c in cells)) == (n_cells, cells_digest)
    keys = [json.dumps([p.name, t.method, registry.get(t.method).params(t, p.name)], sort_keys=True)
            for p in spec.pretrainings for t in spec.tickets if t.method != "dense"]
    assert (len(keys), _digest(keys)) == (n_keys, keys_digest)
