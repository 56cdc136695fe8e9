"""cluster.yaml and cluster-onprem.yaml pass Ray's own validator offline; broken copies fail with Ray's message.

Nothing here calls a cloud API or SSHes anywhere (never `ray up`): `prepare_config` merges the provider's
defaults, `validate_config` runs Ray's jsonschema and cross-field checks, and for provider type local
`bootstrap_config` also builds the node type Ray derives from worker_ips (ray-notes section 5).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from raydw.run.cluster import DRIVER_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
RAY_ERRORS = (jsonschema.ValidationError, ValueError, click.ClickException)


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(cfg))
    validate_config(cfg)
    return cfg


def _bootstrap(cfg: dict) -> dict:
    from ray.autoscaler.sdk import bootstrap_config

    return bootstrap_config(copy.deepcopy(cfg), no_config_cache=True)


@pytest.fixture
def aws() -> dict:
    return _load("cluster.yaml")


@pytest.fixture
def onprem() -> dict:
    return _load("cluster-onprem.yaml")


# ---------------------------------------------------------------------------------------------- AWS config
def test_the_aws_config_passes_rays_validator(aws):
    cfg = _validate(aws)
    assert cfg["provider"]["type"] == "aws" and cfg["head_node_type"] == "head"


def test_the_head_drives_and_never_trains(aws):
    head = aws["available_node_types"][aws["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and head["resources"].get("GPU", 0) == 0
    assert head["resources"][DRIVER_RESOURCE] >= 1  # what every cell's trial driver asks for
    for name, t in aws["available_node_types"].items():
        if name != aws["head_node_type"]:
            assert DRIVER_RESOURCE not in t["resources"], name  # cell drivers only ever land on the head
    # The launcher hands each node type's resources to `ray start` (RAY_OVERRIDE_RESOURCES): no second source of truth.
    start = " ".join(aws["head_start_ray_commands"])
    assert "--num-cpus" not in start and "--resources" not in start


def test_gpu_workers_come_in_one_and_eight_gpu_sizes_spot_by_default(aws):
    types = aws["available_node_types"]
    gpus = {n: t["resources"].get("GPU", 0) for n, t in types.items()}
    assert {1, 8} <= set(gpus.values())
    spot = {n for n, t in types.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"}
    assert {n for n, g in gpus.items() if g} - spot, "an on-demand fallback type is documented"
    for n, t in types.items():
        if gpus[n] and n not in spot:
            assert t["max_workers"] == 0, f"{n}: on-demand fallback is off until the user raises max_workers"
    for n in spot:
        assert types[n]["min_workers"] == 0 and types[n]["max_workers"] >= 1
    assert aws["idle_timeout_minutes"] > 0


def test_setup_installs_the_pinned_stack_and_raydw(onprem, aws):
    for cfg in (aws, onprem):
        setup = " ".join(cfg["setup_commands"])
        for pin in ("torch==2.14.1", "torchvision==0.29.1", "ray[tune,train]==2.60.0"):
            assert pin in setup
        assert "pip install -q -e ~/raydw" in setup and cfg["file_mounts"]["~/raydw"] == "."
        assert ".venv" in cfg["rsync_exclude"]  # a 6 GB venv must not be synced to every node


def test_the_storage_uri_is_named_once_and_no_secret_is_in_the_files(aws, onprem):
    for name in ("cluster.yaml", "cluster-onprem.yaml"):
        text = (ROOT / name).read_text()
        assert text.count("export RAYDW_STORAGE=") == 1, name
        lowered = text.lower()
        for secret in ("aws_secret_access_key", "aws_access_key_id", "ray_auth_token=", "password", "begin openssh"):
            assert secret not in lowered, (name, secret)
    for cfg in (aws, onprem):
        assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token travels as a file
        for cmds in ("head_start_ray_commands", "worker_start_ray_commands"):
            assert "RAY_AUTH_MODE=token" in " ".join(cfg[cmds])


def test_only_ssh_is_open_from_outside_the_security_group(aws):
    rules = aws["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    assert all(ip["CidrIp"] != "0.0.0.0/0" for r in rules for ip in r["IpRanges"])
    assert "--dashboard-host=127.0.0.1" in " ".join(aws["head_start_ray_commands"])


def _drop(cfg, *path):
    d = cfg
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]
    return cfg


BROKEN_AWS = {
    "misspelt top-level key": (lambda c: c.update(setup_comands=c.pop("setup_commands")), "Additional properties are not allowed"),
    "fractional GPU": (lambda c: c["available_node_types"]["gpu1_spot"]["resources"].update(GPU=0.5), "is not of type 'integer'"),
    "node type without resources": (lambda c: _drop(c, "available_node_types", "gpu1_spot", "resources"), "'resources' is a required property"),
    "head type that does not exist": (lambda c: c.update(head_node_type="ray.head.default"), "head_node_type"),
    "more min_workers than max_workers": (lambda c: c["available_node_types"]["gpu1_spot"].update(min_workers=20), "max_workers"),
}


@pytest.mark.parametrize("what", list(BROKEN_AWS))
def test_a_broken_aws_config_fails_with_rays_own_message(aws, what):
    edit, message = BROKEN_AWS[what]
    cfg = copy.deepcopy(aws)
    edit(cfg)
    with pytest.raises(RAY_ERRORS) as e:
        _validate(cfg)
    assert message in str(e.value), f"{what}: {type(e.value).__name__}: {str(e.value)[:400]}"


# -------------------------------------------------------------------------------------------- on-prem config
def test_the_onprem_config_passes_rays_validator_and_bootstrap(onprem):
    _validate(onprem)
    boot = _bootstrap(onprem)
    types = boot["available_node_types"]
    assert list(types) == ["local.cluster.node"] and boot["head_node_type"] == "local.cluster.node"
    n = len(onprem["provider"]["worker_ips"])
    assert types["local.cluster.node"]["min_workers"] == types["local.cluster.node"]["max_workers"] == n
    assert boot["max_workers"] == n
    start = " ".join(onprem["head_start_ray_commands"])
    assert "--num-cpus=0" in start and DRIVER_RESOURCE in json.dumps(start)


def test_an_onprem_config_with_node_types_is_refused(onprem, aws):
    cfg = copy.deepcopy(onprem)
    cfg["available_node_types"] = copy.deepcopy(aws["available_node_types"])
    cfg["head_node_type"] = "head"
    with pytest.raises(RAY_ERRORS) as e:
        _validate(cfg)
        _bootstrap(cfg)
    assert "not supported for on-premise clusters" in str(e.value)


def test_an_onprem_config_without_head_ip_is_refused(onprem):
    cfg = _drop(copy.deepcopy(onprem), "provider", "head_ip")
    with pytest.raises(RAY_ERRORS) as e:
        _validate(cfg)
        _bootstrap(cfg)
    assert "head_ip" in str(e.value)
