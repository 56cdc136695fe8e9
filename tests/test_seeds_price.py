"""The dry run prices an adaptive seed design (issue 26, acceptance 4): sweeps/paper-adaptive.yaml against 1 and 3
fixed seeds, with the expected cells from benchmarks/seed_design.py's simulated ratios. Ray- and torch-free."""
from __future__ import annotations

from pathlib import Path

from raydw.planning.dryrun import dry_run
from raydw.planning.plan import Plan
from raydw.planning.seed_price import SIMULATED, price_lines
from raydw.spec import load_spec
from raydw.store import Store

SWEEPS = Path(__file__).resolve().parents[1] / "raydw" / "sweeps"


def test_paper_adaptive_is_priced_against_one_and_three_fixed_seeds(tmp_path):
    spec = load_spec(SWEEPS / "paper-adaptive.yaml")
    text = "\n".join(price_lines(Plan.of(spec, Store(str(tmp_path / "store")))))
    # 36 dense models and 432 tickets: one seed 468 cells, three 1,404; round 1 = 432 tickets x 1 + 36 dense x 3
    assert "fixed 1 seed: 468 cells" in text and "fixed 3 seeds: 1404 cells" in text
    assert "adaptive: at least 540 cells" in text and "at most 1404" in text
    assert f"{SIMULATED[(1, 3, 3)]['CIFAR 10,000 images, seed SD 0.2 pt, margin 1']:.2f} x fixed 1 = ~866 cells" in text
    assert "H100-h" in text


def test_the_dry_run_prints_the_price_and_a_fixed_seed_spec_gets_none(tmp_path):
    said = dry_run(load_spec(SWEEPS / "paper-adaptive.yaml"), str(tmp_path / "a"))
    assert "seed design (fine-tuning only" in said and "expected (simulated, not measured on this grid" in said
    fixed = load_spec(SWEEPS / "paper.yaml")
    assert price_lines(Plan.of(fixed, Store(str(tmp_path / "b")))) == []
    assert "seed design" not in dry_run(fixed, str(tmp_path / "b"))


def test_a_spec_is_priced_by_the_scenarios_at_its_own_margin(tmp_path):
    demo = "\n".join(price_lines(Plan.of(load_spec(SWEEPS / "demo-adaptive.yaml"), Store(str(tmp_path / "d")))))
    assert "the scenarios at margin 3" in demo and "2.79 x fixed 1 = ~50 cells" in demo and "CIFAR" not in demo
    paper = "\n".join(price_lines(Plan.of(load_spec(SWEEPS / "paper-adaptive.yaml"), Store(str(tmp_path / "p")))))
    assert "the scenarios at margin 1" in paper and "demo" not in paper
