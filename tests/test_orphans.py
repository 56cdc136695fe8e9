"""Which placement groups a starting sweep releases: only unnamed raydw-shaped ones of dead jobs."""
from raydw.run.orphans import is_stale

LEAKED = "d68ea744c00cfb33f38eee4950fa02000000"  # the one a killed driver left in CI (job 02000000)
TRAIN = {"state": "CREATED", "name": "", "bundles": {0: {"CPU": 1.0}}}


def test_a_dead_jobs_train_placement_group_is_stale():
    assert is_stale(LEAKED, TRAIN, {"02000000"}, "05000000")
    assert is_stale(LEAKED, {**TRAIN, "bundles": {0: {"TRAIN_DRIVER": 1.0}}}, {"02000000"}, "05000000")
    assert is_stale(LEAKED, {**TRAIN, "state": "PENDING", "bundles": {0: {"CPU": 1.0, "GPU": 1.0}}}, {"02000000"}, "05000000")


def test_live_named_foreign_or_removed_placement_groups_are_left_alone():
    assert not is_stale(LEAKED, TRAIN, set(), "05000000")  # its job is alive
    assert not is_stale(LEAKED, TRAIN, {"02000000"}, "02000000")  # ours
    assert not is_stale(LEAKED, {**TRAIN, "name": "SERVE_REPLICA::app"}, {"02000000"}, "05000000")  # named
    assert not is_stale(LEAKED, {**TRAIN, "bundles": {0: {"CPU": 1.0, "accelerator_type:A100": 0.001}}},
                        {"02000000"}, "05000000")  # asks for what raydw never asks for
    assert not is_stale(LEAKED, {**TRAIN, "state": "REMOVED"}, {"02000000"}, "05000000")
