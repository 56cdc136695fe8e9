"""`raydw bench`: the GPU profile runs end to end on CPU, its JSON is complete, and the reference-style
PGD (parameter gradients computed, advertorch's loop) finds the same robust accuracy as raydw's."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydw import attacks
from raydw import bench
from raydw.bench import KINDS, reference_pgd
from raydw.cli import main


@pytest.fixture
def one_thread():
    """One torch thread, restored after: on a shared 2-core machine two spinning OpenMP threads can run a
    step 10x slower, and the setting is process-wide."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gpu_profile_smoke_on_cpu(tmp_path, capsys, monkeypatch, one_thread):
    """The GPU profile (224-px paper protocol, batch 128 by default) end to end on CPU, made small.

    Reduced to seconds on 2 cores: batch 1, 2 timed steps, 1 warm-up, 1 thread, and resnet_tiny in place of
    ResNet-50 (the same code paths, 224-px paper protocol; ResNet-50 took 83 s here, ResNet-18 32 s, resnet_tiny 6 s:
    the fast lane `pytest -m "not ray"` must stay within 2 minutes).
    """
    monkeypatch.setitem(bench.PROFILES, "gpu", dataclasses.replace(bench.PROFILES["gpu"], arch="resnet_tiny"))
    out = tmp_path / "bench.json"
    rc = main(["bench", "--profile", "gpu", "--steps", "2", "--batch", "1", "--warmup", "1", "--threads", "1",
               "--device", "cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "(a) ref" in printed and "(b) raydw" in printed and "synthetic" in printed
    res = json.loads(out.read_text())
    assert res["settings"]["arch"] == "resnet_tiny" and res["settings"]["protocol"] == "paper"
    assert res["settings"]["batch"] == 1 and res["settings"]["steps"] == 2
    rows = {(r["kind"], r["recipe"]): r for r in res["rows"]}
    assert set(rows) == {(k, rec) for k in KINDS for rec in ("reference", "raydw")}
    for r in res["rows"]:  # the augmentation rows time at least 8 batches (past the prefetched ones)
        assert r["images"] == (8 if r["kind"] == "augment_224" else 2)
        assert r["images_per_s"] > 0 and r["peak_mem_mib"] > 0
    for k in KINDS:
        expect = rows[k, "raydw"]["images_per_s"] / rows[k, "reference"]["images_per_s"]
        assert res["ratio_raydw_over_reference"][k] == pytest.approx(expect, rel=1e-2)
    # FLOPs: the same model, so equal for training steps (the reference's training attack runs under
    # ctx_noparamgrad); its evaluation attack also computes parameter gradients: 62 vs 42 passes' worth.
    gf = {key: r["gflop_per_image"] for key, r in rows.items()}
    assert gf["standard", "raydw"] == pytest.approx(gf["standard", "reference"], rel=1e-3)
    assert gf["pgd10_train", "raydw"] == pytest.approx(gf["pgd10_train", "reference"], rel=1e-3)
    assert gf["pgd20_eval", "raydw"] / gf["pgd20_eval", "reference"] == pytest.approx(42 / 62, rel=0.03)
    assert gf["augment_224", "raydw"] is None and res["device"].startswith("CPU")


def _digits(seed: int = 0):
    """scikit-learn's 1,797 real 8x8 digits in [0,1], shuffled with a fixed seed (they come sorted)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(seed).permutation(len(d.target))
    x = torch.tensor(d.images[idx] / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target[idx])


def _trained_tiny(x, y):
    from raydw.models.build import Normalized, build_net

    torch.manual_seed(0)
    model = Normalized(build_net("resnet_tiny", 10, in_chans=1), (0.3,), (0.4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(6):
        for i in range(0, len(y), 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_reference_pgd_matches_raydw_pgd(one_thread):
    """Same trained model, same seeded random start: input-grad-only PGD and advertorch-style PGD agree."""
    x, y = _digits()
    model = _trained_tiny(x[:1500], y[:1500])
    xt, yt = x[1500:], y[1500:]
    eps, step, steps = 0.1, 0.025, 10
    with torch.no_grad():
        sa = (model(xt).argmax(1) == yt).float().mean().item()
    ours = attacks.pgd(model, xt, yt, eps, step, steps, generator=torch.Generator().manual_seed(7))
    ref = reference_pgd(model, xt, yt, eps, step, steps, generator=torch.Generator().manual_seed(7))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())  # advertorch's cost
    with torch.no_grad():
        ra_ours = (model(ours).argmax(1) == yt).float().mean().item()
        ra_ref = (model(ref).argmax(1) == yt).float().mean().item()
    assert sa > 0.8, f"the small model did not train (SA {sa:.3f})"
    assert ra_ours < sa - 0.05, "the attack should bite at eps 0.1"
    assert abs(ra_ours - ra_ref) <= 0.01, (ra_ours, ra_ref)
    assert (ours - xt).abs().max() <= eps + 1e-6 and (ref - xt).abs().max() <= eps + 1e-6
