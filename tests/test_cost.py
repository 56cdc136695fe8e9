"""The dry run's cost plan: fine-tuning per (regime, fraction) as before, plus the IMP and pre-training jobs on the
same FLOP basis, the whole sweep's total and which part dominates (no Ray; the plan is torch-free)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from raydw.planning.dryrun import dry_run
from raydw.spec import load_spec

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
H100_S = 790e12 * 0.35  # FLOP/s the plan assumes: bf16 peak x utilisation


def hours(text: str, label: str) -> float:
    m = re.search(rf"^  {re.escape(label)}: .*: ([0-9.e+-]+) H100-h$", text, re.M)
    assert m, f"no line for {label!r} in\n{text}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory) -> str:
    return dry_run(load_spec(SWEEPS / "paper.yaml"), str(tmp_path_factory.mktemp("store")))


def test_the_paper_plan_keeps_its_fine_tuning_lines(paper_plan):
    # The figures docs/performance.md quotes for the paper schedule.
    assert "cost plan (468 cells to run): ~188 H100-hours of fine-tuning and evaluation" in paper_plan
    assert "pre-training and IMP below" in paper_plan
    for line in ("adversarial f=0.01: 15.7 H100-h", "adversarial f=0.1: 25.3 H100-h", "adversarial f=1: 121 H100-h",
                 "standard f=1: 25.4 H100-h"):
        assert f"\n  {line}\n" in paper_plan


def test_the_paper_plan_prices_imp_per_pretraining_from_its_protocol(paper_plan):
    # By hand, IMP ST (standard re-training): rounds 1..12, round 1 is one-shot pruning and round 12 is never trained,
    # so 11 trained rounds x 30 epochs = 330 ImageNet epochs, each 1,281,167 x 3 (fwd+bwd) + 50,000 (clean val)
    # forward-equivalents, + 3 x 50,000 (test at the selected epochs) = 1,285,005,330 images x 8.174 GFLOP
    # = 1.0504e19 FLOP; / (790e12 x 0.35 FLOP/s) = 37,987 s = 10.55 H100-h.
    st = 1_285_005_330 * 8.174e9 / H100_S / 3600
    assert st == pytest.approx(10.55, abs=0.01)
    assert hours(paper_plan, "IMP ST") == pytest.approx(st, rel=0.01)
    assert "IMP ST: standard (clean) on imagenet, 11 trained round(s) x 30 epochs x 1,281,167 images, resnet50 at 224 px" in paper_plan
    # FAT and AT re-train on PGD-3 examples (per_pretraining: adversarial): 2*3 + 3 = 9 forward-equivalents per image.
    fat = (330 * (1_281_167 * 9 + 50_000) + 150_000) * 8.174e9 / H100_S / 3600
    assert hours(paper_plan, "IMP FAT") == pytest.approx(fat, rel=0.01) and fat == pytest.approx(31.38, abs=0.01)
    assert hours(paper_plan, "IMP AT") == hours(paper_plan, "IMP FAT")
    assert "pre-training ST, FAT, AT: weights file(s), nothing to train" in paper_plan


def test_the_paper_plan_totals_the_parts_and_names_the_largest(paper_plan):
    m = re.search(r"whole sweep: ~([0-9.]+) H100-hours: fine-tuning and evaluation ([0-9.]+) \(\d+%\), "
                  r"IMP ([0-9.]+) \(\d+%\), pre-training 0 \(0%\)", paper_plan)
    assert m, paper_plan
    total, ft, imp = map(float, m.groups())
    assert ft == 188 and imp == pytest.approx(10.55 + 2 * 31.38, abs=0.2) and total == pytest.approx(ft + imp, abs=1)
    assert "fine-tuning and evaluation dominates (72% of the FLOPs)" in paper_plan


def test_recipes_are_priced_and_stored_imp_rounds_are_not_trained_again(tmp_path):
    from raydw.cells import pretrained_id
    from raydw.models.build import build_net
    from raydw.pruning.magnitude import prune_remaining
    from raydw.pruning.mask import Mask
    from raydw.store import Store
    from raydw.tickets.make import mask_row
    from raydw.tickets.registry import get as method

    spec = load_spec(SWEEPS / "demo-tickets.yaml")  # IMP rounds [3, 7] on mnist5k, 1 epoch per round
    before = dry_run(spec, str(tmp_path / "store"))
    # By hand, the AT recipe (PGD-3, 3 epochs on 4,000 mnist5k images, val 500, test 500): 3 x (4,000 x 9 + 500)
    # + 500 x 4 PGD-10 tests x 22 = 153,500 images x 0.005104 GFLOP = 783.5 GFLOP -> 7.87e-07 H100-h.
    assert hours(before, "pre-training AT") == pytest.approx(153_500 * 0.005104e9 / H100_S / 3600, rel=0.01)
    assert "IMP ST: standard (clean) on mnist5k, 6 trained round(s) x 1 epochs" in before
    # Store real IMP masks of rounds 1-3 for ST (magnitude pruning of a resnet_tiny): its job resumes after round 3.
    store = Store(str(tmp_path / "store"))
    p, t = spec.pretrainings[0], spec.tickets[1]
    net, mask = build_net("resnet_tiny", 10, 1), None
    for k in (1, 2, 3):
        mask = prune_remaining(net, mask or Mask.ones(net, t.prunable), t.rate)
        store.write_row("masks", mask_row(mask, p.name, pretrained_id(p), "imp", method("imp").params(t, p.name), k, 1 - 0.8 ** k))
    after = dry_run(spec, str(tmp_path / "store"))
    assert "IMP ST: standard (clean) on mnist5k, 4 trained round(s) x 1 epochs" in after
    assert hours(after, "IMP ST") == pytest.approx(hours(before, "IMP ST") * 4 / 6, rel=0.02)
    assert "IMP FAT: standard (clean) on mnist5k, 6 trained round(s)" in after  # another pre-training's masks
