"""What Ray Train 2.60's built-in per-run helpers cost: N trivial TorchTrainer runs, one after another, with
some of them off. raydw's Train runs are E where Ray's state API does not answer (raydw.run.trials.Trainer,
docs/performance.md).

    python benchmarks/process_cpu.py python benchmarks/train_run_callbacks.py VARIANT [RUNS]

VARIANT: A  Ray's defaults
         B  RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 (Ray's switch: no PreemptionWatcher actor)
         C  B, and no DatasetsCallback (its DatasetManager actor; raydw passes no Ray Datasets)
         D  C, and no PlacementGroupCleanerCallback (its detached cleaner actor, which removes a run's placement
            group if the controller dies while the driver lives; without it that group would hold its CPUs)
         E  raydw's own Trainer (raydw.run.trials): no DatasetsCallback, and no PlacementGroupCleanerCallback
            where Ray cannot serve its state API (the preemption watcher on)
C and D drop callbacks through TorchTrainer._create_default_callbacks, a private method of Ray 2.60, as E does.
"""
from __future__ import annotations

import os
import sys
import time

VARIANT = sys.argv[1] if len(sys.argv) > 1 else "A"
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # as raydw sets it
if VARIANT in ("B", "C", "D"):
    os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"

import ray  # noqa: E402 - after the environment above, which Ray reads at import
import ray.train as train  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402


class Trainer(TorchTrainer):
    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        drop = {"C": (DatasetsCallback,), "D": (DatasetsCallback, PlacementGroupCleanerCallback)}.get(VARIANT, ())
        return [c for c in super()._create_default_callbacks() if not isinstance(c, drop)]


if VARIANT == "E":
    from raydw.run.trials import Trainer  # noqa: F811 - the product's class, not a copy of it


def loop(config):
    import torch  # noqa: F401 - a raydw worker imports torch too

    train.report({"x": 1})


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN")}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    took = []
    for i in range(RUNS):
        t = time.time()
        Trainer(loop, scaling_config=train.ScalingConfig(num_workers=1),
                run_config=train.RunConfig(name=f"run{i}-{time.time_ns()}", storage_path="/tmp/raydw-bench-callbacks")).fit()
        took.append(time.time() - t)
    print(f"{VARIANT}: fit seconds " + " ".join(f"{t:.1f}" for t in took))
    ray.shutdown()


if __name__ == "__main__":
    main()
