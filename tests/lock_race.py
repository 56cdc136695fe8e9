"""Racers for the lock tests (test_hardening_store, test_store_scale):
`python tests/lock_race.py ROUNDS RACERS GO_S URI_TEMPLATE [DEAD_PID]`. Per round r it forks RACERS processes that all
try to take the driver lock of the store URI_TEMPLATE.format(r=r) GO_S seconds later, and prints the (start, end) of
every hold as one JSON line. With DEAD_PID (a local store), a lock of that dead process is planted there first.
`rounds` is the same race for a caller that forks its racers itself (the S3 test: S3 is set up in its process).

Its own small process forks them: forked from a pytest worker (torch and the rest loaded), each fork cost ~40 ms of
page-table copying, ~4 CPU-s for the local test's 96."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys
import time

from raydw.store import Store, StoreLocked


def race(uri: str, go: float, q) -> None:
    while time.time() < go:
        time.sleep(0.001)
    try:
        with Store(uri).lock("racer"):
            start = time.monotonic()  # system-wide on Linux: comparable across the racing processes
            time.sleep(0.1)  # hold it while the others try (they all start within a few ms)
            end = time.monotonic()
        q.put(("got", start, end))
    except StoreLocked:
        q.put(("refused", 0.0, 0.0))


def rounds(n: int, racers: int, go_s: float, template: str, dead: int | None = None):
    """Per round, once its racers have ended: the sorted (start, end) of every hold of the lock."""
    ctx = mp.get_context("fork")
    for r in range(n):
        uri = template.format(r=r)
        if dead is not None:
            os.makedirs(f"{uri}/locks")
            with open(f"{uri}/locks/driver.json", "w") as f:
                json.dump({"pid": dead, "host": socket.gethostname(), "what": "killed", "since": "x"}, f)
        q = ctx.Queue()
        go = time.time() + go_s  # all forked before it
        procs = [ctx.Process(target=race, args=(uri, go, q)) for _ in range(racers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        yield sorted((a, b) for what, a, b in (q.get(timeout=5) for _ in procs) if what == "got")


if __name__ == "__main__":
    a = sys.argv[1:]
    for held in rounds(int(a[0]), int(a[1]), float(a[2]), a[3], int(a[4]) if len(a) > 4 else None):
        print(json.dumps(held), flush=True)
