"""The Ray cluster a sweep runs on: joining or starting it, its signals, and what it can fit.

A local Ray (no --address / RAY_ADDRESS) listens on loopback only and offers the custom resource TRAIN_DRIVER
for trial drivers, so the Train workers always find their CPUs (ray-notes pitfall 1). A joined cluster must
offer TRAIN_DRIVER itself (cluster.yaml). SIGTERM / SIGINT stop the driver cleanly; a rerun resumes.

`ray` is imported inside the functions: Ray reads the environment at import (its loopback switch, RAY_ENV), which
connect() sets first; and `raydw` loads this module (for STOPPED_BY) without starting or importing Ray.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from raydw.run.orphans import release_stale_placement_groups
from raydw.spec import SpecError, SweepSpec

# Ray Train's controller polls its workers every 2 s by default; a report then waits up to 2 s to surface
# and a toy cell pays ~6 s more (ray-notes sections 3 and 9). 0.2 s costs nothing measurable.
# Ray 2.60 starts a PreemptionWatcher actor per Train run that only logs node drains and serves
# ray.train.get_preemption_info, which raydw never asks: a Python process importing Ray, ~1.6 CPU-s of each run
# (docs/performance.md, "Machinery"). A user who wants its log lines sets the variable to 1 (kept: setdefault).
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
DRIVER_RESOURCE = "TRAIN_DRIVER"
AUTOSCALE_CELLS = 4  # cells started on a cluster that has no fitting node yet (the autoscaler's demand signal)

# `raydw sweep --verbose` (set once, before the driver starts): Ray's and Tune's own output, worker logs included.
VERBOSE = os.environ.get("RAYDW_VERBOSE") == "1"
_JOINED_CLUSTER = False  # connect() joined a cluster (--address / RAY_ADDRESS), rather than starting a local Ray
STOPPED_BY: int | None = None  # the signal (SIGTERM / SIGINT) that stopped this driver


def connect(address: str | None) -> None:
    """Join a cluster (address or RAY_ADDRESS) or start a local Ray with a custom driver resource.

    Trial drivers (Tune trials that only drive a TorchTrainer) hold the custom resource TRAIN_DRIVER instead
    of a CPU, so on a 2-CPU machine the Train workers always find their CPUs: the deadlock of ray-notes
    pitfall 1 cannot happen by construction.
    """
    global _JOINED_CLUSTER
    addr = cluster_address(address)
    _JOINED_CLUSTER = bool(addr)
    if not addr:
        _loopback_only()
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    verbose = VERBOSE
    if not verbose:
        # Ray enables token authentication by default and says so on every start: nothing the user must act on.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # Tune times its own loop and warns when a step is slow ("may be a performance bottleneck"): on a busy
        # machine that is every few cells, and the advice (report less often) is not the user's to take.
        logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
        # Tune's console engine prints an experiment box ("Number of trials 9223372036854775807": the staged searcher
        # is open-ended) and a TensorBoard hint for a folder in /tmp; raydw's progress lines say what matters.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not verbose:
        _quiet_worker_pool_warning()
    if ray.is_initialized():
        _release_stale()
        return
    env = {"env_vars": {k: os.environ[k] for k in RAY_ENV}}
    # Train workers log every report and checkpoint; progress comes from the Tune callback instead, and a
    # cell's error lands in its trials row. --verbose brings the worker logs back.
    common = dict(include_dashboard=False, runtime_env=env, logging_level=logging.INFO if verbose else logging.WARNING,
                  log_to_driver=verbose)
    if addr:
        ray.init(address=addr, **common)
        _stop_on_signals()
        _release_stale()  # a killed driver's Train runs can leave placement groups holding the cluster's CPUs/GPUs
    else:  # "local" always starts a fresh Ray, never a dead cluster left in /tmp/ray (ray-notes section 9)
        ray.init(address="local", num_cpus=os.cpu_count(), resources={DRIVER_RESOURCE: 1000}, **common)
        _stop_on_signals()
        ip = ray.util.get_node_ip_address()
        if ip not in ("127.0.0.1", "::1"):
            print(f"warning: the local Ray took the node address {ip}, not loopback: its ports may be reachable from the "
                  "network", file=sys.stderr)


# The raylet warns when it has started many Python workers: raydw's trial drivers hold TRAIN_DRIVER, not a CPU, so
# on 2 CPUs it always starts more than its "expected startup concurrency". By design; nothing a user can act on.
WORKER_POOL_WARNING = "worker processes have been started on node"


def _quiet_worker_pool_warning() -> None:
    """Drop that one raylet message from the driver's console (every other raylet error or warning still prints)."""
    from ray._private import worker

    if getattr(worker.print_to_stdstream, "_raydw", False):
        return
    inner = worker.print_to_stdstream

    def print_to_stdstream(data, ignore_prefix: bool = False):
        if data.get("pid") == "raylet" and any(WORKER_POOL_WARNING in line for line in data.get("lines", [])):
            return
        inner(data, ignore_prefix=ignore_prefix)

    print_to_stdstream._raydw = True
    worker.print_to_stdstream = print_to_stdstream


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" = a single-node Ray on 127.0.0.1 (its macOS default)


