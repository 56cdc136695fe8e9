"""raydw sweep --preflight: every path of a sweep run for a few steps on Ray Tune + Ray Train in a scratch store.

The paper test runs the unchanged sweeps/paper.yaml (224-px ResNet-50, its PGD settings, the published checkpoint
layouts converted as a user converts them, IMP on a 1000-class ImageFolder) on inputs the tests write in the real
formats (conftest paper_inputs); --cover keeps it to the paths that take every value of every axis."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from raydw.findings import results
from raydw.cli import main
from raydw.models.catalog import MODEL_CACHE_ENV
from raydw.planning.plan import plan
from raydw.run.preflight import cover, fitted, paths, probe_for, scratch_uri
from raydw.train.probe import Probe
from raydw.spec import ResourceSpec, load_spec, parse_spec

PAPER = Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"


# -- the plan of a preflight (Ray-free) --------------------------------------------------------------------------------
def test_the_paper_grid_has_36_cell_paths_and_3_imp_jobs_and_cover_takes_every_value():
    spec = load_spec(PAPER)
    ps = paths(spec, plan(spec).cells)
    cells = [p for p in ps if p.kind == "cell"]
    assert len(cells) == 3 * 3 * 2 * 2 and sum(p.kind == "imp" for p in ps) == 3 and len(ps) == 39
    assert len({p.path_id for p in ps}) == 39
    assert all(p.cell.ticket_round == 1 for p in cells if p.cell.ticket_method == "imp")  # the lowest IMP round stands for it
    chosen = cover(ps)
    picked = [p for p in chosen if p.kind == "cell"]
    assert {a for p in picked for a in p.axes} == {a for p in cells for a in p.axes}
    assert len(picked) == 3 and sum(p.kind == "imp" for p in chosen) == 3


def test_the_scratch_store_is_never_the_sweeps_and_resources_fit_a_cpu_machine():
    for uri in ("/data/results/paper", "results/paper/", "s3://b/res?endpoint_override=h:1&scheme=http"):
        s = scratch_uri(uri)
        assert s != uri and s.startswith(uri.rstrip("/").split("?")[0] + "-preflight/")
    assert scratch_uri("s3://b/res?scheme=http").endswith("?scheme=http")
    gpu = ResourceSpec(workers_per_cell=8, gpus_per_worker=1, cpus_per_worker=12)
    on_cpu = fitted(gpu, {"CPU": 2.0}, on_cluster=False)
    assert (on_cpu.workers_per_cell, on_cpu.gpus_per_worker, on_cpu.cpus_per_worker, on_cpu.max_failures) == (1, 0, 1, 0)
    on_gpu = fitted(gpu, {"CPU": 16.0, "GPU": 1.0}, on_cluster=False)
    assert (on_gpu.workers_per_cell, on_gpu.gpus_per_worker) == (1, 1)
    assert fitted(gpu, {"CPU": 2.0}, on_cluster=True).workers_per_cell == 8  # a cluster's autoscaler adds the nodes


def test_a_job_fitted_onto_fewer_workers_keeps_each_workers_batch():
    assert probe_for(Probe(2, None), 2048, asked=8, workers=1).batch == 256  # the paper's IMP on one GPU
    assert probe_for(Probe(2, None), 128, asked=1, workers=1).batch is None  # the path's own batch
    assert probe_for(Probe(2, 4), 2048, asked=8, workers=1).batch == 4  # --batch as given


def test_probe_flags_without_preflight_are_refused(capsys):
    assert main(["sweep", str(PAPER), "--steps", "3"]) == 2
    assert "--steps only go with --preflight" in capsys.readouterr().err


def test_a_scratch_store_inside_the_sweeps_or_not_empty_is_refused_before_anything_runs(tmp_path, tiny_spec_text, capsys):
    (tmp_path / "spec.yaml").write_text(tiny_spec_text)
    store = tmp_path / "store"
    base = ["sweep", str(tmp_path / "spec.yaml"), "--storage", str(store), "--preflight", "--scratch"]
    assert main([*base, str(store / "probe")]) == 2
    assert "inside) the sweep's store" in capsys.readouterr().err and not store.exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "preflight").mkdir()
    assert main([*base, str(tmp_path / "old")]) == 2
    assert "is not empty" in capsys.readouterr().err and not store.exists()


def test_the_inputs_writer_passes_its_sizes_by_name(tmp_path, monkeypatch):
    """`--train-jpegs 3` once reached Sizes as its train_images (positional), and the writer failed on 3 CIFAR images."""
    from raydw.testinputs import Sizes
    from raydw.testinputs.__main__ import main as write_main

    got = []
    monkeypatch.setattr("raydw.testinputs.write_inputs", lambda spec, out, sizes, log=print: got.append(sizes))
    assert write_main([str(tmp_path / "in"), "--train-jpegs", "3", "--val-jpegs", "2", "--test-images", "7"]) == 0
    assert got == [Sizes(test_images=7, train_jpegs=3, val_jpegs=2)]


# -- on Ray ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_the_paper_preflight_runs_every_branch_at_224_px(ray_session, paper_inputs, monkeypatch, capsys):
    monkeypatch.setenv(MODEL_CACHE_ENV, str(paper_inputs / "models"))
    monkeypatch.chdir(paper_inputs)  # the spec's relative ./data roots, as a user runs it from their project folder
    scratch = paper_inputs / "scratch"
    code = main(["sweep", str(PAPER), "--preflight", "--cover", "--steps", "1", "--batch", "1", "--scratch", str(scratch)])
    out = capsys.readouterr().out
    print(out)  # the whole report, with -s: the figures quoted in docs/sweeps.md
    assert code == 0, out[-4000:]
    assert "paths (6 of 6 ok):" in out
    assert "Last result" not in out  # each trial hands Tune one result: no "Trial ... completed" line of Tune's
    rows = results.load(str(scratch), "preflight")
    assert len(rows) == 6 and (rows.status == "ok").all() and rows.restored.all()
    assert (rows.s_per_step > 0).all() and (rows.s_per_eval_image > 0).all() and (rows.peak_bytes > 2**28).all()
    assert sorted(rows[rows.kind == "imp"].pretraining) == ["AT", "FAT", "ST"]
    # The cells ran the paper's path: ResNet-50, 224-px protocol, from each pre-training's converted weights.
    trials = results.load(str(scratch))
    assert len(trials) == 3 and set(trials.arch) == {"resnet50"} and set(trials.protocol) == {"paper"}
    assert set(trials.pretraining) == {"ST", "FAT", "AT"} and set(trials.regime) == {"standard", "adversarial"}
    masks = results.load(str(scratch), "masks")
    assert sorted(masks.groupby("pretrained_id")["round"].max()) == [2, 2, 2]  # IMP pruned, re-trained, pruned again
    assert not (paper_inputs / "results").exists()  # the sweep's own store is not touched
    for line in ("adversarial f=0.01:", "standard f=1:", "IMP FAT (adversarial on imagenet):", "whole sweep:"):
        assert line in out.split("cost of the sweep as measured")[1], out[-3000:]


def _tiny_weights(path: Path) -> None:
    from raydw.models.build import build_net

    torch.save(build_net("resnet_tiny", 1000, 3).state_dict(), path)  # a weights file is an ImageNet model


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_failing_path_fails_alone_named_and_the_exit_code_says_so(ray_session, paper_inputs, tmp_path, capsys):
    _tiny_weights(tmp_path / "good.pt")
    _tiny_weights(tmp_path / "bad.pt")
    (tmp_path / "bad.pt").write_bytes((tmp_path / "bad.pt").read_bytes()[:1000])  # a download cut short
    spec = {
        "name": "pf", "storage": str(tmp_path / "store"),
        "pretrainings": [{"name": "good", "weights": str(tmp_path / "good.pt"), "arch": "resnet_tiny"},
                         {"name": "bad", "weights": str(tmp_path / "bad.pt"), "arch": "resnet_tiny"}],
        "tickets": [{"method": "random", "sparsities": [0.5], "include_dense": False}],  # 4 paths, 2 Train runs
        "data": {"datasets": ["cifar10"], "root": str(paper_inputs / "data"), "protocol": "native"},
        "regimes": {"standard": {"kind": "standard", "epochs": 1, "batch_size": 32, "optimizer": {"lr": 0.01}},
                    "wild": {"kind": "standard", "epochs": 1, "batch_size": 32, "optimizer": {"lr": 1.0e+30}}},
        "eval": {"attack": {"eps": 0.1, "step_size": 0.05, "steps": 2}},
        "resources": {"max_concurrent_cells": 2},
    }
    parse_spec(spec)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code = main(["sweep", str(tmp_path / "spec.yaml"), "--preflight", "--steps", "2", "--scratch", str(tmp_path / "scratch")])
    out = capsys.readouterr().out
    assert code == 1, out[-3000:]
    lines = out.split("paths (")[1].splitlines()
    assert lines[0] == "1 of 4 ok):", out[-3000:]
    ok = [ln for ln in lines if ln.startswith("  ok ")]
    assert [ln.split(":")[0].split()[-1] for ln in ok] == ["standard"]  # good x standard x random
    bad = [ln for ln in lines if ln.startswith("  FAILED  bad ")]
    assert len(bad) == 2 and all("bad.pt" in ln or "weights could not be registered" in ln for ln in bad), out[-3000:]
    wild = [ln for ln in lines if ln.startswith("  FAILED  good ")]
    assert len(wild) == 1 and all("wild" in ln and "training loss is" in ln for ln in wild), out[-3000:]
    assert not (tmp_path / "store").exists()
    assert "whole sweep:" in out  # priced by what ran (resnet_tiny at 32 px has no FLOP count)
