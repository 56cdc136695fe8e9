"""Checkpoint formats, conversion, strict weights-only loading and fetch, on small files written in the real formats.

ResNet-18 stands in where the format logic is the same as ResNet-50's; one test round-trips a real ResNet-50.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from raydw.cli import main as cli
from raydw.models import catalog
from raydw.models.build import build_net
from raydw.models.catalog import PRETRAINED, PretrainedEntry, sha256_prefix
from raydw.models.convert import (FORMATS, CheckpointError, convert_file, detect_format, load_strict,
                                  read_checkpoint, sha256_file, to_torchvision)
from raydw.models.fetch import FetchError, fetch
from raydw.testinputs.checkpoints import fast_adv_ckpt, robustness_ckpt


@pytest.fixture(scope="module")
def r18() -> dict:
    torch.manual_seed(0)
    return build_net("resnet18", 1000).state_dict()


def same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# --- registry -------------------------------------------------------------------------------------------------

def test_registry_entries_are_complete():
    for name, e in PRETRAINED.items():
        assert name == e.name and name.startswith(e.arch + ".")
        assert e.urls and e.format in FORMATS and e.citation and e.recipe, name
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0), name
        assert e.kind in ("standard", "fast_adversarial", "pgd_adversarial")
        assert (e.threat == "none") == (e.kind == "standard")
    tv = PRETRAINED["resnet50.tv_in1k"]
    assert [sha256_prefix(u) for u in tv.urls] == ["0676ba61", "19c8e357"]
    assert PRETRAINED["resnet50.pgd_linf0.5_in1k"].urls[0].endswith("/resnet50_linf_eps0.5.ckpt")
    assert PRETRAINED["resnet50.pgd_linf4_in1k"].urls[0].endswith("/resnet50_linf_eps4.0.ckpt")
    assert PRETRAINED["resnet50.pgd_linf4_in1k"].needs_trust and not PRETRAINED["resnet50.fast_linf4_in1k"].direct


def test_sha256_prefix_only_from_hash_like_names():
    assert sha256_prefix("https://x/resnet50-0676ba61.pth?dl=1") == "0676ba61"
    assert sha256_prefix("file:///tmp/resnet50_linf_eps4.0.ckpt") is None
    assert sha256_prefix("https://x/my-model.pt") is None


# --- formats --------------------------------------------------------------------------------------------------

def test_torchvision_plain_round_trip(tmp_path, r18):
    torch.save(r18, tmp_path / "tv.pth")
    assert detect_format(read_checkpoint(tmp_path / "tv.pth")) == "torchvision"
    assert cli(["convert", str(tmp_path / "tv.pth"), str(tmp_path / "out.pt"), "--arch", "resnet18"]) == 0
    assert same(torch.load(tmp_path / "out.pt", weights_only=True), r18)


def test_fast_adversarial_strips_module(tmp_path, r18):
    torch.save(fast_adv_ckpt(r18), tmp_path / "fat.pth.tar")
    obj = read_checkpoint(tmp_path / "fat.pth.tar")  # plain containers: weights-only is enough
    assert detect_format(obj) == "fast_adversarial"
    assert same(to_torchvision(obj, "fast_adversarial"), r18)
    info = convert_file(tmp_path / "fat.pth.tar", tmp_path / "out.pt", arch="resnet18")
    assert info["format"] == "fast_adversarial" and info["sha256"] == sha256_file(tmp_path / "out.pt")
    assert same(torch.load(tmp_path / "out.pt", weights_only=True), r18)


def test_robustness_untrusted_is_refused_with_the_convert_hint(tmp_path, r18, capsys):
    torch.save(robustness_ckpt(r18), tmp_path / "rob.ckpt")
    with pytest.raises(CheckpointError, match=r"raydw convert .*--trust") as e:
        read_checkpoint(tmp_path / "rob.ckpt")
    assert "rob.ckpt" in str(e.value)
    assert cli(["convert", str(tmp_path / "rob.ckpt"), str(tmp_path / "out.pt"), "--arch", "resnet18"]) == 2
    assert "--trust" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()


def test_robustness_keeps_the_net_drops_attacker_and_normalizer(r18):
    obj = robustness_ckpt(r18)
    assert detect_format(obj) == "robustness"
    assert same(to_torchvision(obj), r18)  # module.model.*, not the (shifted) attacker copy
    assert detect_format(obj["model"]) == "robustness"  # a bare AttackerModel state dict
    assert same(to_torchvision({"state_dict": obj["model"]}), r18)  # robustness' fallback key
    with pytest.raises(CheckpointError, match="no 'module.model"):
        to_torchvision({"model": {"module.attacker.model.fc.bias": torch.zeros(3)}})


def test_robustness_resnet50_trusted_convert_then_weights_only(tmp_path, capsys):
    torch.manual_seed(1)
    sd = build_net("resnet50", 1000).state_dict()
    torch.save(robustness_ckpt(sd), tmp_path / "resnet50_linf_eps4.0.ckpt")
    rc = cli(["convert", str(tmp_path / "resnet50_linf_eps4.0.ckpt"), str(tmp_path / "r50.pt"), "--trust"])
    assert rc == 0 and "normalized inputs inside the model" in capsys.readouterr().out
    out = torch.load(tmp_path / "r50.pt", weights_only=True)
    assert same(out, sd)
    load_strict(build_net("resnet50", 1000), to_torchvision(out, "robustness"), "r50.pt")  # cached files pass as-is


# --- failure modes --------------------------------------------------------------------------------------------

def test_wrong_prefix_names_the_prefix(r18):
    with pytest.raises(CheckpointError, match=r"every key starts with 'net\.'"):
        load_strict(build_net("resnet18", 1000), {f"net.{k}": v for k, v in r18.items()}, "wrapped.pt")


def test_missing_extra_and_shape_mismatch_are_all_listed(r18):
    bad = dict(r18)
    del bad["layer1.0.conv1.weight"]
    bad["normalize.mean"] = torch.zeros(3)
    bad["fc.weight"] = torch.zeros(10, 512)
    with pytest.raises(CheckpointError) as e:
        load_strict(build_net("resnet18", 1000), bad, "bad.pt")
    msg = str(e.value)
    assert "bad.pt" in msg and "missing keys ['layer1.0.conv1.weight']" in msg
    assert "unexpected keys ['normalize.mean']" in msg and "fc.weight: file (10, 512) vs model (1000, 512)" in msg


def test_missing_num_batches_tracked_is_filled_like_torchvision(r18):
    legacy = {k: v for k, v in r18.items() if not k.endswith("num_batches_tracked")}  # pre-0.4 files, e.g. 19c8e357
    net = build_net("resnet18", 1000)
    load_strict(net, legacy)
    assert same({k: v for k, v in net.state_dict().items() if k in legacy}, legacy)


def test_format_mismatch_and_unknown_layout():
    with pytest.raises(CheckpointError, match="'fast_adversarial' asked for, but the file looks like 'robustness'"):
        to_torchvision({"model": {"module.model.fc.bias": torch.zeros(2)}}, "fast_adversarial")
    with pytest.raises(CheckpointError, match="unknown format 'timm'"):
        to_torchvision({"fc.bias": torch.zeros(2)}, "timm")
    with pytest.raises(CheckpointError, match=r"top-level keys \['epoch', 'net'\]"):
        detect_format({"net": {"fc.bias": torch.zeros(2)}, "epoch": 3})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        read_checkpoint(tmp_path / "nothere.pt")


# --- fetch ----------------------------------------------------------------------------------------------------

@pytest.fixture
def entry(monkeypatch):
    """A ResNet-18 registry entry (fetch's logic is the arch's; ResNet-18 keeps it fast)."""
    def make(url, fmt="torchvision", sha256=None, **kw):
        e = PretrainedEntry("resnet18.test_in1k", "resnet18", "standard", fmt, (url,), sha256,
                            recipe="test", citation="test", **kw)
        monkeypatch.setitem(PRETRAINED, e.name, e)
        return e
    return make


def test_fetch_file_url_checks_prefix_converts_and_records_both_hashes(tmp_path, r18, entry):
    tmp = tmp_path / "x.pth"
    torch.save(fast_adv_ckpt(r18), tmp)
    pub = tmp_path / f"resnet18-{sha256_file(tmp)[:8]}.pth"
    tmp.rename(pub)
    entry(pub.as_uri(), "fast_adversarial")
    out = fetch("resnet18.test_in1k", cache=tmp_path / "cache", log=lambda *_: None)
    assert out == tmp_path / "cache" / "resnet18.test_in1k.pt"
    assert same(torch.load(out, weights_only=True), r18)
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["published_sha256"] == sha256_file(pub) and rec["sha256"] == sha256_file(out)
    assert rec["url"] == pub.as_uri() and not (tmp_path / "cache" / "resnet18.test_in1k.download").exists()


def test_fetch_bad_prefix_and_bad_full_hash_delete_the_download(tmp_path, r18, entry):
    torch.save(r18, tmp_path / "resnet18-deadbeef.pth")
    entry((tmp_path / "resnet18-deadbeef.pth").as_uri())
    with pytest.raises(FetchError, match="does not start with deadbeef"):
        fetch("resnet18.test_in1k", cache=tmp_path / "c", log=lambda *_: None)
    torch.save(r18, tmp_path / "plain.pth")
    entry((tmp_path / "plain.pth").as_uri(), sha256="0" * 64)
    with pytest.raises(FetchError, match=f"sha256 {sha256_file(tmp_path / 'plain.pth')}, expected 0000"):
        fetch("resnet18.test_in1k", cache=tmp_path / "c", log=lambda *_: None)
    assert list((tmp_path / "c").iterdir()) == []


def test_fetch_untrusted_pickle_keeps_the_download_then_trust_converts(tmp_path, r18, entry, capsys):
    torch.save(robustness_ckpt(r18), tmp_path / "rob.ckpt")
    entry((tmp_path / "rob.ckpt").as_uri(), "robustness", sha256=sha256_file(tmp_path / "rob.ckpt"))
    cache = tmp_path / "c"
    assert cli(["fetch", "resnet18.test_in1k", "--cache", str(cache)]) == 2
    assert "--trust" in capsys.readouterr().err and (cache / "resnet18.test_in1k.published").exists()
    assert cli(["fetch", "resnet18.test_in1k", "--cache", str(cache), "--trust"]) == 0
    assert same(torch.load(cache / "resnet18.test_in1k.pt", weights_only=True), r18)


def test_fetch_unreachable_and_not_direct(tmp_path, entry):
    entry((tmp_path / "gone.pth").as_uri())
    with pytest.raises(FetchError, match="--url file://"):
        fetch("resnet18.test_in1k", cache=tmp_path / "c", log=lambda *_: None)
    entry("https://drive.google.com/drive/folders/x", direct=False)
    with pytest.raises(FetchError, match="by hand"):
        fetch("resnet18.test_in1k", cache=tmp_path / "c", log=lambda *_: None)
    assert cli(["fetch", "resnet50.nope", "--cache", str(tmp_path)]) == 2


def test_fetch_url_override_via_cli(tmp_path, r18, entry):
    entry("https://example.invalid/resnet18.pth")
    torch.save(r18, tmp_path / "mirror.pth")
    assert cli(["fetch", "resnet18.test_in1k", "--cache", str(tmp_path / "c"), "--url", (tmp_path / "mirror.pth").as_uri()]) == 0
    assert (tmp_path / "c" / "resnet18.test_in1k.json").exists()


# --- plan.missing_inputs --------------------------------------------------------------------------------------

def test_missing_inputs_names_cache_path_and_command(tmp_path, monkeypatch):
    from raydw.planning.inputs import missing_inputs
    from raydw.spec import load_spec

    monkeypatch.setattr(catalog, "MODEL_CACHE", tmp_path / "models")
    monkeypatch.delenv(catalog.MODEL_CACHE_ENV, raising=False)  # the default cache, not a shell's override
    doc = yaml.safe_load(open(catalog.__file__.replace("models/catalog.py", "sweeps/demo.yaml")))
    doc["pretrainings"] = [{"name": "ST", "weights": "resnet50.tv_in1k"},
                           {"name": "FAT", "weights": "resnet50.fast_linf4_in1k"},
                           {"name": "AT", "weights": "resnet50.pgd_linf4_in1k"}]
    doc["data"]["datasets"] = ["cifar10"]  # 3-channel images, as the ImageNet models take
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    miss = missing_inputs(load_spec(tmp_path / "s.yaml"))
    assert miss.pop().startswith("dataset cifar10: ")
    assert miss[0] == f"pre-training ST: {tmp_path}/models/resnet50.tv_in1k.pt missing -> raydw fetch resnet50.tv_in1k"
    assert "by hand from https://drive.google.com" in miss[1] and miss[2].endswith("raydw fetch resnet50.pgd_linf4_in1k --trust")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "resnet50.tv_in1k.pt").write_bytes(b"x")  # present (an empty file is reported as empty)
    assert len(missing_inputs(load_spec(tmp_path / "s.yaml"))) == 3  # FAT, AT and cifar10


def test_a_sweep_names_a_local_checkpoint_and_the_store_keeps_it_weights_only(tmp_path, r18):
    """The driver's stage 1 for `weights: PATH, arch: ...`: strict conversion into the store, reused by every cell."""
    from raydw.spec import PretrainingSpec
    from raydw.store import Store
    from raydw.train.weights import register_weights
    from raydw.train.setup import load_pretrained

    path = tmp_path / "fast.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in r18.items()}, "epoch": 15, "arch": "resnet18"}, path)
    store = Store(str(tmp_path / "store"))
    row = register_weights(store, PretrainingSpec(name="FAT", weights=str(path), arch="resnet18"))
    assert row["arch"] == "resnet18" and row["num_classes"] == 1000 and "sha256" in row["source"]
    again = register_weights(store, PretrainingSpec(name="FAT", weights=str(path), arch="resnet18"))
    assert again["pretrained_id"] == row["pretrained_id"]  # registered once
    _, net = load_pretrained(store, row["pretrained_id"])
    assert torch.equal(net.state_dict()["conv1.weight"], r18["conv1.weight"])
    torch.load(store.path(*store.weights_parts(row["pretrained_id"])), weights_only=True)


