"""Shared fixtures: a tiny sweep spec, its pre-trained model (trained once), a session-wide local Ray (2 CPUs)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# One intra-op thread per test process: pytest-xdist runs two workers on CI's two cores, and torch's default (a
# thread per core) in each oversubscribed them: one TinyResNet step of 64 digits took 10.9 s with 2 threads per
# worker against 0.2-0.7 s with 1, under the same load. Ray's trial workers set their own (resources.torch_threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _exit_without_teardown() -> None:
    """A pytest-xdist worker ends without CPython's teardown of its modules: with torch, pandas, Ray and every test
    module loaded that took ~3 s after the last test (the controller waits for its workers to exit: 4.5 -> 1.6 s from
    the workers' session end to the run's, measured). Exit handlers registered after this conftest was imported
    (multiprocessing's, which ends leftover children, Ray's, a test's) still run first; logging's (imported earlier)
    is skipped: a worker's log records went to the controller with its reports. The exit status is not read: xdist
    takes the outcome from the worker's messages, and a crashed worker never gets here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if os.environ.get("PYTEST_XDIST_WORKER"):
    import atexit

    atexit.register(_exit_without_teardown)

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


# The Ray tests run in two xdist groups, one per worker of CI's two cores, each group one module after another (module
# fixtures shared, one session Ray per worker). One Ray lane alone left a core a third idle (vmstat: 60-70 % of two
# cores busy) while the other worker, done with the Ray-free tests after ~90 s, waited ~13 minutes for it. Modules
# not named here are in "ray-b". The two sides hold about the same time, by the slowest tests of one whole run
# (`python -m pytest -q --durations=60`, 2026-12-08, 536 s; seconds under the suite's load, setups included): group
# a, faults 195 (its fixture trains the session's tiny model), slurm 111, sweep_ray + trackers_ray 75 (one tracked
# sweep, conftest tracked_sweep), resume_kill 58, the local-sweep test 26, hardening_store ~8; group b, preflight 191
# (with testinputs: the paper inputs are written once per worker), tickets_ray 107, pack_ray 53, tuning ~50,
# live_report 48, seeds_ray 20, hardening_untrusted's rendezvous 14.
RAY_GROUP_A = {"test_faults.py", "test_slurm.py", "test_resume_kill.py", "test_sweep_ray.py", "test_trackers_ray.py",
               "test_hardening_store.py",
               # one test of a module: it shares no module fixture with the module's other Ray test
               "test_hardening_untrusted.py::test_a_local_sweep_listens_on_loopback_only_and_sigterm_stops_it_cleanly"}


def pytest_itemcollected(item):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, the default in pyproject.toml) the Ray tests form two groups (above),
    each on one worker; the Ray-free tests fill in where a worker is free.
    Marked here, at collection: xdist reads the group in its own collection hook, before a modifyitems hook's."""
    if item.get_closest_marker("ray"):
        a = item.path.name in RAY_GROUP_A or f"{item.path.name}::{item.name}" in RAY_GROUP_A
        item.add_marker(pytest.mark.xdist_group("ray-a" if a else "ray-b"))


def pytest_collection_modifyitems(items):
    """test_preflight.py first: its paper preflight (group ray-b's longest test) needs no tiny pre-trained model, so
    ray-b runs it while group ray-a's first test trains that model (tiny_pretrained); before, ray-b's first test
    waited ~21 s for the model behind the lock. A stable sort: every other test keeps its order."""
    items.sort(key=lambda item: item.path.name != "test_preflight.py")


