"""Placement groups left behind by a killed driver on a shared Ray cluster.

Measured here (Ray 2.60, `ray.cluster_utils.Cluster`, 2026-11-25): after `raydw sweep --address ...` is killed with
SIGKILL, the placement group of a Train run it had started can stay CREATED for minutes, holding a worker node's
CPU (or GPU) although its job is dead and no worker uses it. A later sweep on the same cluster then waits for that
resource forever (tests/test_faults.py caught it: node removal after a driver kill hung). So a sweep that starts
releases the placement groups that (1) belong to a job Ray reports dead, (2) are unnamed, and (3) ask only for
the resources raydw's Train workers and trial drivers ask for. Nothing else on the cluster is touched.
"""
from __future__ import annotations

# `ray` is imported inside the functions, as in raydw.run.cluster (which imports this module before Ray starts).

RAYDW_RESOURCES = {"CPU", "GPU", "memory", "TRAIN_DRIVER"}


def stale_placement_groups() -> list[dict]:
    """The placement groups a dead raydw driver left (see the module docstring for the criteria)."""
    import ray
    from ray._private import state  # the job table: no public API reports whether a driver job has ended

    dead = {j["JobID"] for j in state.jobs() if j.get("IsDead")}
    me = ray.get_runtime_context().get_job_id()
    return [{"id": pg_id, "job": pg_id[-8:], "state": pg["state"], "bundles": pg.get("bundles")}
            for pg_id, pg in ray.util.placement_group_table().items() if is_stale(pg_id, pg, dead, me)]


def is_stale(pg_id: str, pg: dict, dead_jobs: set[str], my_job: str) -> bool:
    job = pg_id[-8:]  # a placement group id ends with its creator's job id
    if job == my_job or job not in dead_jobs or pg.get("name"):
        return False
    if pg.get("state") not in ("CREATED", "PENDING", "RESCHEDULING"):
        return False
    return all(set(b) <= RAYDW_RESOURCES for b in pg.get("bundles", {}).values())


def release_stale_placement_groups(out=print) -> int:
    import ray
    from ray.util.placement_group import PlacementGroup

    stale = stale_placement_groups()
    for pg in stale:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg["id"]))))
    if stale:
        jobs = ", ".join(sorted({pg["job"] for pg in stale}))
        out(f"released {len(stale)} placement group(s) left by ended driver job(s) {jobs} (their resources were still held)")
    return len(stale)
