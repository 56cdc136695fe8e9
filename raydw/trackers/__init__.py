"""Experiment trackers (MLflow, Weights & Biases, TensorBoard): every cell of a sweep as a run, while it runs.

The run layer calls `callbacks(spec.trackers, sweep_name)` for the Ray Tune callbacks of each Tuner; the CLI and
run_sweep's pre-flight call `check(spec.trackers)` so a spec naming a tracker whose package is absent is refused
before Ray starts. Each tracker is an optional extra of the package. docs/findings.md, "Watching a sweep".
"""
from __future__ import annotations

import importlib.util

from raydw.spec import SpecError

MODULES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}  # kind -> what must import
TARGET = {"mlflow": "tracking_uri", "wandb": "project", "tensorboard": "logdir"}  # --tracker KIND:TARGET


def install_hint(kind: str) -> str:
    return f"pip install -e '.[{kind}]' (from a checkout; or pip install 'raydw[{kind}]')"


def missing(trackers) -> list[str]:
    """One line per tracker whose client package is not installed, naming the spec field and the install command."""
    return [f"trackers.{i} ({t.kind}): the {MODULES[t.kind]} package is not installed; {install_hint(t.kind)}"
            for i, t in enumerate(trackers) if importlib.util.find_spec(MODULES[t.kind]) is None]


def check(trackers, source: str = "sweep") -> None:
    """SpecError (CLI exit 2, nothing run) when a tracker's package is missing."""
    problems = missing(trackers)
    if problems:
        raise SpecError(f"{source}: trackers that cannot run here, nothing was run:\n" + "\n".join(f"  {p}" for p in problems))


def from_flag(text: str):
    """`--tracker KIND[:TARGET]`: mlflow[:TRACKING_URI], wandb[:PROJECT], tensorboard[:LOGDIR]; SpecError otherwise."""
    from pydantic import TypeAdapter, ValidationError

    from raydw.spec import TrackerSpec

    kind, _, target = text.partition(":")
    if kind not in MODULES:
        raise SpecError(f"--tracker {text}: the kind must be one of {', '.join(MODULES)} "
                        "(mlflow[:TRACKING_URI], wandb[:PROJECT], tensorboard[:LOGDIR])")
    d = {"kind": kind, **({TARGET[kind]: target} if target else {})}
    try:
        return TypeAdapter(TrackerSpec).validate_python(d)
    except ValidationError as e:
        raise SpecError(f"--tracker {text}: {e.errors()[0]['msg']}") from None


def label(t) -> str:
    """How a tracker is named in raydw's lines before its client exists."""
    target = getattr(t, TARGET[t.kind], None)
    return f"{t.kind} ({target})" if target else t.kind


def sink_factories(trackers, sweep: str) -> list[tuple[str, object]]:
    """(label, build) per tracker; build() makes its client, which connects: it runs on the callback's thread, never
    on Tune's, and a tracker that cannot start is said and left out without stopping the others."""
    def build(t):
        if t.kind == "mlflow":
            from raydw.trackers.mlflow_sink import MlflowSink

            return MlflowSink(t.tracking_uri, t.experiment or sweep)
        if t.kind == "wandb":
            from raydw.trackers.wandb_sink import WandbSink

            return WandbSink(t.project or sweep, t.entity, t.mode, t.dir)
        from raydw.trackers.tensorboard_sink import TensorboardSink

        return TensorboardSink(t.logdir)

    return [(label(t), lambda t=t: build(t)) for t in trackers]


def callbacks(trackers, sweep: str, jobs_of, out=print) -> list:
    """The Ray Tune callbacks that send this sweep's cells to its trackers: none when the spec names none.
    `jobs_of(trial_config)`: the cell jobs a trial runs (raydw.run.tuner.trial_jobs)."""
    if not trackers:
        return []
    from raydw.trackers.callback import TrackerCallback

    return [TrackerCallback(sink_factories(trackers, sweep), sweep, out, jobs_of)]
