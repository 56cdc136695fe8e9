"""The sweep's `tune:` section: Optuna-tuned dense baselines, each tuned field's search distribution (docs/tuning.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raydw.bounded import short
from raydw.spec.types import Bool, Int, Num, Seed, SpecModel


TUNE_FIELDS = ("lr", "weight_decay", "attack_step_size", "epochs")
_TUNE_KINDS = {"lr": ("loguniform", "uniform", "choice"), "weight_decay": ("loguniform", "uniform", "choice"),
               "attack_step_size": ("loguniform", "uniform", "choice"), "epochs": ("int", "choice")}


class DistSpec(SpecModel):
    """One search distribution, sampled by Optuna (seeded random for the startup trials, TPE after them)."""

    kind: Literal["loguniform", "uniform", "int", "choice"] = Field(description="loguniform / uniform: a float in [low, high] (log-uniform for scales such as lr); int: an integer in [low, high], both ends included; choice: one of values")
    low: Num | None = Field(None, description="lower end, included, in the tuned field's unit (lr: learning rate; weight_decay: L2 coefficient; attack_step_size: [0,1] pixels, e.g. 1/255; epochs: epochs)")
    high: Num | None = Field(None, description="upper end, included, same unit as low")
    values: list[Num] | None = Field(None, description="choice: the candidates (same unit as low)")


    @model_validator(mode="after")
    def _shape(self) -> "DistSpec":
        if self.kind == "choice":
            if not self.values:
                raise ValueError("kind choice needs a non-empty 'values' list (and no low/high)")
            if self.low is not None or self.high is not None:
                raise ValueError("kind choice takes 'values', not low/high")
            return self
        if self.low is None or self.high is None or self.values is not None:
            raise ValueError(f"kind {self.kind} needs 'low' and 'high' (and no 'values')")
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low {self.low}, high {self.high}")
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"kind int needs whole-number low and high, got {self.low}, {self.high}")
        return self

    def points(self) -> list[float]:
        """The values a check must hold for: the ends, or every choice."""
        return list(self.values) if self.kind == "choice" else [self.low, self.high]


class TuneSpaceSpec(SpecModel):
    """What the dense recipe search varies; fields left out keep the regime's own value."""

    lr: DistSpec | None = Field(None, description="initial learning rate of the regime's optimizer (> 0); kind loguniform, uniform or choice")
    weight_decay: DistSpec | None = Field(None, description="the optimizer's L2 coefficient (>= 0); kind loguniform, uniform or choice")
    attack_step_size: DistSpec | None = Field(None, description="training attack step size in [0,1] pixel units (adversarial regimes only); kind loguniform, uniform or choice")
    epochs: DistSpec | None = Field(None, description="fine-tuning epochs (whole numbers >= 1); kind int or choice. Multistep milestones are kept as written (absolute epochs)")

    @field_validator(*TUNE_FIELDS, mode="after")
    @classmethod
    def _fits_field(cls, d: DistSpec | None, info):
        if d is None:
            return d
        name = info.field_name
        if d.kind not in _TUNE_KINDS[name]:
            raise ValueError(f"{name} takes kind {' or '.join(_TUNE_KINDS[name])}, got {d.kind!r}")
        pts = d.points()
        if name == "lr" and min(pts) <= 0:
            raise ValueError(f"lr values must be > 0, got {short(pts)}")
        if name == "weight_decay" and min(pts) < 0:
            raise ValueError(f"weight_decay values must be >= 0, got {short(pts)}")
        if name == "attack_step_size" and not all(0 < v <= 1 for v in pts):
            raise ValueError(f"attack_step_size values lie in (0, 1] ([0,1] pixel units), got {short(pts)}")
        if name == "epochs" and not all(v >= 1 and v == int(v) for v in pts):
            raise ValueError(f"epochs values are whole numbers >= 1, got {short(pts)}")
        return d

    def fields(self) -> dict[str, DistSpec]:
        return {k: getattr(self, k) for k in TUNE_FIELDS if getattr(self, k) is not None}


class TuneSpec(SpecModel):
    """Optuna-tuned dense baselines (docs/tuning.md): per (pre-training, dataset, regime, fraction) the dense model's
    recipe is searched with Ray Tune's OptunaSearch (TPE, seeded), then held fixed for the dense cell and every ticket."""

    enabled: Bool = Field(False, description="off: every cell uses its regime as written (the paper)")
    num_samples: Int = Field(8, ge=1, description="trials per group (pre-training, dataset, regime, data fraction): the budget; each trial is one dense fine-tuning run")
    seed: Seed = Field(0, description="seed of Optuna's TPESampler (its startup trials and its proposals)")
    startup_trials: Int | None = Field(None, ge=1, description="seeded random trials before TPE models the results; default min(10, max(1, num_samples // 2))")
    space: TuneSpaceSpec = Field(default_factory=TuneSpaceSpec, description="search distributions; at least one entry when enabled")
    metric: Literal["auto", "val_sa", "val_ra"] = Field("auto", description="a trial's score, maximized: the best validation-epoch value (val_sa_best / val_ra_best, accuracy in [0,1] on the validation split, never test) of its dense run; auto: val_sa for standard regimes, val_ra for adversarial ones")
    regimes: list[str] | None = Field(None, description="regimes to tune (default: all); the others keep their recipe as written")

    def metric_for(self, kind: str) -> str:
        if self.metric != "auto":
            return self.metric
        return "val_ra" if kind == "adversarial" else "val_sa"

    def n_startup(self) -> int:
        return self.startup_trials if self.startup_trials is not None else min(10, max(1, self.num_samples // 2))

    def tuned_regimes(self, all_regimes) -> list[str]:
        return [r for r in all_regimes if self.regimes is None or r in self.regimes]
