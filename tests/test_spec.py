"""The sweep spec: bad files fail before Ray starts, naming the YAML path, what was expected and the choices."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raydw.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]


def _broken(text: str, edit) -> dict:
    d = yaml.safe_load(text)
    edit(d)
    return d


def test_demo_and_paper_specs_parse():
    assert load_spec(REPO / "sweeps" / "demo.yaml").name == "demo"
    assert load_spec(REPO / "sweeps" / "paper.yaml").name == "paper"


def test_eps_written_as_a_fraction_is_read_as_a_float(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["eval"]["attack"].update(eps="8/255"))
    assert parse_spec(d).eval.attack.eps == pytest.approx(8 / 255)


def test_unknown_dataset_names_the_path_and_the_valid_names(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["data"].update(datasets=["cifar11"]))
    with pytest.raises(SpecError) as e:
        parse_spec(d, "x.yaml")
    msg = str(e.value)
    assert "x.yaml" in msg and "data.datasets.0" in msg and "cifar11" in msg and "cifar10" in msg


def test_misspelt_field_is_an_error_not_a_silent_default(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["regimes"]["standard"].update(epoch=3))
    with pytest.raises(SpecError, match=r"regimes\.standard\.epoch: unknown field"):
        parse_spec(d)


def test_adversarial_regime_without_attack_is_refused(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["regimes"]["standard"].update(kind="adversarial"))
    with pytest.raises(SpecError, match="needs an 'attack'"):
        parse_spec(d)


def test_wrong_literal_lists_the_choices(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["tickets"].update(method="lottery"))
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert "tickets.method" in str(e.value) and "'omp'" in str(e.value) and "lottery" in str(e.value)


def test_data_fraction_outside_unit_interval_is_refused(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["regimes"]["standard"].update(data_fractions=[1.5]))
    with pytest.raises(SpecError, match=r"data_fractions must lie in \(0, 1\]"):
        parse_spec(d)


def test_pretraining_needs_exactly_one_source(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["pretrainings"][0].update(weights="resnet50.tv_in1k"))
    with pytest.raises(SpecError, match=r"pretrainings\.0: give exactly one of 'weights'"):
        parse_spec(d)


def test_per_dataset_override_for_an_unlisted_dataset_is_refused(tiny_spec_text):
    d = _broken(tiny_spec_text, lambda d: d["regimes"]["standard"].update(per_dataset={"svhn": {"epochs": 3}}))
    with pytest.raises(SpecError, match="per_dataset names 'svhn'"):
        parse_spec(d)


def test_invalid_yaml_and_missing_file_are_spec_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(SpecError, match="no such sweep file"):
        load_spec(tmp_path / "nope.yaml")


def test_cli_exits_2_and_writes_nothing_on_a_bad_spec(tmp_path, tiny_spec_text):
    bad = _broken(tiny_spec_text, lambda d: d["regimes"]["standard"]["optimizer"].update(lr=-1))
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(bad))
    store = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "raydw.cli", "sweep", str(spec), "--storage", str(store)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "regimes.standard.optimizer.lr" in p.stderr
    assert not store.exists()


def test_a_local_sweep_missing_its_data_is_refused_before_anything_runs(tmp_path, tiny_spec_text, capsys):
    from raydw.cli import main

    d = yaml.safe_load(tiny_spec_text)
    d["data"]["datasets"] = ["cifar10"]
    d["pretrainings"] = [{"name": "X", "weights": str(tmp_path / "gone.pt"), "arch": "resnet_tiny"}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    store = tmp_path / "store"
    assert main(["sweep", str(tmp_path / "s.yaml"), "--storage", str(store), "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "inputs missing on this machine, nothing was run" in err
    assert f"pre-training X: {tmp_path / 'gone.pt'} missing" in err
    assert f"dataset cifar10: {tmp_path / 'data' / 'cifar-10-batches-py' / 'data_batch_1'} and 5 more missing" in err
    assert not store.exists()  # no lock, no Ray, no row


def test_weights_the_store_already_holds_are_not_asked_for_again(tmp_path, tiny_spec_text):
    from raydw.cells import expand, pretrained_id
    from raydw.inputs import missing_inputs
    from raydw.store import Store

    d = yaml.safe_load(tiny_spec_text)
    d["pretrainings"] = [{"name": "X", "weights": str(tmp_path / "gone.pt"), "arch": "resnet_tiny"}]
    d["data"]["datasets"] = ["cifar10"]
    spec = parse_spec(d)
    store = Store(str(tmp_path / "store"))
    miss = missing_inputs(spec, store=store)
    assert [m.split(":")[0] for m in miss] == ["pre-training X", "dataset cifar10"]
    store.write_row("pretrained", {"pretrained_id": pretrained_id(spec.pretrainings[0]), "name": "X"})
    assert [m.split(":")[0] for m in missing_inputs(spec, store=store)] == ["dataset cifar10"]
    for c in expand(spec):  # every cell done (run elsewhere): its data is no longer needed here
        store.write_row("trials", {"cell_id": c.cell_id, "status": "done"})
    assert missing_inputs(spec, store=store) == []


def test_a_failed_cells_error_starts_with_the_exception_raised_in_the_worker():
    from raydw.run.rows import CellResult

    ray_text = ('WorkerGroupError: Training failed due to worker errors:\n[Rank 0 Error Snippet]:\n'
                'Traceback (most recent call last):\n  File "/w/raydw/run/worker.py", line 152, in cell_worker\n'
                '    raise ValueError(f"{a}: b")\nValueError: ST takes 1-channel input but cifar10 has 3\n')
    result = CellResult.failed(ray_text)
    assert result.status == "failed"
    assert result.error.splitlines()[0] == "ValueError: ST takes 1-channel input but cifar10 has 3"
    assert result.error.endswith(ray_text[-200:])  # the whole text follows
    plain = "raydw.train.loop.Diverged: training loss is nan at epoch 0 (lr 1e+12)"
    assert CellResult.failed(plain).error == plain  # a one-line error is not repeated
    # A bare exception name, and a second rank failing because the first did: the first rank's error is the cause.
    two = ('WorkerGroupError: Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most recent '
           'call last):\n  File "x.py", line 1, in f\n    assert x\nAssertionError\n[Rank 1 Error Snippet]:\n'
           'Traceback (most recent call last):\n  File "y.py", line 2, in g\nRuntimeError: NCCL timeout\n')
    assert CellResult.failed(two).error.splitlines()[0] == "AssertionError"


def test_a_downstream_dataset_the_pretrained_model_cannot_take_is_refused(tiny_spec_text):
    d = yaml.safe_load(tiny_spec_text)  # ST is trained on mnist5k: 1-channel digits
    d["data"]["datasets"] = ["digits", "cifar10"]
    with pytest.raises(SpecError, match=r"data.datasets.1: 'cifar10' has 3-channel images, but pretrainings.0 \(ST\) "
                                         r"takes 1-channel input \(it was trained on mnist5k\)"):
        parse_spec(d)
    d["pretrainings"] = [{"name": "TV", "weights": "resnet50.tv_in1k"}]
    with pytest.raises(SpecError, match=r"data.datasets.0: 'digits' has 1-channel images, but pretrainings.0 \(TV\)"):
        parse_spec(d)
