"""eval.final_attack = autoattack (raydw.final_attacks): stronger than PGD-20 on a trained model, reproducible,
side-effect free. A small MLP trained on the real sklearn digits (pooled to 7x7) for 300 steps; no Ray."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from raydw import attacks

from raydw import final_attacks
from raydw.data.catalog import get as dataset_info
from raydw.data.sources import read_files
from raydw.models.build import Normalized

pytest.importorskip("torchattacks", reason="the autoattack extra: pip install 'raydw[autoattack]'")

# One worker takes the whole module (pytest-xdist, `--dist loadgroup`): the module fixture's AutoAttack run
# then runs once, not once per worker.
# The attack is bound by its step count (~7,000 model calls on the survivors), not by the batch: fewer images would
# not pay, a cheaper call does. On 7x7 inputs an MLP's call costs a fraction of a conv net's on 28x28 (one run: 4.3
# vs 11.9 s, one thread, idle 2-core machine); the wrapper, not the model, is the subject here.
pytestmark = pytest.mark.xdist_group("autoattack")

EPS = 0.07  # [0,1] pixels: PGD-20 leaves about a quarter robust here, and AutoAttack breaks a few of those
N_TEST = 120


@pytest.fixture(scope="module")
def trained():
    """(model, x, y, clean bits, PGD-20 bits, AutoAttack bits, {attack: seconds}) on the first test images."""
    threads = torch.get_num_threads()
    # One thread: the attacks run thousands of tiny steps, where thread hand-offs on shared cores cost more
    # than they save (and a fixed count keeps the trained weights the same from run to run).
    torch.set_num_threads(1)
    try:
        raw = read_files("digits")
        info = dataset_info("digits")

        def pooled(a):  # the 28x28 digits are upsampled 8x8 ones: 7x7 keeps nearly all of it, and steps get cheap
            return F.avg_pool2d(torch.from_numpy(a).float() / 255, 4)

        x_tr, y_tr = pooled(raw.train_x), torch.from_numpy(raw.train_y)
        x, y = pooled(raw.test_x[:N_TEST]), torch.from_numpy(raw.test_y[:N_TEST])
        torch.manual_seed(0)
        # BatchNorm makes the eval-mode requirement observable.
        net = nn.Sequential(nn.Flatten(), nn.Linear(7 * 7, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
        model = Normalized(net, info.mean, info.std)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            i = torch.randint(0, len(y_tr), (64,), generator=g)
            loss = F.cross_entropy(model(x_tr[i]), y_tr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        seconds = {}
        t = time.perf_counter()
        x_pgd = attacks.pgd(model, x, y, EPS, EPS / 4, 20, generator=torch.Generator().manual_seed(0))
        seconds["pgd20"] = time.perf_counter() - t
        with torch.no_grad():
            pgd = model(x_pgd).argmax(1) == y
        t = time.perf_counter()
        aa = final_attacks.robust_correct("autoattack", model, x, y, EPS, n_classes=10, seed=0)
        seconds["autoattack"] = time.perf_counter() - t
        print(f"\n{N_TEST} images, eps {EPS}: SA {clean.float().mean():.3f}  RA PGD-20 {pgd.float().mean():.3f} "
              f"({seconds['pgd20']:.2f} s)  RA AutoAttack {aa.float().mean():.3f} ({seconds['autoattack']:.2f} s)")
        yield model, x, y, clean, pgd, aa, seconds
    finally:
        torch.set_num_threads(threads)


def test_autoattack_is_at_least_as_strong_as_pgd20(trained):
    model, x, y, clean, pgd, aa, _ = trained
    assert aa.dtype == torch.bool and aa.shape == y.shape
    sa, ra_pgd, ra_aa = (b.float().mean().item() for b in (clean, pgd, aa))
    # The comparison means something only if PGD-20 leaves a real share robust and breaks a real share.
    assert sa >= 0.9
    assert 0.15 <= ra_pgd <= sa - 0.15
    assert ra_aa <= ra_pgd
    assert not (aa & ~clean).any()  # robust implies clean-correct


def test_same_seed_same_bits_and_no_side_effects(trained):
    model, x, y, _, _, aa, _ = trained
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()  # the caller's mode: the attack must run in eval mode and give this back
        bn = model.net[2]
        stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
        rng = torch.get_rng_state()
        again = final_attacks.robust_correct("autoattack", model, x, y, EPS, n_classes=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(again, aa)  # same seed, same batches: same bits (and eval mode, or BN would differ)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, (bn.running_mean, bn.running_var, bn.num_batches_tracked)))
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # FAB's backward left nothing
    assert torch.equal(torch.get_rng_state(), rng)  # the components re-seed torch; the caller's stream is kept
    model.eval()


def test_inputs_are_checked_before_attacking(trained):
    model, x, y, *_ = trained
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        final_attacks.robust_correct("autoattack", model, (x - 0.3) / 0.3, y, EPS, n_classes=10, seed=0)
    with pytest.raises(ValueError, match="at least 4 classes"):
        final_attacks.robust_correct("autoattack", model, x[:4], y[:4], EPS, n_classes=3, seed=0)
    # Modes come back module by module, also when the attack raises: a frozen BN in a training model stays frozen.
    model.train()
    model.net[2].eval()
    with pytest.raises(ValueError, match="10 outputs"):
        final_attacks.robust_correct("autoattack", model, x[:4], y[:4], EPS, n_classes=12, seed=0)
    assert model.training and not model.net[2].training and all(p.requires_grad for p in model.parameters())
    assert final_attacks.robust_correct("autoattack", model, x[:0], y[:0], EPS, n_classes=10, seed=0).shape == (0,)
    assert model.training and not model.net[2].training
    assert final_attacks.bound("autoattack", model, EPS, 10, 0)(x[:0], y[:0]).shape == (0,)  # the loop's form
    model.eval()


def test_registry_names_and_availability(monkeypatch):
    with pytest.raises(KeyError, match=r"unknown final attack 'pgd100'.*\['autoattack'\]"):
        final_attacks.get("pgd100")
    with pytest.raises(KeyError, match="autoattack"):
        final_attacks.available("pgd100")
    assert final_attacks.available("autoattack") is None

    real = importlib.metadata.version

    def missing(name):
        if name == "torchattacks":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    msg = final_attacks.available("autoattack")
    assert msg is not None and "pip install 'raydw[autoattack]'" in msg
    with pytest.raises(ImportError, match=r"pip install 'raydw\[autoattack\]'"):
        final_attacks.robust_correct("autoattack", nn.Linear(1, 1), torch.zeros(1, 1), torch.zeros(1), EPS, 10, 0)
    with pytest.raises(ImportError, match=r"pip install 'raydw\[autoattack\]'"):  # at the cell's start
        final_attacks.bound("autoattack", nn.Linear(1, 1), EPS, 10, 0)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.4.9" if name == "torchattacks" else real(name))
    assert "torchattacks>=3.5, found 3.4.9" in final_attacks.available("autoattack")


def test_module_imports_without_torch():
    """The spec check asks `available` before Ray starts; neither torch nor torchattacks may be imported for it."""
    code = ("import sys, raydw.final_attacks as f; assert f.available('autoattack') is None; "
            "print(sorted(m for m in ('torch', 'torchattacks') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
