"""Faults on a real multi-node Ray (one head that only drives, two 1-CPU worker nodes, all on this machine).

Each test injects one fault into a toy sweep and checks that nothing is lost and nothing is duplicated: every
cell ends with one `trials` row, and `epochs` never holds a (cell, epoch) twice. Each also prints what recovery
cost (time from the fault to the first epoch of the restarted run, and the epochs run again); docs/reliability.md
records the figures. Reproduce: `pytest -q -n 0 tests/test_faults.py -s` (-n 0: xdist workers do not pass -s output on).

The worker nodes get their own loopback addresses (127.0.0.2, .3, ...) so `trials.node` and `epochs.node`,
which record the node's IP, tell the nodes apart as they would on a real cluster.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import process_ancestors, seed_pretrained

from raydw.findings import results
from raydw.run.cluster import DRIVER_RESOURCE, RAY_ENV
from raydw.spec import parse_spec
from raydw.store import Store, StoreError

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
MEASURED: list[str] = []  # one line per fault, printed at the end of the module (pytest -s)
SEED_TABLES = ("pretrained", "weights", "masks", "index_sets")  # stage 1-2 outputs, shared by every test's store


# ------------------------------------------------------------------------------------------------ helpers
def _spec(*, epochs: int, seeds=(1,), concurrent: int = 2, extra_regimes: dict | None = None, max_failures: int = 2,
          dense: bool = True):
    """TINY_SPEC's cells: {dense, OMP 50 %} per regime and seed, or only the OMP cell with dense=False (each Train
    run a test does not need cost the suite ~15 s on 2 cores)."""
    from conftest import TINY_SPEC

    d = yaml.safe_load(TINY_SPEC)
    d["tickets"]["include_dense"] = dense
    d["regimes"]["standard"]["epochs"] = epochs
    d["regimes"].update(extra_regimes or {})
    d["seeds"] = list(seeds)
    d["resources"] = {"max_concurrent_cells": concurrent, "max_failures": max_failures}
    return d


def _epoch_rows(store: str) -> set[str]:
    """The epoch rows stored now, as `<cell_id>.e<epoch>` (one file holds a cell's epochs)."""
    return set(Store(store).names("epochs"))


def _visible(folder: Path) -> dict[str, float]:
    """name -> mtime of the Parquet files a reader sees (temporary files are hidden)."""
    if not folder.exists():
        return {}
    return {p.name: p.stat().st_mtime for p in folder.glob("*.parquet") if not p.name.startswith(".")}


def _leftovers(store: Path) -> list[Path]:
    return [p for p in store.rglob(".*.tmp")]


def _seeded_store(src: str, dst: Path) -> str:
    """A fresh store that already holds the pre-trained weights, masks and index sets (stages 1-2 skip)."""
    return str(seed_pretrained(src, dst, SEED_TABLES))


def _wait(cond, timeout: float, what: str, poll: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _ray_diagnostics() -> str:
    """What Ray holds when a sweep is stuck: resources, placement groups, live actors (best effort)."""
    import ray

    lines = []
    try:
        lines.append(f"available: {ray.available_resources()}  total: {ray.cluster_resources()}")
        lines.append("nodes: " + ", ".join(f"{n['NodeManagerAddress']} alive={n['Alive']}" for n in ray.nodes()))
        for pg_id, pg in ray.util.placement_group_table().items():
            if pg.get("state") != "REMOVED":
                lines.append(f"pg {pg_id[:8]} {pg.get('state')} {pg.get('bundles')} on {pg.get('bundles_to_node_id')}")
    except Exception as e:  # noqa: BLE001 - diagnostics only
        lines.append(f"(resources/pgs unavailable: {e})")
    try:
        from ray.util.state import list_actors

        for a in list_actors(filters=[("state", "!=", "DEAD")], limit=200):
            lines.append(f"actor {a.class_name} {a.state} node={str(a.node_id)[:8]} job={a.job_id}")
    except Exception as e:  # noqa: BLE001
        lines.append(f"(actors unavailable: {e})")
    return "\n".join(lines)


class _SweepThread(threading.Thread):
    """run_sweep in this process (it joins the Ray this test module started) so the test can inject faults."""

    def __init__(self, spec_dict: dict, store: str):
        super().__init__(daemon=True)
        self.spec, self.store, self.lines, self.summary, self.error = parse_spec(spec_dict), store, [], None, None

    def run(self):
        from raydw.run.sweep import run_sweep

        try:
            self.summary = run_sweep(self.spec, storage=self.store, out=self.lines.append)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread by finish()
            self.error = e

    def finish(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), (f"sweep still running after {timeout} s:\n" + "\n".join(self.lines)
                                     + "\n--- Ray state ---\n" + _ray_diagnostics())
        if self.error is not None:
            raise self.error
        return self.summary


def _cli_sweep(spec_dict: dict, store: str, address: str, log: Path) -> subprocess.Popen:
    spec = log.with_suffix(".yaml")
    spec.write_text(yaml.safe_dump(spec_dict))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **RAY_ENV}
    return subprocess.Popen([sys.executable, "-m", "raydw.cli", "sweep", str(spec), "--storage", store, "--address", address],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _our_train_workers(node_ip: str) -> list[int]:
    """PIDs of the Ray Train workers on one node of THIS test's cluster: descendants of this process whose raylet
    runs with that node IP (colleagues' Ray processes on the machine are left alone)."""
    r = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True)
    me, out = os.getpid(), []
    for pid in map(int, r.stdout.split()):
        chain = process_ancestors(pid)
        if me in chain and any(f"--node_ip_address={node_ip} " in _cmdline(a) for a in chain):
            out.append(pid)
    return out


def _cell_with_epochs(store: str, n: int) -> tuple[str, str] | None:
    """(cell_id, node IP) of a running cell that has stored n epoch rows (so epoch n-2's checkpoint is reported)."""
    if _visible(Path(store) / "trials"):
        return None
    ep = results.load(store, "epochs")
    counts = ep.groupby("cell_id").epoch.count()
    ready = counts[counts >= n]
    if not len(ready):
        return None
    cell = ready.index[0]
    return cell, ep[ep.cell_id == cell].node.iloc[-1]


def _epochs_of(store: str, cell_id: str):
    ep = results.load(store, "epochs")
    return ep[ep.cell_id == cell_id]


def _check_exactly_once(store: str, n_cells: int, epochs: int | None = None) -> None:
    trials = results.load(store)
    assert len(trials) == n_cells and trials.cell_id.is_unique, trials[["cell_id", "status", "error"]]
    assert (trials.status == "done").all(), trials[["cell_id", "status", "error"]].to_string()
    ep = results.load(store, "epochs")
    assert not ep.duplicated(["cell_id", "epoch"]).any()
    if epochs is not None:
        assert len(ep) == n_cells * epochs and (ep.groupby("cell_id").epoch.max() == epochs - 1).all()
    assert not _leftovers(Path(store))


def _recovery(store: str, cell_id: str, t_fault: float, before: set[str]) -> tuple[float, int, int]:
    """(s from the fault to the first epoch row of the restarted run, epochs re-run, epoch the run restarted at).

    The restarted run is the set of the cell's epoch rows written after the fault (a re-run epoch overwrites its
    row, so its file is newer than the fault); it must start at its own `resumed_from` and continue to the end.
    """
    ep = _epochs_of(store, cell_id)
    mtime = {int(e): w.timestamp() for e, w in zip(ep.epoch, ep.written_at)}
    after = ep[[mtime[int(e)] > t_fault for e in ep.epoch]]
    assert len(after), f"cell {cell_id}: no epoch row written after the fault"
    start = int(after.epoch.min())
    assert (after.resumed_from == start).all() and list(after.epoch) == list(range(start, int(ep.epoch.max()) + 1)), \
        after[["epoch", "resumed_from"]].to_string()
    had = {int(n.split(".e")[1].split(".")[0]) for n in before if n.startswith(cell_id)}
    rerun = sum(1 for e in had if e >= start)
    return min(mtime[int(e)] for e in after.epoch) - t_fault, rerun, start


def _record(line: str) -> None:
    MEASURED.append(line)
    print("\n" + line, flush=True)


# ------------------------------------------------------------------------------------------------ fixtures
class _Cluster:
    def __init__(self):
        from ray.cluster_utils import Cluster

        self.c = Cluster(initialize_head=True,
                         head_node_args={"num_cpus": 0, "resources": {DRIVER_RESOURCE: 10}})
        self.next_ip = 2
        self.workers = {}  # ip -> node
        self.add_worker()
        self.add_worker()

    @property
    def address(self) -> str:
        return self.c.address

    def add_worker(self) -> str:
        ip = f"127.0.0.{self.next_ip}"
        self.next_ip += 1
        self.workers[ip] = self.c.add_node(num_cpus=1, node_ip_address=ip)
        self.c.wait_for_nodes()
        return ip

    def remove_worker(self, ip: str) -> None:
        self.c.remove_node(self.workers.pop(ip))


@pytest.fixture(scope="module")
def cluster():
    import ray

    if ray.is_initialized():  # e.g. a session-wide local Ray from another module: this module needs its own
        ray.shutdown()
    for k, v in RAY_ENV.items():  # the raylets and every worker inherit the 0.2 s controller poll
        os.environ.setdefault(k, v)
    t0 = time.time()
    cl = _Cluster()
    try:
        ray.init(address=cl.address, log_to_driver=False, runtime_env={"env_vars": dict(RAY_ENV)})
        print(f"\ncluster: head (0 CPU, {DRIVER_RESOURCE}) + workers {sorted(cl.workers)} up in {time.time() - t0:.1f} s")
        yield cl
    finally:
        ray.shutdown()
        cl.c.shutdown()
        if MEASURED:
            print("\nmeasured:\n  " + "\n  ".join(MEASURED))


BOOM = {"boom": {"kind": "standard", "epochs": 1, "batch_size": 64, "optimizer": {"lr": 1e12, "schedule": "constant"}}}


@pytest.fixture(scope="module")
def first_sweep(cluster, tmp_path_factory, tiny_pretrained):
    """Two cells at once on two 1-CPU worker nodes: OMP 50 % x {standard, boom (lr 1e12, NaN loss)}.

    It starts from the session's pre-trained model (conftest) and prunes once for the other tests, which copy those
    stage 1-2 outputs into their stores.
    """
    store = str(seed_pretrained(tiny_pretrained[0], tmp_path_factory.mktemp("spread")))
    t0 = time.time()
    sw = _SweepThread(_spec(epochs=3, concurrent=2, extra_regimes=BOOM, dense=False), store)
    sw.start()
    summary = sw.finish(480)
    return store, summary, time.time() - t0


# ------------------------------------------------------------------------------------------------ faults
@pytest.mark.timeout(600)
def test_a_sweep_spreads_its_cells_over_both_worker_nodes(cluster, first_sweep):
    store, summary, wall = first_sweep
    assert summary.total == 2 and summary.done == 1 and summary.failed == 1
    trials = results.load(store)
    assert len(trials) == 2 and trials.cell_id.is_unique
    nodes = set(trials.node)
    # Each worker node has one CPU, so two cells at a time cannot share a node: both nodes must appear.
    assert nodes <= set(cluster.workers) and len(nodes) >= 2, trials[["cell_id", "node"]]
    ep = results.load(store, "epochs")
    done = trials[trials.status == "done"]
    assert not ep.duplicated(["cell_id", "epoch"]).any() and (ep.resumed_from == 0).all()
    assert (ep[ep.cell_id.isin(done.cell_id)].groupby("cell_id").epoch.count() == 3).all()
    assert set(ep.node) <= nodes and not _leftovers(Path(store))
    _record(f"spread: 2 cells (3 epochs, 1 diverging), 2 at a time, on nodes {sorted(nodes)}: {wall:.0f} s incl. "
            f"OMP (model pre-trained before); cell wall {done.wall_s.min():.0f}-{done.wall_s.max():.0f} s; epochs re-run 0")


@pytest.mark.timeout(60)
def test_a_diverging_cell_is_recorded_failed_while_the_others_finish(first_sweep):
    trials = results.load(first_sweep[0])
    failed, done = trials[trials.status == "failed"], trials[trials.status == "done"]
    assert set(failed.regime) == {"boom"} and set(done.regime) == {"standard"} and len(done) == 1
    assert failed.error.str.contains("training loss is").all(), failed.error.tolist()
    _record(f"diverging cell (lr 1e12) on the cluster: recorded failed after {failed.wall_s.min():.0f}-"
            f"{failed.wall_s.max():.0f} s with '{failed.error.iloc[0][:60]}'; the other cell done; no retries")


@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
@pytest.mark.timeout(720)
def test_a_killed_train_worker_resumes_its_cell_from_the_last_epoch(cluster, first_sweep, tmp_path):
    epochs = 6
    store = _seeded_store(first_sweep[0], tmp_path / "store")
    sw = _SweepThread(_spec(epochs=epochs, concurrent=2), store)
    sw.start()
    cell, ip = _wait(lambda: _cell_with_epochs(store, 2), 240, "a cell with two epoch rows")
    pids = _wait(lambda: _our_train_workers(ip), 20, f"the Train worker on {ip}")
    assert len(pids) == 1, pids  # one CPU per node: one Train worker
    before = _epoch_rows(store)
    t_fault = time.time()
    os.kill(pids[0], signal.SIGKILL)
    sw.finish(420)
    _check_exactly_once(store, 2, epochs=epochs)
    took, rerun, start = _recovery(store, cell, t_fault, before)
    ep = results.load(store, "epochs")
    assert set(ep[ep.resumed_from > 0].cell_id) == {cell}  # the other cell was not disturbed
    assert start >= 1  # continued from a checkpoint, not from scratch
    assert rerun <= 1  # at most the epoch whose row was written but whose checkpoint was not yet reported
    had = sum(1 for n in before if n.startswith(cell))
    _record(f"Train worker SIGKILL: cell had {had} epoch rows, restarted at epoch {start}, epochs re-run {rerun}, "
            f"fault -> first new epoch row {took:.1f} s")


@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
@pytest.mark.timeout(720)
def test_a_killed_sweep_driver_is_resumed_by_a_rerun_on_the_cluster(cluster, first_sweep, tmp_path):
    epochs = 6
    store = _seeded_store(first_sweep[0], tmp_path / "store")
    d = _spec(epochs=epochs, concurrent=2, dense=False)  # one cell: what is shown is the rerun taking it over
    first = _cli_sweep(d, f"file://{store}", cluster.address, tmp_path / "first.log")  # the file:// form of the URI
    try:
        _wait(lambda: first.poll() is not None or _cell_with_epochs(store, 2), 240, "a cell with two epoch rows")
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        before = _epoch_rows(store)
        t_fault = time.time()
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert not _visible(Path(store) / "trials")
    t_rerun = time.time()
    second = _cli_sweep(d, f"file://{store}", cluster.address, tmp_path / "second.log")
    try:
        rc = second.wait(420)
    except subprocess.TimeoutExpired:
        raise AssertionError("the rerun did not finish in 420 s:\n" + (tmp_path / "second.log").read_text()[-3000:]
                             + "\n--- Ray state ---\n" + _ray_diagnostics()) from None
    finally:
        if second.poll() is None:
            second.kill()
    log = (tmp_path / "second.log").read_text()
    assert rc == 0, log[-3000:]
    assert "1 to run" in log, log[:2000]  # the killed driver's lock (its pid is gone) was taken over
    _check_exactly_once(store, 1, epochs=epochs)
    cells = sorted({n.split(".e")[0] for n in before})
    figures = {c: _recovery(store, c, t_fault, before) for c in cells}
    had = {c: sum(1 for n in before if n.startswith(c)) for c in cells}
    for c, (_, rerun, start) in figures.items():
        assert start >= had[c] - 1 and rerun <= 1, (c, had[c], start, rerun)  # from its last checkpoint
    assert max(start for _, _, start in figures.values()) >= 1
    took = min(t for t, _, _ in figures.values())
    # Nothing the killed driver started may keep holding the workers' CPUs: its Train runs' placement groups
    # leaked here once and made the next test hang (raydw.run.orphans releases them when a sweep starts).
    import ray

    from raydw.run.orphans import stale_placement_groups

    _wait(lambda: ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU"), 60,
          "every worker CPU to be free after the rerun")
    assert not stale_placement_groups()
    _record(f"driver SIGKILL, rerun joins the cluster: epoch rows per cell at the kill {list(had.values())}, restarted "
            f"at epochs {[s for _, _, s in figures.values()]}, epochs re-run {sum(r for _, r, _ in figures.values())}, "
            f"kill -> first new epoch row {took:.1f} s (the rerun is a new process: import, plan, Ray join, "
            f"Train start-up), rerun total {time.time() - t_rerun:.0f} s")


@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
@pytest.mark.timeout(720)
def test_a_removed_worker_node_has_its_cell_rescheduled_on_the_other(cluster, first_sweep, tmp_path):
    epochs = 6
    store = _seeded_store(first_sweep[0], tmp_path / "store")
    sw = _SweepThread(_spec(epochs=epochs, concurrent=2, dense=False), store)  # one cell: the other node is free
    sw.start()

    victim_cell, victim_ip = _wait(lambda: _cell_with_epochs(store, 2), 240, "a cell with two epoch rows")
    survivors = set(cluster.workers) - {victim_ip}
    before = _epoch_rows(store)
    t_fault = time.time()
    cluster.remove_worker(victim_ip)
    try:
        sw.finish(420)
        _check_exactly_once(store, 1, epochs=epochs)
        took, rerun, start = _recovery(store, victim_cell, t_fault, before)
        assert start >= 1 and rerun <= 1
        e = _epochs_of(store, victim_cell)
        assert set(e[e.epoch >= start].node) <= survivors  # the rest of the cell ran on a remaining node
        trials = results.load(store).set_index("cell_id")
        assert trials.loc[victim_cell, "node"] in survivors
        _record(f"worker node removed: cell resumed at epoch {start} on {sorted(survivors)}, epochs re-run {rerun}, "
                f"fault -> first new epoch row {took:.1f} s")
    finally:
        cluster.add_worker()  # what the autoscaler would do; later tests see two worker nodes again


def test_an_unwritable_store_fails_fast_before_ray_starts(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"not a folder")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(epochs=1)))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "raydw.cli", "sweep", str(spec), "--storage", str(blocker / "store")],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    took = time.time() - t0
    # A store path under a file is a bad path (exit 2, refused when the store's tables are first listed); a store
    # that exists but refuses writes is exit 3 (check_writable).
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"results store {blocker / 'store'}" in r.stderr and "Not a directory" in r.stderr, r.stderr
    assert "Ray" not in r.stdout and "stage" not in r.stdout  # nothing ran
    assert blocker.read_bytes() == b"not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "spec.yaml"]
    _record(f"unwritable store (path under a regular file): exit 3 in {took:.1f} s (mostly Python start-up), "
            f"'{r.stderr.strip().splitlines()[-1][:100]}'")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_store_raises_and_leaves_no_partial_file(tiny_tmpfs):
    store = Store(str(tiny_tmpfs / "store"))
    store.check_writable()  # 64 KiB free: a probe fits
    big = {"index_set_id": "big", "dataset": "x", "fraction": 1.0, "method": "first_n", "seed": 0, "n": 50_000,
           "indices": list(range(0, 10**10, 200_000))}  # ~400 KB of incompressible-ish Parquet
    with pytest.raises(OSError) as e:
        store.write_row("index_sets", big)
    assert "No space left" in str(e.value) or e.value.errno == 28
    assert not list((tiny_tiny := tiny_tmpfs / "store").rglob("*.parquet")) and not _leftovers(tiny_tiny)
    # A store that is already full is refused up front, before any compute.
    with open(tiny_tmpfs / "filler", "wb") as f:
        try:
            f.write(b"\0" * 128 * 1024)
        except OSError:
            pass
    t0 = time.time()
    with pytest.raises(StoreError, match="is not writable"):
        store.check_writable()
    assert not _leftovers(tiny_tmpfs)
    _record(f"full store (64 KiB tmpfs): a row write raises ENOSPC and leaves no file; check_writable refuses a full "
            f"store in {1000 * (time.time() - t0):.0f} ms")
