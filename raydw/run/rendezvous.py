"""Ray Train's torch process group, with its rendezvous bound to the address Ray uses, not to every interface.

Ray Train's default TorchConfig lets `torch.distributed` make rank 0's TCPStore, which listens on `*:PORT` (IPv4 and
IPv6) for the whole run, even with one worker; the store has no authentication, so anyone who reaches the machine
can write into a run's rendezvous. Here rank 0 binds the socket itself, to its node's Ray address (127.0.0.1 on the
local Ray raydw starts: raydw.run.cluster makes it loopback-only), and hands it to the TCPStore (`master_listen_fd`).
When every worker's node address is a loopback one (a local sweep), gloo's and NCCL's own connections use the
loopback interface too. On a cluster the store listens on the node's cluster address only, which the other nodes
need. The env variables, the shutdown and the per-worker CUDA device are Ray's own (`ray.train.torch.config`).

The Train run's controller is what starts and stops the process group, so it unpickles this config and runs its
backend. Ray's `TorchConfig` lives in a module that imports torch, which cost every Train run's controller process
torch's import (~1.5-2 CPU-s) to check `dist.is_available()`. This module imports no torch:
each torch call runs on the workers, in functions that import it there.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass

import ray
from ray._private import ray_constants
from ray.exceptions import GetTimeoutError
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S
from ray.train.v2._internal.util import TrainingFramework

_LISTENER: socket.socket | None = None  # rank 0's bound socket: kept open while its TCPStore serves it


def _node_address() -> str:
    return ray.util.get_node_ip_address()


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _bind(addr: str) -> int:
    """Rank 0: a listening socket on `addr` only (port chosen by the kernel); its port."""
    global _LISTENER
    if _LISTENER is not None:
        _LISTENER.close()
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 0))
    s.listen(128)
    _LISTENER = s
    return s.getsockname()[1]


def _join(backend: str, rank: int, world: int, addr: str, port: int, timeout_s: int, loopback: bool) -> None:
    import torch.distributed as dist

    if loopback:  # gloo and NCCL open their own sockets between ranks: on the loopback interface, like the store
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # as Ray's own setup does
    timeout = dt.timedelta(seconds=timeout_s)
    if rank == 0:
        store = dist.TCPStore(addr, port, world, True, timeout=timeout, master_listen_fd=_LISTENER.fileno())
    else:
        store = dist.TCPStore(addr, port, world, False, timeout=timeout)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)


def _set_env_vars() -> None:
    """On a worker: RANK, WORLD_SIZE, LOCAL_RANK, ... as Ray's own torch setup sets them."""
    from ray.train.torch.config import _set_torch_distributed_env_vars

    _set_torch_distributed_env_vars()


def _shutdown(destroy_process_group: bool) -> None:
    """On a worker: Ray's own torch shutdown (the process group where there are several workers, the CUDA cache)."""
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


class _BoundBackend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray's _TorchBackend: a worker sees its node's other GPUs (NCCL)

    def on_start(self, worker_group, backend_config: "BoundTorchConfig"):
        backend = backend_config.backend
        if backend not in (None, "gloo", "nccl"):  # any other (a TPU's, a comma list) is Ray's own, unbound
            from ray.train.torch.config import _TorchBackend

            return _TorchBackend().on_start(worker_group, backend_config)
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        addrs = worker_group.execute(_node_address)
        loopback = all(_is_loopback(a) for a in addrs)
        addr = addrs[0]
        port = worker_group.execute_single(0, _bind, addr)
        worker_group.execute(_set_env_vars)
        # Rank 0 serves the store while the others connect: all at once, as Ray's own setup does.
        ray.get([worker_group.execute_single_async(i, _join, backend, i, len(worker_group), addr, port,
                                                   backend_config.timeout_s, loopback) for i in range(len(worker_group))])

    def on_shutdown(self, worker_group, backend_config: "BoundTorchConfig"):
        futures = worker_group.execute_async(_shutdown, destroy_process_group=len(worker_group) > 1)
        timeout_s = ray_constants.env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                                              DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        try:
            ray.get(futures, timeout=timeout_s)
        except GetTimeoutError:
            pass  # as Ray's: the workers are being torn down anyway


class _WorkerDevice:
    """Ray's TorchConfigContextManager around a worker's loop, imported on the worker when the loop starts."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


@dataclass
class BoundTorchConfig(BackendConfig):
    """Ray's TorchConfig (the same fields) whose rendezvous listens on the rank-0 node's Ray address only (loopback on
    a local Ray). `backend` None: NCCL where the workers have GPUs, else gloo (_BoundBackend.on_start)."""

    backend: str | None = None
    init_method: str = "env"  # unused: the store is made here (kept because Ray's own _TorchBackend reads it)
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return _BoundBackend

    @property
    def train_func_context(self):
        # Read where the Train run is built (the trial), entered on each worker: Ray's (sets the worker's CUDA
        # device), imported there, as Ray's module imports torch.
        return _WorkerDevice

    @property
    def framework(self):
        return TrainingFramework.TORCH

    def to_dict(self) -> dict:
        return {"backend": self.backend, "init_method": self.init_method, "timeout_s": self.timeout_s}
