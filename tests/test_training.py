"""Real training at toy scale: the mask is held at zero, PGD stays in its ball and hurts a trained model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raydw import attacks
from raydw.data.device import Split, Transform
from raydw.models.build import Normalized, build_net
from raydw.pruning.magnitude import one_shot
from raydw.spec import AttackSpec, OptimizerSpec, RegimeSpec
from raydw.train.loop import Data, Diverged, evaluate, fit
from raydw.train.setup import load_data

EVAL = AttackSpec(eps=0.1, step_size=0.025, steps=10)


@pytest.fixture(scope="module")
def mnist():
    torch.set_num_threads(2)
    return load_data("mnist5k", None, "native", np.arange(1500), "cpu")


def _regime(kind="standard", epochs=2, lr=0.05, **kw):
    attack = AttackSpec(eps=0.1, step_size=0.04, steps=2) if kind == "adversarial" else None
    return RegimeSpec(kind=kind, epochs=epochs, batch_size=64, attack=attack,
                      optimizer=OptimizerSpec(lr=lr, schedule="constant"), **kw)


@pytest.fixture(scope="module")
def trained(mnist):
    torch.manual_seed(0)
    model = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    fit(model, None, mnist, _regime(epochs=3, validate_ra=False), EVAL, seed=0)
    return model


def test_masked_weights_are_exactly_zero_after_real_training(mnist):
    torch.manual_seed(0)
    model = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    mask = one_shot(model.net, 0.7)
    bound = mask.bind(model.net)
    seen = []

    def on_epoch(record, state_fn):  # check after every epoch, not only at the end
        params = dict(model.net.named_parameters())
        seen.append(sum(int((params[n].detach()[~mask.tensors[n]] != 0).sum()) for n in mask.names))

    out = fit(model, bound, mnist, _regime("adversarial", epochs=2), EVAL, seed=0, on_epoch=on_epoch)
    assert seen == [0, 0]
    kept = dict(model.net.named_parameters())
    assert all(bool((kept[n].detach()[mask.tensors[n]] != 0).any()) for n in mask.names)  # the rest trained
    assert out.history[-1]["train_loss"] < out.history[0]["train_loss"] * 1.5


def test_pgd_stays_in_the_eps_ball_and_in_pixel_range(trained, mnist):
    x = Transform("mnist5k", "native", 28).eval(mnist.test.x[:64])
    xa = attacks.pgd(trained, x, mnist.test.y[:64], eps=0.1, step_size=0.05, steps=5)
    assert float((xa - x).abs().max()) <= 0.1 + 1e-6
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float((xa - x).abs().max()) > 0.05  # it moved


def test_pgd_lowers_the_accuracy_of_a_trained_model(trained, mnist):
    sa, ra = evaluate(trained, mnist.test, mnist.transform, EVAL)
    assert sa > 0.7
    assert ra < sa - 0.2


def test_fgsm_with_random_start_stays_in_the_ball(trained, mnist):
    x = Transform("mnist5k", "native", 28).eval(mnist.test.x[:32])
    xa = attacks.fgsm_rs(trained, x, mnist.test.y[:32], eps=0.1, step_size=0.125)
    assert float((xa - x).abs().max()) <= 0.1 + 1e-6


def test_attack_leaves_model_mode_and_parameter_grads_untouched(trained, mnist):
    trained.eval()
    trained.zero_grad(set_to_none=True)
    x = Transform("mnist5k", "native", 28).eval(mnist.test.x[:16])
    attacks.pgd(trained, x, mnist.test.y[:16], 0.1, 0.05, 2, train_mode=True)
    assert not trained.training
    assert all(p.grad is None for p in trained.parameters())


def test_diverging_loss_raises_with_the_epoch(mnist):
    torch.manual_seed(0)
    model = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    with pytest.raises(Diverged, match="epoch 0"):
        fit(model, None, mnist, _regime(lr=1e12, epochs=1), EVAL, seed=0)


def test_resume_from_a_state_continues_at_the_next_epoch(mnist):
    torch.manual_seed(0)
    a = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    b = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    b.load_state_dict(a.state_dict())
    states = []
    full = fit(a, None, mnist, _regime(epochs=2), EVAL, seed=3)
    fit(b, None, mnist, _regime(epochs=1), EVAL, seed=3, on_epoch=lambda r, s: states.append(s()))
    c = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    resumed = fit(c, None, mnist, _regime(epochs=2), EVAL, seed=3, resume=states[-1])
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-4)


def test_fast_schedule_validates_ra_only_every_k_epochs_on_a_subset(mnist):
    torch.manual_seed(0)
    model = Normalized(build_net("resnet_tiny", 10, 1), (0.131,), (0.308,))
    cheap = AttackSpec(eps=0.1, step_size=0.05, steps=5)
    out = fit(model, None, mnist, _regime(epochs=4), EVAL, seed=0, val_schedule=(3, cheap, 100))
    ra = [h["val_ra"] for h in out.history]
    assert not np.isnan(ra[0]) and np.isnan(ra[1]) and np.isnan(ra[2]) and not np.isnan(ra[3])  # 0, then last
    assert all(not np.isnan(h["val_sa"]) for h in out.history)  # SA every epoch
    assert out.best["ra"]["epoch"] in (0, 3)
    assert not np.isnan(out.test["ra_at_ra_best"])  # the test set is still attacked with the full eval attack
