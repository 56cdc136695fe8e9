"""Ray Tune trial functions (the Train-V2 pattern): each trial drives one Ray Train `TorchTrainer` run.

The Train run is named by the cell's content id, not Tune's trial id, so a rerun of the sweep restores the
run and continues a half-done cell from its last epoch checkpoint (ray-notes section 10). The trial writes
the cell's `trials` row, `done` or `failed` with the error, whatever happened in the workers.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time

import ray.train as train
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from raydw.cells import Cell
from raydw.provenance import versions
from raydw.run.worker import cell_worker, imp_worker, pretrain_worker
from raydw.store import Store, config_json

ERROR_CHARS = 4000  # the end of a traceback is what says what went wrong


def _trainer(loop, config: dict, name: str, store: Store) -> TorchTrainer:
    res = config["resources"]
    per_worker = {"CPU": res["cpus_per_worker"]}
    if res["gpus_per_worker"] > 0:
        per_worker["GPU"] = res["gpus_per_worker"]
    return TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=train.ScalingConfig(num_workers=res["workers_per_cell"], use_gpu=res["gpus_per_worker"] > 0,
                                           resources_per_worker=per_worker),
        run_config=train.RunConfig(
            name=name,
            storage_path=store.train_path,
            failure_config=train.FailureConfig(max_failures=res["max_failures"]),
            # One checkpoint per run: a ResNet-50 state with momentum and two best copies is ~400 MB.
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            # A tuning trial reports its one score itself, after its row is stored (raydw.run.tuning).
            callbacks=[TuneReportCallback()] if config.get("report_to_tune", True) else [],
        ),
    )


def cell_trial(config: dict) -> None:
    store = Store(config["storage"])
    cell = Cell.from_dict(config["cell"])
    t0 = time.time()
    try:
        result = _trainer(cell_worker, config, f"cell-{cell.cell_id}", store).fit()
        m = dict(result.metrics or {})
        if m.get("final") != 1:
            m = {"status": "failed", "error": "the Train run ended without its final report"}
    except Exception as e:  # noqa: BLE001 - any failure becomes the cell's recorded status
        m = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-ERROR_CHARS:]}
    row = {
        **{k: getattr(cell, k) for k in ("cell_id", "pretraining", "pretrained_id", "arch", "ticket_method",
                                         "ticket_round", "target_sparsity", "prunable", "dataset", "protocol",
                                         "normalization", "regime", "regime_kind", "data_fraction",
                                         "fraction_method", "seed", "phase", "tune_id", "recipe_id")},
        **{k: v for k, v in m.items() if k in _TRIAL_METRICS},
        "sweep": config["sweep"], "mask_id": config["mask_id"], "sparsity": config["sparsity"],
        "index_set_id": config["index_set_id"], "wall_s": time.time() - t0, "git_commit": config.get("git_commit"),
        "config": config_json(cell.canonical), "finished_at": dt.datetime.now(dt.timezone.utc), **versions(),
    }
    if row.get("status") in ("done", "stopped"):
        # The paper's early stopping: SA from the SA-best epoch, RA from the RA-best epoch. Without validation
        # RA (standard fine-tuning in the paper), RA is taken at the SA-best epoch.
        row["sa"] = row.get("sa_at_sa_best")
        row["ra"] = row.get("ra_at_ra_best") if row.get("ra_at_ra_best") is not None else row.get("ra_at_sa_best")
    store.write_row("trials", row)


_TRIAL_METRICS = {"status", "error", "sa_at_sa_best", "ra_at_sa_best", "sa_at_ra_best", "ra_at_ra_best", "sa_last",
                  "ra_last", "val_sa_best", "val_ra_best", "best_epoch_sa", "best_epoch_ra", "epochs", "train_s", "fit_s",
                  "device", "node", "workers", "amp", "train_images"}


def pretrain_trial(config: dict) -> None:
    store = Store(config["storage"])
    _trainer(pretrain_worker, config, f"pretrain-{config['pretrained_id']}", store).fit()
    if store.get("pretrained", config["pretrained_id"]) is None:
        raise RuntimeError(f"pre-training {config['name']} finished without storing its weights")


def imp_trial(config: dict) -> None:
    store = Store(config["storage"])
    key = hashlib.sha256(config_json(config["params"]).encode()).hexdigest()[:8]
    _trainer(imp_worker, config, f"imp-{config['pretrained_id']}-{key}", store).fit()
