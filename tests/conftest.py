"""Shared fixtures: a tiny sweep spec, a session-wide local Ray (started once, 2 CPUs, no dashboard)."""
from __future__ import annotations

import os
import textwrap

import pytest

TINY_SPEC = textwrap.dedent("""
    name: tiny
    storage: ./results/tiny
    pretrainings:
      - name: ST
        recipe: {kind: standard, arch: resnet_tiny, dataset: mnist5k, epochs: 1}
    tickets: {method: omp, sparsities: [0.5]}
    data: {datasets: [digits]}
    regimes:
      standard:
        kind: standard
        epochs: 2
        batch_size: 64
        optimizer: {lr: 0.01, milestones: [1]}
    eval:
      attack: {eps: 0.1, step_size: 0.05, steps: 2}
    resources: {max_concurrent_cells: 2}
""")


@pytest.fixture
def tiny_spec_text() -> str:
    return TINY_SPEC


@pytest.fixture(scope="session")
def paper_inputs(tmp_path_factory):
    """sweeps/paper.yaml's inputs in the real formats, random content, written once per session (about 16 s and
    1 GB on 2 cores): its relative roots under the folder, its registry weights in folder/models. Run the spec with
    the folder as working directory and RAYDW_MODEL_CACHE=folder/models (raydw.testinputs)."""
    from pathlib import Path

    from raydw.spec import load_spec
    from raydw.testinputs import write_inputs

    out = tmp_path_factory.mktemp("paper-inputs")
    write_inputs(load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"), out, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session, with the driver resource raydw's trials ask for."""
    import ray

    from raydw.run.cluster import DRIVER_RESOURCE, RAY_ENV

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    ray.init(address="local", num_cpus=2, include_dashboard=False, resources={DRIVER_RESOURCE: 1000},
             runtime_env={"env_vars": dict(RAY_ENV)}, log_to_driver=False)
    yield ray
    ray.shutdown()


def process_ancestors(pid: int) -> set[int]:
    """The PIDs above a process, up to init (to find the Ray processes that belong to this test run)."""
    out = set()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        out.add(pid)
    return out
