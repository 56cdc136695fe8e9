"""Ray Train worker loops of the source task: pre-training a recipe and IMP for a pre-training (each round's mask
stored the moment it exists). The downstream cell's loop is run/worker.py."""
from __future__ import annotations

import time

import numpy as np
import torch

from raydw.data import catalog
from raydw.models.build import Normalized, build_net
from raydw.pruning.imp import imp
from raydw.pruning.mask import Mask
from raydw.run.jobs import ImpJob, PretrainJob
from raydw.run.trainio import Reporter, ddp_wrap, report, resume_state, setup, use_autocast
from raydw.spec import ImpSpec
from raydw.store import Store, config_json
from raydw.tickets.lookup import stored_imp_rounds
from raydw.tickets.make import mask_row
from raydw.train import probe as probing
from raydw.train.imp_rounds import fit_round, spec_regime
from raydw.train.loop import evaluate, fit
from raydw.train.probe import Probe
from raydw.train.setup import load_data, load_pretrained, recipe_eval_attack, recipe_regime, save_pretrained, source_data


def pretrain_worker(config: dict) -> None:
    """Train one recipe on its source task from a seeded random init; rank 0 stores the weights."""
    job: PretrainJob = config["job"]
    run_pretrain(job, *setup(job), resume_state())


def run_pretrain(job: PretrainJob, rank: int, world: int, device, resume: dict | None, probe: Probe | None = None) -> dict:
    store = Store(job.run.storage)
    recipe = job.recipe
    info = catalog.get(recipe.dataset)
    torch.manual_seed(recipe.seed)
    net = build_net(recipe.arch, info.num_classes, info.channels)
    model = Normalized(net, info.mean, info.std).to(device).to(memory_format=torch.channels_last)
    data = load_data(recipe.dataset, job.run.data_root, "native", np.arange(info.pool), device, rank, world)
    regime = recipe_regime(recipe) if probe is None else probe.regime(recipe_regime(recipe))
    if probe is not None:
        data = probe.data(data, regime.batch_size, world)
        probing.start(device)
    t0 = time.time()
    autocast = use_autocast(job.resources.amp, device)
    reporter = Reporter(rank, {}, None, None)
    out = fit(model, None, data, regime, recipe_eval_attack(recipe), recipe.seed,
              on_epoch=reporter, resume=resume, autocast=autocast, ddp=ddp_wrap(model, world, device))
    clean, robust = evaluate(model, data.test, data.transform, recipe_eval_attack(recipe), autocast=autocast)
    if rank == 0:
        row = {"pretrained_id": job.pretrained_id, "name": job.name, "arch": recipe.arch, "kind": recipe.kind,
               "source": "raydw pretrain recipe", "dataset": recipe.dataset, "num_classes": info.num_classes,
               "in_chans": info.channels, "mean": list(info.mean), "std": list(info.std), "clean_acc": clean,
               "robust_acc": robust, "config": config_json(recipe.model_dump(mode="json")), "wall_s": time.time() - t0}
        save_pretrained(store, row, model.net)
    final = {"final": 1, "clean_acc": clean, "robust_acc": robust}
    if probe is None:
        report(rank, final, None)
    else:  # a probe also reports its last state, which the preflight restores
        final.update(probing.figures(out.history, probe, regime.batch_size, len(data.val) * world, device))
        reporter.final(final, None)
    return final


def imp_worker(config: dict) -> None:
    """IMP for one pre-training on its source task: each round's mask goes to the store the moment it exists.

    Resumable by round (a rerun starts after the last stored round) and within a round (the per-epoch
    checkpoint holds the round and its training state).
    """
    job: ImpJob = config["job"]
    run_imp(job, *setup(job), resume_state())


def run_imp(job: ImpJob, rank: int, world: int, device, ckpt: dict | None, probe: Probe | None = None) -> dict:
    """`probe`: its rounds only (round 1 is pruning alone, each later one re-trains once), each re-training shrunk."""
    store = Store(job.run.storage)
    tickets = job.tickets
    spec = tickets.imp or ImpSpec()
    pid, name, params = job.pretrained_id, job.name, job.params
    prow, net = load_pretrained(store, pid)
    info = catalog.get(spec.dataset)
    if prow["num_classes"] != info.num_classes:
        raise ValueError(f"IMP re-trains {name} on {spec.dataset} ({info.num_classes} classes), but the model's head "
                         f"has {prow['num_classes']}: tickets.imp.dataset must be the pre-training task")
    model = Normalized(net, tuple(prow["mean"]), tuple(prow["std"])).to(device).to(memory_format=torch.channels_last)
    # ImageNet is decoded by DataLoader processes: the worker's CPUs but the one driving the GPU.
    workers = max(0, int(job.resources.cpus_per_worker) - 1)
    data = source_data(spec.dataset, spec.root, device, rank, world, workers)
    regime = spec_regime(spec, name) if probe is None else probe.regime(spec_regime(spec, name))
    if probe is not None:
        data = probe.data(data, regime.batch_size, world)
        probing.start(device)
    stored = stored_imp_rounds(store, pid, params)
    start = None
    if stored:
        k = max(stored)
        row = store.get("masks", stored[k]["mask_id"])
        start = (k, Mask.unpack(row["bits"], row["layout"]))
    mid = (ckpt["round"], ckpt["fit"]) if ckpt and start and ckpt.get("round") == start[0] else None

    def on_round(k: int, mask) -> None:
        if rank == 0 and k not in stored:
            store.write_row("masks", mask_row(mask, name, pid, "imp", params, k, 1 - (1 - tickets.rate) ** k))
        report(rank, {"round": k, "sparsity": mask.sparsity()}, None)

    history: list[dict] = []
    last = {}

    def on_epoch(k: int, record: dict, state_fn) -> None:
        history.append(record)
        last.update(round=k, fit=state_fn)
        report(rank, {"round": k, **record}, {"round": k, "fit": state_fn()} if rank == 0 else None)

    train_round = fit_round(model, data, regime, spec.seed, eval_attack=None,
                            autocast=use_autocast(job.resources.amp, device), ddp=ddp_wrap(model, world, device), on_epoch=on_epoch, resume=mid)
    imp(model.net, job.rounds if probe is None else probe.rounds, tickets.rate, train_round, tickets.prunable, start=start, on_round=on_round)
    final = {"final": 1}
    if probe is not None:  # the last report carries the last re-training state, which the preflight restores
        final.update(probing.figures(history, probe, regime.batch_size, len(data.val) * world, device))
        report(rank, final, {"round": last["round"], "fit": last["fit"]()} if rank == 0 and last else None)
    # A sweep's IMP run makes no closing report: right behind the last round's, it was a second report while Tune
    # still handled the first (see raydw.run.worker.pack_worker); the run's output is its stored masks.
    return final