def test_a_sweep_naming_a_registry_entry_without_its_file_says_how_to_fetch_it(tmp_path, monkeypatch):
    from raydw.spec import PretrainingSpec
    from raydw.store import Store
    from raydw.train.weights import register_weights

    monkeypatch.setattr(catalog, "MODEL_CACHE", tmp_path / "cache")
    monkeypatch.delenv(catalog.MODEL_CACHE_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="raydw fetch resnet50.tv_in1k"):
        register_weights(Store(str(tmp_path / "s")), PretrainingSpec(name="ST", weights="resnet50.tv_in1k"))


def test_the_model_cache_env_var_redirects_the_sweep_and_fetch(tmp_path, r18, entry, monkeypatch):
    """RAYDW_MODEL_CACHE: where a sweep reads registry weights and where `raydw fetch` writes them (the test inputs
    of the paper's preflight live there), read at each call, so one shell can point at another folder."""
    from raydw.models.catalog import local_weights_path

    monkeypatch.setenv(catalog.MODEL_CACHE_ENV, str(tmp_path / "env-cache"))
    assert local_weights_path("resnet50.tv_in1k") == tmp_path / "env-cache" / "resnet50.tv_in1k.pt"
    assert f"raydw convert FILE {tmp_path / 'env-cache'}/resnet50.fast_linf4_in1k.pt" in catalog.fetch_command("resnet50.fast_linf4_in1k")
    torch.save(r18, tmp_path / "plain.pth")
    entry((tmp_path / "plain.pth").as_uri())
    assert cli(["fetch", "resnet18.test_in1k"]) == 0
    assert same(torch.load(tmp_path / "env-cache" / "resnet18.test_in1k.pt", weights_only=True), r18)
    monkeypatch.delenv(catalog.MODEL_CACHE_ENV)
    assert local_weights_path("resnet50.tv_in1k") == catalog.MODEL_CACHE / "resnet50.tv_in1k.pt"
