"""Ray Train's torch process group, with its rendezvous bound to the address Ray uses, not to every interface.

Ray Train's default TorchConfig lets `torch.distributed` make rank 0's TCPStore, which listens on `*:PORT` (IPv4 and
IPv6) for the whole run, even with one worker; the store has no authentication, so anyone who reaches the machine
can write into a run's rendezvous. Here rank 0 binds the socket itself, to its node's Ray address (127.0.0.1 on the
local Ray raydw starts: raydw.run.cluster makes it loopback-only), and hands it to the TCPStore (`master_listen_fd`).
When every worker's node address is a loopback one (a local sweep), gloo's and NCCL's own connections use the
loopback interface too. On a cluster the store listens on the node's cluster address only, which the other nodes
need. Everything else is Ray's `_TorchBackend`: the backend choice, the env variables, the shutdown.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

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


class _BoundBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        import torch.distributed as dist

        if not dist.is_available() or backend_config.backend not in (None, "gloo", "nccl"):
            return super().on_start(worker_group, backend_config)
        backend = backend_config.backend
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        addrs = worker_group.execute(_node_address)
        loopback = all(_is_loopback(a) for a in addrs)
        addr = addrs[0]
        port = worker_group.execute_single(0, _bind, addr)
        worker_group.execute(_set_torch_distributed_env_vars)
        # Rank 0 serves the store while the others connect: all at once, as Ray's own setup does.
        ray.get([worker_group.execute_single_async(i, _join, backend, i, len(worker_group), addr, port,
                                                   backend_config.timeout_s, loopback) for i in range(len(worker_group))])


class BoundTorchConfig(TorchConfig):
    """TorchConfig whose rendezvous listens on the rank-0 node's Ray address only (loopback on a local Ray)."""

    @property
    def backend_cls(self):
        return _BoundBackend
