"""The paper's inputs written in the real formats (raydw.testinputs): the unchanged sweeps/paper.yaml, run from
their folder with RAYDW_MODEL_CACHE pointed at their weights, finds every input; what cannot be written is refused
before anything is."""
from __future__ import annotations

from pathlib import Path

import pytest

from raydw.cli import main as cli
from raydw.models.catalog import MODEL_CACHE_ENV, PRETRAINED

PAPER = Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"
# The tests on the written inputs run in the Ray lane, not the fast one: their session fixture (conftest
# paper_inputs: three ResNet-50s published and converted, 600 MB of datasets, 3,000 JPEGs) takes ~17 s on 2 cores
# and is the one the preflight test (which starts Ray) reads, so the suite writes it once. The dry run itself is
# Ray-free and takes 0.1 s.
ON_INPUTS = pytest.mark.ray


@ON_INPUTS
def test_the_paper_dry_run_on_the_written_inputs_says_all_present(paper_inputs, monkeypatch, capsys):
    monkeypatch.setenv(MODEL_CACHE_ENV, str(paper_inputs / "models"))
    monkeypatch.chdir(paper_inputs)
    assert cli(["sweep", str(PAPER), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("inputs: all present"), out[-2000:]
    # What each loader will find: the spec's relative roots under the folder, the registry names in the cache.
    for rel in ("data/cifar-10-batches-py/data_batch_5", "data/cifar-100-python/test", "data/train_32x32.mat",
                "data/imagenet/train/n00000999", "data/imagenet/val/n00000000"):
        assert (paper_inputs / rel).exists(), rel
    assert sorted(p.name for p in (paper_inputs / "models").glob("*.pt")) == [
        "resnet50.fast_linf4_in1k.pt", "resnet50.pgd_linf4_in1k.pt", "resnet50.tv_in1k.pt"]
    monkeypatch.delenv(MODEL_CACHE_ENV)  # without the variable the same spec misses its weights (the test can fail)
    monkeypatch.setattr("raydw.models.catalog.MODEL_CACHE", paper_inputs / "no-cache")
    assert cli(["sweep", str(PAPER), "--dry-run"]) == 0
    assert "pre-training ST: " in capsys.readouterr().out.split("missing inputs:")[1]


@ON_INPUTS
def test_the_written_weights_are_each_entrys_converted_fetch(paper_inputs):
    """Converted from the entry's published layout by `raydw fetch --url file://` (the .json records it), and they
    pass the strict check the sweep makes before Ray starts."""
    import json

    from raydw.models.convert import check_weights

    for name in ("resnet50.tv_in1k", "resnet50.fast_linf4_in1k", "resnet50.pgd_linf4_in1k"):
        rec = json.loads((paper_inputs / "models" / f"{name}.json").read_text())
        assert rec["format"] == PRETRAINED[name].format and rec["url"].startswith("file://"), rec
        check_weights(paper_inputs / "models" / f"{name}.pt", "resnet50", PRETRAINED[name].format)


def test_the_writer_refuses_before_writing(tmp_path, capsys):
    import yaml

    doc = yaml.safe_load(PAPER.read_text())
    doc["tickets"]["imp"]["root"] = str(tmp_path / "abs")  # only relative roots can be recreated under OUT
    (tmp_path / "abs.yaml").write_text(yaml.safe_dump(doc))
    from raydw.testinputs.__main__ import main

    assert main([str(tmp_path / "out"), "--spec", str(tmp_path / "abs.yaml")]) == 2
    assert "tickets.imp.root is " in capsys.readouterr().err and not (tmp_path / "out").exists()
    doc = yaml.safe_load(PAPER.read_text())
    doc["pretrainings"][0] = {"name": "ST", "weights": str(tmp_path / "st.pt"), "arch": "resnet50"}
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(doc))
    assert main([str(tmp_path / "out"), "--spec", str(tmp_path / "local.yaml")]) == 2
    assert f"pretrainings name local weights files ['{tmp_path / 'st.pt'}']; only registry entries" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "out"), "--test-images", "0"])
