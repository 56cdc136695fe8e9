"""MLflow: one run per cell in the experiment (default: the sweep's name), through MLflow's own client.

A cell's run carries the cell's tags and its resolved config as params, its epoch rows as metrics at step = epoch,
and its test SA / RA at the end. Tuning trials are nested runs under one parent run per tuning group. A resumed
cell continues its run (found by its cell_id and sweep tags) after the last epoch it holds.
"""
from __future__ import annotations

import os
import time

from raydw.trackers.runinfo import EPOCH_METRICS, RunInfo, final_metrics, numbers

# MLflow's HTTP client retries a gone server for minutes by default (7 retries, backoff x2, 120 s timeout); the
# callback's thread would then hold the last rows that long at the end of a run. These fail within ~10 s; a user's
# own MLFLOW_HTTP_REQUEST_* settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 # MLflow writes "View run ... at: URL" to stdout as each run ends (a server store): raydw's progress
                 # lines are its output; the runs are in the MLflow UI
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
PARAM_CHARS = 6000  # MLflow's limit of a param value
BATCH = 1000  # MLflow's limit of params (and metrics) per log_batch


class MlflowSink:
    def __init__(self, tracking_uri: str | None, experiment: str):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.name = f"mlflow ({self.client.tracking_uri})"
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        self.parents: dict[str, str] = {}  # tune_id -> the group's parent run

    def _find(self, tags: dict[str, str]) -> str | None:
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], where, max_results=1)
        return runs[0].info.run_id if runs else None

    def _parent(self, info: RunInfo) -> str:
        if info.tune_id not in self.parents:
            key = {"tune_group": info.tune_id, "sweep": info.sweep}
            rid = self._find(key)
            if rid is None:
                rid = self.client.create_run(self.experiment_id, run_name=info.group, tags=key).info.run_id
            self.parents[info.tune_id] = rid
        return self.parents[info.tune_id]

    def open(self, info: RunInfo) -> tuple[str, int]:
        from mlflow.entities import Param

        rid = self._find({"cell_id": info.cell_id, "sweep": info.sweep})
        if rid is not None:  # a resumed cell: continue its run after the epochs it holds
            hist = self.client.get_metric_history(rid, "train_loss")
            self.client.update_run(rid, status="RUNNING")
            return rid, max((m.step for m in hist), default=-1) + 1
        tags = dict(info.tags)
        if info.tune_id and info.group:
            tags["mlflow.parentRunId"] = self._parent(info)
        rid = self.client.create_run(self.experiment_id, run_name=info.name, tags=tags).info.run_id
        params = [Param(k[:250], v[:PARAM_CHARS]) for k, v in sorted(info.params.items())]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(rid, params=params[i:i + BATCH])
        return rid, 0

    def epoch(self, rid: str, epoch: int, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(rid, metrics=[Metric(k, v, now, epoch) for k, v in numbers(row, EPOCH_METRICS).items()])

    def finish(self, rid: str, row: dict | None, status: str) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        step = int((row or {}).get("epochs") or 0)
        tags = [RunTag("status", status)]
        if row and row.get("error"):
            tags.append(RunTag("error", str(row["error"]).splitlines()[0][:500]))
        self.client.log_batch(rid, metrics=[Metric(k, v, now, step) for k, v in final_metrics(row or {}).items()], tags=tags)
        self.client.set_terminated(rid, "FAILED" if status == "failed" else "FINISHED")

    def close(self) -> None:
        for rid in self.parents.values():
            self.client.set_terminated(rid, "FINISHED")
