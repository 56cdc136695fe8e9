"""Weights & Biases: one run per cell (project: default the sweep's name), through the wandb client.

Runs of one process are kept apart with reinit="create_new" (several cells run at once). A cell's run id is derived
from its sweep and cell id, so a resumed cell continues its run online (resume="allow"); offline runs are files
for `wandb sync`, one per attempt. Tuning trials share the W&B group "tune <group>", the sweep's cells the group
named by the sweep.
"""
from __future__ import annotations



from raydw.trackers.runinfo import EPOCH_METRICS, RunInfo, final_metrics, numbers
from raydw.ids import digest

TAG_CHARS = 64  # W&B's limit of a tag


class WandbSink:
    def __init__(self, project: str, entity: str | None, mode: str | None, dir: str | None):
        import wandb

        self.wandb, self.project, self.entity, self.mode, self.dir = wandb, project, entity, mode, dir
        self.name = f"wandb ({entity + '/' if entity else ''}{project}{', ' + mode if mode else ''})"
        if dir:
            import os

            os.makedirs(dir, exist_ok=True)

    def open(self, info: RunInfo):
        rid = digest(f"{info.sweep}/{info.cell_id}")
        run = self.wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, dir=self.dir, id=rid, resume="allow",
            name=info.name, group=info.group or info.sweep, job_type=info.phase,
            tags=[f"{k}={v}"[:TAG_CHARS] for k, v in info.tags.items()],
            config={"tags": info.tags, "params": info.params}, reinit="create_new",
            # No console capture or system-metrics thread per run: the driver runs many cells at once.
            settings=self.wandb.Settings(console="off", x_disable_stats=True, silent=True))
        run.define_metric("*", step_metric="epoch")
        last = run.summary.get("epoch")  # online resume: the epochs the run holds already
        return run, (int(last) + 1 if isinstance(last, (int, float)) else 0)

    def epoch(self, run, epoch: int, row: dict) -> None:
        run.log({"epoch": epoch, **numbers(row, EPOCH_METRICS)})

    def finish(self, run, row: dict | None, status: str) -> None:
        for k, v in final_metrics(row or {}).items():
            run.summary[k] = v
        run.summary["status"] = status
        if row and row.get("error"):
            run.summary["error"] = str(row["error"]).splitlines()[0][:500]
        run.finish(exit_code=1 if status == "failed" else 0)

    def close(self) -> None:
        pass
