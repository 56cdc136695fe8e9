"""CPU seconds of every process a command starts, summed by kind (Ray actor class, raylet, driver...).

    python benchmarks/process_cpu.py raydw sweep SPEC --storage STORE

Ray's processes are not all children the kernel accounts to the command (actors exit before their parent
waits), so this polls /proc every 0.1 s and keeps each new process's last CPU time (utime + stime). A process
that lives under 0.1 s can be missed; the total is a lower bound. Linux only. Prints the wall time, the total and
one line per kind, largest first; the command's own output is discarded.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
KINDS = ("TrainController", "RayTrainWorker", "PreemptionWatcher", "DatasetManager", "SynchronizationActor",
         "PlacementGroupCleaner", "ImplicitFunc", "_QueueActor", "_AutoscalingCoordinatorActor", "raylet", "gcs_server",
         "dashboard", "log_monitor", "monitor.py", "RuntimeEnvAgent", "ray::IDLE", "raydw")


def _cpu_and_cmd(pid: str) -> tuple[float, str]:
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / HZ, open(f"/proc/{pid}/cmdline").read().replace("\0", " ")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    seen: dict[str, tuple[float, str]] = {}
    done = threading.Event()

    def poll():
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit() and pid not in before:
                    try:
                        cpu, cmd = _cpu_and_cmd(pid)
                    except (OSError, ValueError):  # gone between listdir and read
                        continue
                    # an actor's command line becomes "ray::<Class>..." once it runs; keep the last non-empty one
                    seen[pid] = (max(cpu, seen.get(pid, (0.0, ""))[0]), cmd or seen.get(pid, (0.0, ""))[1])
            time.sleep(0.1)

    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    t0 = time.time()
    rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.time() - t0
    done.set()
    sampler.join()
    kinds: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for cpu, cmd in seen.values():
        kind = next((k for k in KINDS if k in cmd), cmd[:60] or "?")
        kinds[kind][0] += cpu
        kinds[kind][1] += 1
    print(f"exit {rc}; wall {wall:.1f} s; CPU {sum(c for c, _ in kinds.values()):.1f} s over {os.cpu_count()} cores")
    for kind, (cpu, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        print(f"{cpu:7.1f} s  {n:3d} process(es)  {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
