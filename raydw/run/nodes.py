"""`python -m raydw.nodes ADDRESS N`: wait until the Ray cluster at ADDRESS has N live nodes (slurm/raydw.sbatch).

A batch allocation starts the head and the workers at once; the sweep must not size its concurrency (or start
cells) before every node has joined. Exits 0 when they have, 1 with the count seen after --timeout seconds.
"""
from __future__ import annotations

import argparse
import sys
import time

from raydw.argtypes import host_port, positive_int, positive_seconds


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def wait_for_nodes(address: str, n: int, timeout: float, poll: float = 1.0, out=print) -> bool:
    import logging

    import ray

    t0 = time.time()
    # ray.init itself waits for the head's GCS to come up; then the workers' raylets register one by one.
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        while (seen := alive_nodes()) < n and time.time() - t0 < timeout:
            time.sleep(poll)
        out(f"{seen} of {n} Ray node(s) up at {address} after {time.time() - t0:.0f} s", flush=True)
        return seen >= n
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raydw.nodes", description=__doc__.splitlines()[0])
    ap.add_argument("address", type=host_port, help="the head's IP:port")
    ap.add_argument("n", type=positive_int, help="nodes to wait for (the head counts)")
    ap.add_argument("--timeout", type=positive_seconds, default=600.0, help="seconds (default 600)")
    a = ap.parse_args(argv)
    return 0 if wait_for_nodes(a.address, a.n, a.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
