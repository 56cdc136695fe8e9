"""Tickets: IMP with rewinding, OMP/random baselines, torch equivalence and reference-checkpoint import.

Real small nets (resnet_tiny, resnet18) and real training through `fit` on a few dozen MNIST digits.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from raydw.data import sources
from raydw.data.device import Split, Transform
from raydw.models.build import Normalized, build_net
from raydw.pruning.imp import imp
from raydw.train.imp_rounds import fit_round, imp_regime, spec_regime
from raydw.pruning.importer import masks_from_state, read_checkpoint_masks
from raydw.pruning.magnitude import imp_kept, imp_sparsity, one_shot, prune_remaining, random_like, random_mask
from raydw.pruning.mask import Mask, prunable_names
from raydw.spec import ImpSpec
from raydw.data.device import Data

RATE = 0.2


# -- fixtures ------------------------------------------------------------------------------------------------
def pretrained(seed: int = 0) -> nn.Module:
    """A resnet_tiny standing in for pre-trained weights: seeded init and non-default BN statistics."""
    torch.manual_seed(seed)
    net = build_net("resnet_tiny", 10, 1)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1000)
    return net


def equal_masks(a: Mask, b: Mask) -> bool:
    return a.names == b.names and all(torch.equal(a.tensors[n], b.tensors[n]) for n in a.names)


def noisy_training(calls: list[int] | None = None, scale: float = 0.05):
    """A stand-in train_round: a seeded perturbation per round with the mask held, recording the rounds."""
    def train_round(net, bound, k):
        if calls is not None:
            calls.append(k)
        g = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)
        bound.apply_()
    return train_round


@pytest.fixture(scope="module")
def digits() -> Data:
    raw = sources.read("mnist5k")
    cpu = torch.device("cpu")
    return Data(train=Split.from_numpy(raw.train_x[:32], raw.train_y[:32], cpu),
                val=Split.from_numpy(raw.train_x[4000:4016], raw.train_y[4000:4016], cpu),
                test=Split.from_numpy(raw.test_x[:16], raw.test_y[:16], cpu),
                transform=Transform("mnist5k", "native", 28), train_images=32)


REGIME = imp_regime(epochs_per_round=1, batch_size=16, lr=0.05)


def real_training(net: nn.Module, digits: Data):
    return fit_round(Normalized(net, (0.1310,), (0.3080,)), digits, REGIME, seed=1)


# The tests reading `imp_run` share one worker (pytest-xdist `--dist loadgroup`): its three IMP rounds of real training
# then run once, not once per worker (4.5 and 4.3 s setups at load ~3-4); the other tests still spread.
IMP_GROUP = pytest.mark.xdist_group("pruning-imp")


@pytest.fixture(scope="module")
def imp_run(digits):
    """Three IMP rounds with real training, recording the net as each round starts and ends."""
    net = pretrained()
    theta = copy.deepcopy(net.state_dict())
    train = real_training(net, digits)
    starts, ends, calls = {}, {}, []

    def recording(n, bound, k):
        calls.append(k)
        starts[k] = copy.deepcopy(n.state_dict())
        train(n, bound, k)
        ends[k] = copy.deepcopy(n.state_dict())

    masks = imp(net, 3, RATE, recording)
    return {"net": net, "theta": theta, "masks": masks, "starts": starts, "ends": ends, "calls": calls}


# -- IMP -----------------------------------------------------------------------------------------------------
def test_imp_round_k_prunes_one_minus_rate_to_the_k_of_the_prunable_weights():
    net = pretrained()
    masks = imp(net, 6, RATE, noisy_training())
    total = Mask.ones(net).numel()
    for k, m in masks.items():
        assert m.kept() == imp_kept(total, RATE, k)
        assert abs(m.sparsity() - (1 - (1 - RATE) ** k)) * total <= k  # torch rounds once per round


def test_round_one_is_magnitude_pruning_of_the_pretrained_weights_before_any_training():
    net = pretrained()
    events = []
    train = noisy_training()
    masks = imp(net, 2, RATE, lambda n, b, k: (events.append(("train", k)), train(n, b, k)),
                on_round=lambda k, m: events.append(("mask", k)))
    assert events == [("mask", 1), ("train", 1), ("mask", 2)]
    assert equal_masks(masks[1], one_shot(pretrained(), RATE))


@IMP_GROUP
def test_the_last_round_is_never_trained(imp_run):
    assert imp_run["calls"] == [1, 2]
    assert sorted(imp_run["masks"]) == [1, 2, 3]


@IMP_GROUP
def test_every_round_starts_from_the_pretrained_weights_and_bn_statistics(imp_run):
    theta = imp_run["theta"]
    for k, start in imp_run["starts"].items():
        mask = imp_run["masks"][k].tensors
        for key, value in start.items():
            want = theta[key] * mask[key] if key in mask else theta[key]
            assert torch.equal(value, want), f"round {k} starts with {key} != θ_pre"


@IMP_GROUP
def test_training_changes_the_weights_and_bn_statistics_that_rewinding_restores(imp_run):
    end, theta = imp_run["ends"][1], imp_run["theta"]
    keep = imp_run["masks"][1].tensors["layer1.conv1.weight"]
    assert not torch.equal(end["layer1.conv1.weight"], theta["layer1.conv1.weight"] * keep)
    assert not torch.equal(end["bn1.running_mean"], theta["bn1.running_mean"])
    assert not torch.equal(end["fc.weight"], theta["fc.weight"])


@IMP_GROUP
def test_pruned_weights_stay_exactly_zero_through_training(imp_run):
    for k, end in imp_run["ends"].items():
        for name, keep in imp_run["masks"][k].tensors.items():
            assert int((end[name][~keep] != 0).sum()) == 0, f"round {k}: pruned {name} weights moved"


@IMP_GROUP
def test_next_round_prunes_by_magnitude_of_the_trained_weights(imp_run):
    trained = pretrained()
    trained.load_state_dict(imp_run["ends"][1])
    assert equal_masks(imp_run["masks"][2], prune_remaining(trained, imp_run["masks"][1], RATE))
    assert not equal_masks(imp_run["masks"][2], prune_remaining(pretrained(), imp_run["masks"][1], RATE))


@IMP_GROUP
def test_imp_hands_the_net_back_pretrained_dense_and_without_prune_hooks(imp_run):
    net = imp_run["net"]
    state = net.state_dict()
    assert set(state) == set(imp_run["theta"])  # no weight_orig / weight_mask left behind
    assert all(torch.equal(state[k], v) for k, v in imp_run["theta"].items())
    assert all(not m._forward_pre_hooks for m in net.modules())


def test_resume_after_round_k_computes_no_earlier_round():
    full = imp(pretrained(), 4, RATE, noisy_training())
    calls, stored = [], []
    imp(pretrained(), 4, RATE, noisy_training(calls), start=(2, full[2]), on_round=lambda k, m: stored.append(k))
    assert calls == [2, 3]
    assert stored == [3, 4]


@IMP_GROUP
def test_resumed_run_finds_the_same_masks_as_an_uninterrupted_run(imp_run, digits):
    net = pretrained()
    resumed = imp(net, 3, RATE, real_training(net, digits), start=(2, imp_run["masks"][2]))
    assert resumed[3].id == imp_run["masks"][3].id


def test_round_resumed_mid_way_finds_the_same_next_mask(digits):
    regime = imp_regime(epochs_per_round=2, batch_size=16, lr=0.05)
    saved, epochs = {}, []

    def save(k, record, state_fn):
        epochs.append(record["epoch"])
        saved.setdefault(k, copy.deepcopy(state_fn()))  # the state after round k's first epoch

    net = pretrained()
    full = imp(net, 2, RATE, fit_round(Normalized(net, (0.1310,), (0.3080,)), digits, regime, seed=1, on_epoch=save))
    epochs.clear()
    net = pretrained()
    train = fit_round(Normalized(net, (0.1310,), (0.3080,)), digits, regime, seed=1, resume=(1, saved[1]),
                      on_epoch=lambda k, record, _: epochs.append(record["epoch"]))
    resumed = imp(net, 2, RATE, train, start=(1, full[1]))
    assert epochs == [1]
    assert resumed[2].id == full[2].id


def test_resume_refuses_a_mask_that_is_not_round_ks():
    net = pretrained()
    with pytest.raises(ValueError, match="IMP round 3"):
        imp(net, 4, RATE, noisy_training(), start=(3, one_shot(net, RATE)))


def test_resume_refuses_a_mask_of_another_prunable_set():
    net = pretrained()
    with pytest.raises(ValueError, match="missing: \\['conv1.weight'\\]"):
        imp(net, 4, RATE, noisy_training(), start=(1, one_shot(net, RATE, prunable="cv_lth")))


def test_fit_round_refuses_a_model_that_does_not_wrap_the_pruned_net(digits):
    net = pretrained()
    other = real_training(pretrained(), digits)
    with pytest.raises(ValueError, match="wrap the very net"):
        imp(net, 2, RATE, other)


def test_a_sweeps_imp_settings_give_the_papers_regime_and_attack_only_where_adversarial():
    spec = ImpSpec(per_pretraining={"AT": "adversarial"})
    assert spec_regime(spec, "ST") == imp_regime()
    at = spec_regime(spec, "AT")
    assert at.kind == "adversarial" and at.attack.steps == 3 and at.optimizer == imp_regime().optimizer


# -- equivalence with torch.nn.utils.prune -------------------------------------------------------------------
def torch_global_prune(net: nn.Module, names: list[str], amount: float) -> None:
    """The reference's call (utils_pruning.py), parameters handed over in raydw's sorted-name order."""
    modules = dict(net.named_modules())
    params = [(modules[n.rsplit(".", 1)[0]], "weight") for n in names]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)


def torch_mask(net: nn.Module, names: list[str]) -> Mask:
    modules = dict(net.named_modules())
    return Mask({n: modules[n.rsplit(".", 1)[0]].weight_mask.detach().bool().clone() for n in names})


def test_one_shot_equals_torch_global_l1_unstructured_on_resnet18():
    torch.manual_seed(0)
    net = build_net("resnet18", 10)
    ours = one_shot(net, 0.05)  # the amount hardly matters to the check, much to topk's time
    ref = copy.deepcopy(net)
    torch_global_prune(ref, ours.names, 0.05)
    assert equal_masks(ours, torch_mask(ref, ours.names))


def test_second_round_equals_torch_pruning_container_after_training():
    net = pretrained()
    ref = copy.deepcopy(net)
    first = one_shot(net, RATE)
    torch_global_prune(ref, first.names, RATE)
    assert equal_masks(first, torch_mask(ref, first.names))
    # "training": the same change to our weights and to torch's weight_orig, our mask held
    g = torch.Generator().manual_seed(5)
    modules = dict(ref.named_modules())
    params = dict(net.named_parameters())
    with torch.no_grad():
        for n in first.names:
            delta = torch.randn(params[n].shape, generator=g) * 0.05
            params[n].add_(delta).mul_(first.tensors[n])
            modules[n.rsplit(".", 1)[0]].weight_orig.add_(delta)
    # torch scores `module.weight`, which its hook recomputes (weight_orig * mask) only on a forward pass;
    # the reference's validation pass after each epoch does that before it prunes.
    ref.eval()(torch.zeros(1, 1, 28, 28))
    torch_global_prune(ref, first.names, RATE)  # PruningContainer folds the first mask in
    assert equal_masks(prune_remaining(net, first, RATE), torch_mask(ref, first.names))


def test_ties_break_as_torch_breaks_them_given_the_sorted_parameter_order():
    net = pretrained()
    with torch.no_grad():
        for n in prunable_names(net):
            w = dict(net.named_parameters())[n]
            w.copy_((w * 10).round() / 10)  # a handful of distinct magnitudes: ties everywhere
    ours = one_shot(net, 0.3)
    ref = copy.deepcopy(net)
    torch_global_prune(ref, ours.names, 0.3)
    assert equal_masks(ours, torch_mask(ref, ours.names))


# -- prunable sets and baselines -----------------------------------------------------------------------------
def test_paper_set_is_every_conv_of_resnet18_stem_and_downsample_included():
    names = prunable_names(build_net("resnet18", 10))
    assert len(names) == 20
    assert {"conv1.weight", "layer2.0.downsample.0.weight"} <= set(names)
    assert not any(n.startswith(("fc", "bn")) for n in names)


def test_cv_lth_set_leaves_only_the_stem_out():
    net = build_net("resnet18", 10)
    assert set(prunable_names(net)) - set(prunable_names(net, "cv_lth")) == {"conv1.weight"}


def test_sparsity_counts_only_the_prunable_weights():
    net = pretrained()
    conv = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Conv2d))
    mask = one_shot(net, 0.5)
    assert mask.numel() == conv
    assert mask.kept() == conv - round(0.5 * conv)


def test_global_random_mask_prunes_exactly_the_rounded_target_count():
    mask = random_mask(pretrained(), 0.7, seed=3)
    assert mask.numel() - mask.kept() == round(0.7 * mask.numel())


def test_layerwise_random_mask_prunes_each_layer_to_the_target():
    mask = random_mask(pretrained(), 0.6, seed=3, layerwise=True)
    for t in mask.tensors.values():
        assert t.numel() - int(t.sum()) == round(0.6 * t.numel())


def test_random_mask_is_a_function_of_its_seed():
    net = pretrained()
    assert random_mask(net, 0.5, seed=1).id == random_mask(net, 0.5, seed=1).id
    assert random_mask(net, 0.5, seed=1).id != random_mask(net, 0.5, seed=2).id


def test_baselines_at_imp_sparsity_prune_as_many_weights_as_imp_round_k():
    net = pretrained()
    total = Mask.ones(net).numel()
    for k in (1, 6, 11, 19):
        s = imp_sparsity(total, RATE, k)
        assert random_mask(net, s, seed=0).kept() == imp_kept(total, RATE, k)
        assert one_shot(net, s).kept() == imp_kept(total, RATE, k)


def test_random_like_keeps_each_layers_count_of_the_ticket():
    ticket = imp(pretrained(), 3, RATE, noisy_training())[3]
    shuffled = random_like(ticket, seed=0)
    assert shuffled.layer_density() == ticket.layer_density()
    assert not equal_masks(shuffled, ticket)


# -- import --------------------------------------------------------------------------------------------------
def reference_state(net: nn.Module, amount: float = RATE, names: list[str] | None = None) -> dict:
    """A state dict as the reference code saves it: torch-pruned, weight_orig + weight_mask, DDP-prefixed."""
    ref = copy.deepcopy(net)
    torch_global_prune(ref, names or sorted(prunable_names(ref)), amount)
    return {f"module.{k}": v for k, v in ref.state_dict().items()}


def test_import_reads_the_mask_of_a_reference_checkpoint_file(tmp_path):
    net = pretrained()
    path = tmp_path / "3-checkpoint.pth.tar"
    torch.save({"state_dict": reference_state(net), "init": net.state_dict(), "state_prune": 1}, path)
    assert equal_masks(read_checkpoint_masks(path, net), one_shot(net, RATE))


def test_import_reads_a_bare_state_dict_without_prefixes():
    net = pretrained()
    state = {k.removeprefix("module."): v for k, v in reference_state(net).items()}
    assert equal_masks(masks_from_state(state, net), one_shot(net, RATE))


def test_import_names_a_prunable_layer_without_a_mask():
    net = pretrained()
    state = reference_state(net)
    del state["module.layer2.conv1.weight_mask"]
    with pytest.raises(ValueError, match=r"without a mask: \['layer2.conv1.weight'\]"):
        masks_from_state(state, net)


def test_import_names_a_shape_mismatch():
    net = pretrained()
    state = reference_state(net)
    state["module.layer1.conv2.weight_mask"] = torch.ones(16, 16, 1, 1)
    with pytest.raises(ValueError, match=r"layer1.conv2.weight: mask \(16, 16, 1, 1\) vs weight \(16, 16, 3, 3\)"):
        masks_from_state(state, net)


def test_import_names_masks_outside_the_prunable_set():
    net = pretrained()
    state = reference_state(net, names=sorted(prunable_names(net)) + ["fc.weight"])
    with pytest.raises(ValueError, match=r"fc.weight \(in the net but not in the 'paper' prunable set\)"):
        masks_from_state(state, net)


def test_import_of_a_stem_free_checkpoint_points_to_cv_lth():
    net = pretrained()
    state = reference_state(net, names=sorted(prunable_names(net, "cv_lth")))
    with pytest.raises(ValueError, match="prunable='cv_lth'"):
        masks_from_state(state, net)
    assert masks_from_state(state, net, "cv_lth").names == sorted(prunable_names(net, "cv_lth"))


def test_import_refuses_a_state_dict_without_masks():
    net = pretrained()
    with pytest.raises(ValueError, match="no '\\*.weight_mask' entries"):
        masks_from_state(net.state_dict(), net)


def test_import_refuses_a_non_binary_mask():
    net = pretrained()
    state = reference_state(net)
    state["module.conv1.weight_mask"] = state["module.conv1.weight_mask"] * 0.5
    with pytest.raises(ValueError, match="conv1.weight_mask holds values other than 0 and 1"):
        masks_from_state(state, net)
