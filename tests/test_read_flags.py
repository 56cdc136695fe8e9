"""The read commands (`raydw verdicts`, `raydw report`) refuse a bad verdict flag or --spec by the spec's own bounds,
naming the value given, before anything is written (adversarial pass 2). Ray-free: an adaptive store written by
hand as tests/test_seeds_wiring.py writes one.

Seen before: `verdicts --level 2` on an adaptive spec said "level must be in (0.5, 1), got 1.333" (the level split
over 3 looks, not the user's), `--level 0.5`, `--seed -1` and `--tol -1` ran; `report` made its --out folder and
then failed on a bad flag or a --spec that is invalid or plans none of the store's cells."""
from __future__ import annotations

import os

import pytest
import yaml

from raydw.cli import main
from raydw.store import Store
from test_seeds_wiring import _spec, _sweep


# Every test here reads `adaptive`: one pytest-xdist worker takes the module (`--dist loadgroup`), so it is made once.
pytestmark = pytest.mark.xdist_group("read_flags")


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    spec = _spec(str(root / "S"))
    (root / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True)))
    _sweep(spec, Store(str(root / "S")))
    strict = spec.model_dump(mode="json", exclude_defaults=True)
    strict["verdicts"] = {"rule": "strict"}
    (root / "strict.yaml").write_text(yaml.safe_dump(strict))
    return root


@pytest.mark.parametrize("flags,says", [
    (["--level", "2"], "--level 2.0: Input should be less than 1"),
    (["--level", "0.5"], "--level 0.5: Input should be greater than 0.5"),
    (["--seed", "-1"], "--seed -1: Value error, a seed is a whole number in [0, 2**32)"),
    (["--tol", "-1"], "--tol -1.0: Input should be greater than or equal to 0"),
])
def test_a_verdict_flag_out_of_the_specs_bounds_is_refused_naming_its_value(adaptive, capsys, flags, says):
    assert main(["verdicts", str(adaptive / "S"), "--spec", str(adaptive / "spec.yaml"), *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "1.333" not in err, err


@pytest.mark.parametrize("flags", [["--level", "2"], ["--spec", "STRICT"], ["--spec", "paper-adaptive"],
                                   ["--watch", "--spec", "STRICT"]])
def test_report_writes_nothing_when_a_flag_or_its_spec_is_wrong(adaptive, tmp_path, capsys, flags):
    flags = [str(adaptive / "strict.yaml") if f == "STRICT" else f for f in flags]
    assert main(["report", str(adaptive / "S"), "--out", str(tmp_path / "rep"), *flags]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert os.listdir(tmp_path) == []
