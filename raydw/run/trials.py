"""Ray Tune trial functions (the Train-V2 pattern): each trial drives one Ray Train `TorchTrainer` run.

The Train run is named by the cell's content id, not Tune's trial id, so a rerun of the sweep restores the
run and continues a half-done cell from its last epoch checkpoint (ray-notes section 10). The trial writes
the cell's `trials` row, `done` or `failed` with the error, whatever happened in the workers.
"""
from __future__ import annotations

import hashlib
import time

import ray.train as train
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from raydw.cells import Cell
from raydw.run import rows
from raydw.run.worker import cell_worker, imp_worker, pack_worker, pretrain_worker
from raydw.store import Store, config_json


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
            m = rows.failed("the Train run ended without its final report")
    except Exception as e:  # noqa: BLE001 - any failure becomes the cell's recorded status
        m = rows.failed(f"{type(e).__name__}: {e}")
    store.write_row("trials", rows.cell_row(config, m, time.time() - t0))


def pack_name(configs: list[dict]) -> str:
    """A packed run is named by its cells, so a rerun with the same pack continues its half-done cell."""
    ids = sorted(Cell.from_dict(c["cell"]).cell_id for c in configs)
    return "pack-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]


def pack_trial(config: dict) -> None:
    """Several cells, one after another, in one Train run (`resources.cells_per_run`): the run's start-up is paid
    once. The workers write each cell's trials row as it finishes; a cell the run did not finish is recorded
    failed here, with the run's error."""
    store = Store(config["storage"])
    cells = config["cells"]
    try:
        result = _trainer(pack_worker, config, pack_name(cells), store).fit()
        why = "the packed Train run ended before this cell finished" + (
            "" if (result.metrics or {}).get("final") == 1 else " (no final report)")
    except Exception as e:  # noqa: BLE001 - recorded on every cell the run did not finish
        why = f"{type(e).__name__}: {e}"
    for c in cells:
        if store.get("trials", Cell.from_dict(c["cell"]).cell_id) is None:
            store.write_row("trials", rows.cell_row(c, rows.failed(why), 0.0))


def pretrain_trial(config: dict) -> None:
    store = Store(config["storage"])
    _trainer(pretrain_worker, config, f"pretrain-{config['pretrained_id']}", store).fit()
    if store.get("pretrained", config["pretrained_id"]) is None:
        raise RuntimeError(f"pre-training {config['name']} finished without storing its weights")


def imp_trial(config: dict) -> None:
    store = Store(config["storage"])
    key = hashlib.sha256(config_json(config["params"]).encode()).hexdigest()[:8]
    _trainer(imp_worker, config, f"imp-{config['pretrained_id']}-{key}", store).fit()