def _loopback_only() -> None:
    """A local Ray listens on 127.0.0.1 only (GCS, raylet, workers), not on every interface: a laptop on a shared
    network exposes none of its ports. Ray binds its gRPC servers to loopback exactly when the node address is
    127.0.0.1, which it picks on Linux only with its cluster mode off. Set before Ray starts (its processes inherit
    it); the constant is patched too in case ray was imported already. Never for --address (a cluster's nodes must
    reach each other)."""
    os.environ[LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT to the driver: raised in the main thread, out of Tune's loop, so the sweep stops at once."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT stop the driver cleanly (exit 143 / 130, `raydw sweep` says to rerun it to resume).

    Ray's own SIGTERM handler (sys.exit inside Tune's loop) ended in an abort (exit 134), and Tune's SIGINT handler
    stops the experiment and says to resume with Tuner.restore, which is not how raydw resumes: a rerun of the same
    command plans from the store. So both raise Interrupted here (Tune's handler off), the driver shuts Ray down, and
    the store is as a SIGKILL leaves it: every row is whole (atomic writes), a half-done cell continues from its
    last checkpoint on the rerun, and hidden temporaries of killed writers are removed by the next sweep."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        global STOPPED_BY
        STOPPED_BY = signum  # Tune may re-raise a plain KeyboardInterrupt: the CLI reads the signal here
        for s in (signal.SIGTERM, signal.SIGINT):  # a second signal while Ray shuts down is not another traceback
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)


def shutdown_after_interrupt() -> None:
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    try:
        import ray

        ray.shutdown()
    except Exception:  # noqa: BLE001 - stopping anyway
        pass


def _release_stale() -> None:
    try:
        release_stale_placement_groups(out=_said)
    except Exception as e:  # noqa: BLE001 - a best-effort clean-up must never stop a sweep
        _said(f"(could not check for placement groups left by ended drivers: {type(e).__name__}: {e})")


def driver_resources() -> dict:
    import ray

    if ray.cluster_resources().get(DRIVER_RESOURCE, 0) >= 1:
        return {"cpu": 0, DRIVER_RESOURCE: 1}
    print(f"warning: the cluster has no '{DRIVER_RESOURCE}' resource (see cluster.yaml); each cell's driver takes 0.01 CPU",
          file=sys.stderr)
    return {"cpu": 0.01}


def max_concurrent(spec: SweepSpec) -> int:
    import ray

    r = spec.resources
    if r.max_concurrent_cells:
        return r.max_concurrent_cells
    total = ray.cluster_resources()
    n = int(total.get("CPU", 1) // (r.workers_per_cell * r.cpus_per_worker))
    if r.gpus_per_worker > 0:
        n = min(n, int(total.get("GPU", 0) // (r.workers_per_cell * r.gpus_per_worker)))
    if n < 1 and total.get(DRIVER_RESOURCE, 0) >= 1 and _JOINED_CLUSTER:
        # An autoscaling cluster (cluster.yaml) starts without GPU nodes: pending cells are the demand that makes
        # the autoscaler add them, so start some instead of refusing.
        print(f"warning: the cluster has no node that fits a cell yet ({dict(total)}); starting {AUTOSCALE_CELLS} cells so "
              "the autoscaler adds nodes (set resources.max_concurrent_cells to choose)", file=sys.stderr)
        return AUTOSCALE_CELLS
    if n < 1:
        raise RuntimeError(f"the cluster ({dict(total)}) cannot fit one cell of {r.workers_per_cell} workers x "
                           f"{r.cpus_per_worker} CPU / {r.gpus_per_worker} GPU")
    return n


def cluster_address(address: str | None) -> str | None:
    """The cluster this driver joins (--address, else RAY_ADDRESS); None: it starts a local Ray of its own."""
    return address or os.environ.get("RAY_ADDRESS")


def check_fits(res: dict, what: str, address: str | None, out) -> None:
    """A Train run asking for more than the whole Ray cluster would wait forever without a word: refuse on a local
    Ray (before any trial starts); on a cluster, say that it waits for the autoscaler. Every kind of Train run a
    sweep starts is checked: cells (and packed cells, tuning trials), pre-training and IMP jobs."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": res["workers_per_cell"] * res["cpus_per_worker"], "GPU": res["workers_per_cell"] * res["gpus_per_worker"]}
    short = {k: (v, total.get(k, 0)) for k, v in need.items() if v > total.get(k, 0)}
    if not short:
        return
    said = ", ".join(f"{v:g} {k} (Ray has {have:g})" for k, (v, have) in short.items())
    if cluster_address(address):
        out(f"warning: {what} needs {said}: it waits until the autoscaler adds a node that fits")
        return
    raise SpecError(f"{what} needs {said} on this machine's Ray; lower them in the spec, or run on a cluster "
                    "(docs/cluster.md). Nothing was run")


def check_cells_fit(spec: SweepSpec, address: str | None, out) -> None:
    r = spec.resources
    check_fits(r.model_dump(), f"each cell ({r.workers_per_cell} workers x {r.cpus_per_worker:g} CPU / "
                f"{r.gpus_per_worker:g} GPU: resources.workers_per_cell, cpus_per_worker, gpus_per_worker)", address, out)


def _said(msg: str) -> None:
    print(msg, flush=True)