def _shared_dir(tmp_path_factory) -> Path:
    """The folder this run's xdist workers share (their base temps' parent; this run's own base temp without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture
def tiny_spec_text() -> str:
    return TINY_SPEC


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> tuple[Path, str]:
    """(store, what `raydw pretrain` printed): TINY_SPEC's ST recipe pre-trained once per session by the real
    command, in a subprocess with its own Ray (so it needs no session Ray, and test_faults' own cluster can use it).

    A sweep test whose subject is not pre-training starts from a copy (`seed_pretrained`): the content id makes
    the sweep find the model done and skip stage 1, as a rerun would. Each tiny sweep's pre-training Train run
    cost ~30 s of the suite (a seeded tiny sweep took 36.6 s, an unseeded one 66.9 s, here). Both xdist workers
    run Ray tests: the first to ask trains it, under a lock, and the other reads what it stored."""
    import fcntl

    shared = _shared_dir(tmp_path_factory)
    d = shared / "tiny-pretrained"
    with open(shared / "tiny-pretrained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "stdout.txt").exists():  # written last: a worker that failed half-way leaves it absent
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            (d / "spec.yaml").write_text(TINY_SPEC)
            r = subprocess.run([sys.executable, "-m", "raydw.cli", "pretrain", str(d / "spec.yaml"), "--storage",
                                str(d / "store")], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            (d / "stdout.txt").write_text(r.stdout)
    return d / "store", (d / "stdout.txt").read_text()


PRETRAINED_TABLES = ("pretrained", "weights")  # stage 1's outputs: masks and cells stay each test's own


def seed_pretrained(src: Path, dst, tables: tuple[str, ...] = PRETRAINED_TABLES) -> Path:
    """A fresh store `dst` holding `tables` of the store `src` (by default its pre-trained models), copied as files;
    a table `src` does not have is left out (test_faults also copies masks and index sets, where there are any)."""
    dst = Path(dst)
    for t in tables:
        if (Path(src) / t).exists():
            shutil.copytree(Path(src) / t, dst / t)
    return dst


@pytest.fixture
def tiny_store(tiny_pretrained, tmp_path) -> Path:
    """tmp_path/store, already holding TINY_SPEC's pre-trained model."""
    return seed_pretrained(tiny_pretrained[0], tmp_path / "store")


@pytest.fixture(scope="session")
def paper_inputs(tmp_path_factory):
    """sweeps/paper.yaml's inputs in the real formats, random content, written once per session (about 16 s and
    1 GB on 2 cores): its relative roots under the folder, its registry weights in folder/models. Run the spec with
    the folder as working directory and RAYDW_MODEL_CACHE=folder/models (raydw.testinputs)."""
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


@pytest.fixture(scope="session")
def tracked_sweep(request, tmp_path_factory, tiny_pretrained):
    """(spec, store, summary, lines, folder, server url, wall s) of one real tiny sweep that test_sweep_ray and
    test_trackers_ray both read (one worker runs both modules: xdist group ray-a): TINY_SPEC's two cells plus a
    regime whose loss diverges (two cells recorded failed), with every tracker on (MLflow to SQLite and to an
    `mlflow server` killed once the first epoch row is stored, W&B offline, TensorBoard). It was two sweeps, one per
    module; the second's four Train runs and Ray's work cost the suite ~35 s on 2 cores."""
    import threading
    import time

    import yaml

    import mlflow_server
    from raydw.run.sweep import run_sweep
    from raydw.spec import parse_spec

    tmp = tmp_path_factory.mktemp("tracked")
    port = mlflow_server.free_port()
    server = mlflow_server.start(tmp / "server.db", port)  # it boots while Ray starts
    request.addfinalizer(lambda: mlflow_server.kill_group(server))
    request.getfixturevalue("ray_session")
    url = f"http://127.0.0.1:{port}"
    mlflow_server.wait_healthy(url, server)
    d = yaml.safe_load(TINY_SPEC)
    d["name"] = "trk"
    # A second regime whose loss diverges: its cells must be recorded as failed while the others finish.
    d["regimes"]["boom"] = {"kind": "standard", "epochs": 1, "batch_size": 64,
                            "optimizer": {"lr": 1e12, "schedule": "constant"}}
    d["trackers"] = [{"kind": "mlflow", "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
                     {"kind": "mlflow", "tracking_uri": url, "experiment": "served"},
                     {"kind": "wandb", "mode": "offline", "dir": str(tmp / "wandb")},
                     {"kind": "tensorboard", "logdir": str(tmp / "tb")}]
    spec = parse_spec(d)
    store = seed_pretrained(tiny_pretrained[0], tmp / "store")  # the session's model: no pre-training here
    killed = threading.Event()

    def kill_after_first_epoch():  # "server gone mid-sweep": once the first epoch row is stored
        while not killed.is_set():
            if any((store / "epochs").glob("*.parquet")) if (store / "epochs").is_dir() else False:
                mlflow_server.kill_group(server)
                killed.set()
            time.sleep(0.2)

    threading.Thread(target=kill_after_first_epoch, daemon=True).start()
    lines: list[str] = []
    t0 = time.time()
    summary = run_sweep(spec, storage=str(store), out=lines.append)
    wall = time.time() - t0
    killed.set()
    return spec, str(store), summary, lines, tmp, url, wall


@pytest.fixture
def ray_address(ray_session) -> str:
    """The session Ray's address, for a `raydw` subprocess to join (--address) where starting a local Ray of its own
    is not what the test is about: each local start cost ~9.5 CPU-s and ~5 s (benchmarks/process_cpu.py). A driver
    killed there leaves its Train runs' placement groups, which the next driver that joins releases (as on a
    cluster; raydw.run.orphans)."""
    return ray_session.get_runtime_context().gcs_address


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
