"""The sweep spec: typed, validated, with units and help beside each field, loaded from YAML.

Torch-free on purpose: `raydw sweep --dry-run` and result queries must not pay for importing torch.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Strict,
                      Tag, ValidationError, field_validator, model_validator)

from raydw.bounded import short

_FRACTION = re.compile(r"^\s*([0-9.]+)\s*/\s*([0-9.]+)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_RULE = "1-100 characters: letters, digits, '.', '_' and '-', not starting with '.', '_' or '-'"
MAX_CELLS = 100_000  # default of SweepSpec.max_cells: the paper's grid is 468 cells


class SpecError(ValueError):
    """A sweep spec that cannot be run. The message names the file, the YAML path and what would be right."""


def _number(v: Any) -> Any:
    """Accept '8/255' in YAML where a float is expected: that is how the paper writes eps. A boolean is not a
    number (pydantic would read `true` as 1.0)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    if isinstance(v, str):
        m = _FRACTION.match(v)
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise ValueError(f"{v.strip()!r} divides by zero")
            return num / den
        try:
            f = float(v)  # "nan", "inf", "1e-3" (YAML 1.1 reads 1e-3 as a string)
        except ValueError:
            return v  # pydantic says it is not a number
        v = f
    if isinstance(v, float) and not math.isfinite(v):  # `.inf` and `.nan` pass gt=0 / fail it with a puzzling message
        raise ValueError(f"must be a finite number, got {v}")
    return v


def _int64(v: int) -> int:
    if not -(2 ** 63) <= v < 2 ** 63:
        raise ValueError(f"{short(v, 40)} does not fit a 64-bit integer (the store's columns)")
    return v


def _seed(v: int) -> int:
    if not 0 <= v < 2 ** 32:  # numpy's RandomState and Optuna's sampler take seeds in [0, 2**32)
        raise ValueError(f"a seed is a whole number in [0, 2**32), got {short(v, 40)}")
    return v


def _storage(v: str) -> str:
    """An empty storage would be the working directory itself; a NUL cannot be in any path."""
    if not v.strip() or "\0" in v:
        raise ValueError(f"storage {short(v, 60)} is not a folder or URI (e.g. ./results, ~/raydw-results, s3://bucket/x)")
    return v


def _name(v: str) -> str:
    """Names become folder and file names (Ray Tune's experiment folder is the sweep name) and table labels:
    one safe path component, so `../../x` cannot write outside the store."""
    if not _NAME.match(v):
        raise ValueError(f"{short(v, 60)} is not a valid name: {NAME_RULE}")
    return v


# Every float of the spec is finite (`.inf` / `.nan` pass `gt=0`), and '8/255' is read as a fraction.
Num = Annotated[float, BeforeValidator(_number), AllowInfNan(False)]
# Whole numbers are whole numbers: strict, so `epochs: true` or `steps: 2.5` is refused, not read as 1 or 2;
# bounded to the int64 the store's columns hold.
Int = Annotated[int, Strict(), AfterValidator(lambda v: _int64(v))]  # not Field(ge=..): it would replace a field's own ge
Seed = Annotated[int, Strict(), AfterValidator(lambda v: _seed(v))]
Bool = Annotated[bool, Strict()]  # `true` / `false` only; pydantic would accept 1, "yes" and "off"
Name = Annotated[str, Strict(), AfterValidator(_name)]


class _Spec(BaseModel):
    # Unknown keys are errors: a misspelt field silently falling back to a default costs GPU-hours.
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackSpec(_Spec):
    """An L-inf attack in [0,1] pixel space (normalization lives inside the model)."""

    method: Literal["pgd", "fgsm_rs"] = Field("pgd", description="pgd: projected sign-gradient steps; fgsm_rs: one step from a uniform random start (Wong et al. 2020)")
    norm: Literal["linf"] = Field("linf", description="threat model; only L-inf is used by the paper")
    eps: Num = Field(description="radius in [0,1] pixel units, e.g. 8/255", gt=0, le=1)
    step_size: Num = Field(description="per-step size in [0,1] pixel units, e.g. 2/255", gt=0, le=1)
    steps: Int = Field(description="number of gradient steps (PGD-10 training, PGD-20 evaluation in the paper)", ge=1)
    random_start: Bool = Field(True, description="uniform start in the eps-ball (the paper's advertorch default)")
    bn_mode: Literal["train", "eval"] = Field("train", description="BatchNorm mode while crafting *training* attacks: the paper's code uses train; MadryLab uses eval. Evaluation attacks always use eval mode")

    @model_validator(mode="after")
    def _one_step_from_random(self):
        # fgsm_rs is defined as one step from a uniform random start: other values would be validated, hashed into
        # the cell id and then ignored by the attack.
        if self.method == "fgsm_rs" and (self.steps != 1 or not self.random_start):
            raise ValueError(f"method fgsm_rs takes exactly one step from a random start: set steps: 1 and random_start: "
                             f"true (got steps {self.steps}, random_start {self.random_start}), or use method: pgd")
        return self


class OptimizerSpec(_Spec):
    """SGD with momentum and a learning-rate schedule, as in every script of the paper."""

    lr: Num = Field(description="initial learning rate", gt=0)
    momentum: Num = Field(0.9, ge=0, lt=1)
    weight_decay: Num = Field(5e-4, ge=0, description="L2 on all parameters (the paper's downstream scripts use 5e-4)")
    schedule: Literal["constant", "multistep", "cosine"] = Field("multistep", description="multistep: x gamma at each milestone epoch; cosine: T_max = epochs")
    milestones: list[Int] = Field(default_factory=list, description="epochs at which multistep multiplies lr by gamma")
    gamma: Num = Field(0.1, gt=0, le=1)


class RegimeSpec(_Spec):
    """A downstream fine-tuning regime: standard (clean CE) or adversarial (CE on PGD examples only)."""

    kind: Literal["standard", "adversarial"]
    epochs: Int = Field(ge=1, description="fine-tuning epochs")
    batch_size: Int = Field(ge=1, description="global batch size (split across Train workers)")
    optimizer: OptimizerSpec
    attack: AttackSpec | None = Field(None, description="training attack; required for adversarial, forbidden for standard")
    data_fractions: list[Num] = Field(default_factory=lambda: [1.0], min_length=1, description="fractions of the training pool (the paper: 1.0 for standard; 1.0, 0.1, 0.01 for adversarial)")
    validate_ra: Bool = Field(True, description="compute validation RA every epoch (the paper's standard-FT script computes no RA)")
    val_start_epoch: Int = Field(0, ge=0, description="validate only from this epoch on (the paper's CIFAR adversarial script: 45); earlier epochs are not candidates for SA-/RA-best")
    pre_validation: Literal["skip", "reference"] = Field("skip", description="epochs before val_start_epoch: skip (raydw: never SA-/RA-best candidates) or reference (the paper's script logs val SA = RA = 1 % for them, so the first epoch's weights stay the SA-/RA-best candidate until a validated epoch beats 1 %; docs/protocol.md)")
    per_dataset: dict[str, dict[str, Any]] = Field(default_factory=dict, description="overrides of any field above for one dataset (the paper's SVHN adversarial recipe differs)")

    @model_validator(mode="after")
    def _attack_matches_kind(self) -> "RegimeSpec":
        if self.kind == "adversarial" and self.attack is None:
            raise ValueError("an adversarial regime needs an 'attack' (e.g. {eps: 8/255, step_size: 2/255, steps: 10})")
        if self.kind == "standard" and self.attack is not None:
            raise ValueError("a standard regime takes no 'attack'; use kind: adversarial")
        for f in self.data_fractions:
            if not 0 < f <= 1:
                raise ValueError(f"data_fractions must lie in (0, 1], got {f}")
        return self

    def for_dataset(self, dataset: str) -> "RegimeSpec":
        """This regime with the dataset's overrides applied (and per_dataset dropped)."""
        base = self.model_dump(exclude={"per_dataset"})
        merged = _deep_merge(base, self.per_dataset.get(dataset, {}))
        return RegimeSpec.model_validate(merged)


class RecipeSpec(_Spec):
    """`raydw pretrain`: train one of the paper's three pre-training kinds on an offline source task."""

    kind: Literal["standard", "fast_adversarial", "pgd_adversarial"] = Field(description="standard CE; fast adversarial = FGSM with random start (Wong et al.); PGD adversarial (Madry et al.)")
    arch: str = Field("resnet_tiny", description="architecture name in raydw.models")
    dataset: str = Field("mnist5k", description="source dataset name in raydw.data")
    epochs: Int = Field(4, ge=1)
    batch_size: Int = Field(128, ge=1)
    lr: Num = Field(0.05, gt=0)
    weight_decay: Num = Field(5e-4, ge=0)
    eps: Num = Field(0.1, gt=0, le=1, description="L-inf radius of the adversarial kinds, [0,1] pixels")
    pgd_steps: Int = Field(3, ge=1, description="PGD steps for pgd_adversarial (step size 2.5*eps/steps)")
    seed: Seed = 0


class PretrainingSpec(_Spec):
    """One pre-trained model: a registry name, a local checkpoint path, or a raydw pretrain recipe."""

    name: Name = Field(description="short label used in results (e.g. ST, FAT, AT); letters, digits, '.', '_', '-'")
    weights: str | None = Field(None, description="registry entry (raydw models) or a local checkpoint path")
    recipe: RecipeSpec | None = Field(None, description="train it with raydw pretrain (cached in the store by content hash)")
    arch: str | None = Field(None, description="architecture; implied by the registry entry or the recipe")

    @model_validator(mode="after")
    def _one_source(self) -> "PretrainingSpec":
        if (self.weights is None) == (self.recipe is None):
            raise ValueError("give exactly one of 'weights' (registry name or path) or 'recipe'")
        if self.weights is not None and self.arch is None:
            from raydw.models.catalog import PRETRAINED

            if self.weights not in PRETRAINED:
                raise ValueError("a local checkpoint path needs 'arch' (e.g. resnet50); registry names: see `raydw models`")
        return self


class ImpSpec(_Spec):
    """IMP on the pre-training (source) task, the paper's ticket finder (protocol doc section 3)."""

    dataset: str = Field("imagenet", description="source task the rounds re-train on (the paper: ImageNet; the demo: mnist5k)")
    root: str | None = Field(None, description="local folder of the source data where it needs one (ImageNet ImageFolder)")
    epochs_per_round: Int = Field(30, ge=1, description="re-training epochs between two prunings (the paper: 30)")
    regime: Literal["standard", "adversarial"] = Field("standard", description="re-training with clean CE (main_std.py) or PGD (main_adv.py)")
    per_pretraining: dict[str, Literal["standard", "adversarial"]] = Field(default_factory=dict, description="regime per pretraining name, overriding 'regime' (the paper's pairing is unverified)")
    batch_size: Int = Field(2048, ge=1, description="global batch (the paper: 2048 over its GPUs)")
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(lr=5e-4, weight_decay=1e-4, schedule="constant"),
                                     description="the paper: SGD 0.9, constant lr 5e-4, wd 1e-4, fresh each round")
    attack: AttackSpec = Field(default_factory=lambda: AttackSpec(eps=8 / 255, step_size=16 / (3 * 255), steps=3),
                               description="adversarial re-training attack (the paper: PGD-3, eps 8/255, step 2*eps/3)")
    seed: Seed = Field(1, description="the paper: 1")
    workers: Int | None = Field(None, ge=1, description="Ray Train workers (DDP) of each IMP job; default resources.workers_per_cell (the paper's IMP ran DDP over several GPUs, global batch 2048)")
    cpus_per_worker: Num | None = Field(None, gt=0, description="CPUs per IMP worker, all but one decoding ImageNet JPEGs; default resources.cpus_per_worker")

    def regime_for(self, pretraining: str) -> str:
        return self.per_pretraining.get(pretraining, self.regime)


class TicketSpec(_Spec):
    """How the sparse masks (tickets) are found. Level 0, the dense model, is always included."""

    method: Literal["omp", "imp", "random", "import"] = Field("omp", description="omp: one-shot global magnitude; imp: iterative with rewinding; random; import: masks from files")
    rounds: list[Int] | None = Field(None, description="IMP rounds k; sparsity = 1-(1-rate)^k (the paper: k=1..19)")
    rate: Num = Field(0.2, gt=0, lt=1, description="fraction of the remaining weights pruned per round")
    sparsities: list[Num] | None = Field(None, description="explicit sparsities instead of rounds (omp and random only)")
    prunable: Literal["paper", "cv_lth"] = Field("paper", description="paper: every Conv2d weight incl. the stem; cv_lth: stem conv excluded")
    include_dense: Bool = Field(True, description="run level 0 (the dense baseline every verdict compares against)")
    imp: ImpSpec | None = Field(None, description="IMP settings (method: imp); defaults are the paper's")
    seed: Seed = Field(0, description="seed of random masks")
    layerwise: Bool = Field(False, description="random masks: same sparsity in every layer instead of one global draw")
    files: dict[str, str] = Field(default_factory=dict, description="import: pretraining name -> mask checkpoint path (reference format); its sparsity is measured")

    @model_validator(mode="after")
    def _levels(self) -> "TicketSpec":
        if self.rounds is not None and self.sparsities is not None:
            raise ValueError("give 'rounds' or 'sparsities', not both")
        if self.rounds is None and self.sparsities is None:
            raise ValueError("give 'rounds' (IMP rounds k) or 'sparsities'")
        if self.rounds is not None and any(k < 1 for k in self.rounds):
            raise ValueError("rounds are k >= 1 (k = 0 is the dense model, added by include_dense)")
        if self.rounds is not None and any(1 - (1 - self.rate) ** k >= 1 - 1e-9 for k in self.rounds):
            k = max(self.rounds)  # 0.8**k underflows: a mask that prunes every weight
            raise ValueError(f"round {k} at rate {self.rate} is sparsity 1 - {1 - self.rate:g}^{k}, which is 1.0 in floating "
                             "point (every weight pruned); use fewer rounds")
        if self.sparsities is not None:
            if self.method == "imp":
                raise ValueError("imp produces rounds; give 'rounds' instead of 'sparsities'")
            if any(not 0 < s < 1 for s in self.sparsities):
                raise ValueError("sparsities lie in (0, 1)")
        return self

    def levels(self) -> list[tuple[int | None, float]]:
        """(round, target sparsity) per level, dense first."""
        out: list[tuple[int | None, float]] = [(0, 0.0)] if self.include_dense else []
        if self.rounds is not None:
            out += [(k, 1 - (1 - self.rate) ** k) for k in sorted(set(self.rounds))]
        else:
            out += [(None, s) for s in sorted(set(self.sparsities or []))]
        return out


class DataSpec(_Spec):
    """Downstream data: which datasets, how they are split, transformed and sub-sampled."""

    datasets: list[str] = Field(min_length=1, description="downstream dataset names (raydw.data registry)")
    root: str | None = Field(None, description="local folder holding torchvision-format files (CIFAR, SVHN); not needed for packaged data")
    protocol: Literal["paper", "native"] = Field("native", description="paper: upsample to 224 with RandomResizedCrop+flip, eval Resize256+CenterCrop224; native: the dataset's own size")
    fraction_method: Literal["first_n", "stratified"] = Field("first_n", description="first_n: the paper's first N pool indices; stratified: class-balanced, seeded")
    normalization: Literal["downstream", "pretraining"] = Field("downstream", description="input statistics inside the model: the downstream dataset's (the paper's code) or the pre-training's")


class EvalSpec(_Spec):
    """Evaluation: SA is clean top-1; RA is top-1 under this attack on the eval-mode model."""

    attack: AttackSpec = Field(description="the paper: PGD-20, eps 8/255, step 2/255, one random start; used on the test set at the selected epochs, and for validation under schedule 'paper'")
    schedule: Literal["paper", "fast"] = Field("paper", description="paper: SA and RA (this attack) on the whole validation split every epoch; fast: SA every epoch, RA by a cheaper PGD on a fixed validation subset every few epochs (docs/performance.md)")
    fast_val_images: Int = Field(1000, ge=1, description="fast: validation images for RA (the first N of the validation split)")
    fast_ra_steps: Int = Field(10, ge=1, description="fast: PGD steps of the validation RA (step size = 2.5 eps / steps)")
    fast_ra_every: Int = Field(5, ge=1, description="fast: validation RA every this many epochs (and at the last epoch)")
    final_attack: Literal["none", "autoattack"] = Field("none", description="a stronger attack added to `attack` on the test set at the evaluated checkpoints: autoattack = RobustBench's standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; torchattacks, `pip install 'raydw[autoattack]'`), L-inf at attack.eps; stored as ra_final* (robust to every attack) beside the PGD RA. The paper: none (PGD-20)")

    def val_schedule(self):
        """None for the paper's schedule; else (every, attack, images) for the loop."""
        if self.schedule == "paper":
            return None
        a = self.attack.model_copy(update={"steps": self.fast_ra_steps, "step_size": 2.5 * self.attack.eps / self.fast_ra_steps})
        return (self.fast_ra_every, a, self.fast_val_images)


class EarlyStopSpec(_Spec):
    """Double-win-aware early stopping: stop a ticket whose validation trails its dense model's at the same epoch."""

    enabled: Bool = Field(False, description="off for the paper's grid (fidelity); on in sweeps/paper-fast.yaml")
    margin: Num = Field(0.05, ge=0, le=1, description="stop when ticket val SA or RA < dense's - margin (accuracy in [0,1])")
    grace_epochs: Int | None = Field(None, ge=0, description="compare only from this epoch on; default: the regime's first lr milestone (its first decay), else half its epochs")
    metrics: list[Literal["sa", "ra"]] = Field(default_factory=lambda: ["sa", "ra"], description="validation metrics compared")

    def grace_for(self, regime: "RegimeSpec") -> int:
        if self.grace_epochs is not None:
            return self.grace_epochs
        ms = sorted(regime.optimizer.milestones)
        return ms[0] if regime.optimizer.schedule == "multistep" and ms else regime.epochs // 2


class SearchSpec(_Spec):
    """Which ticket levels run: the full grid, or an adaptive search for each group's extreme double-win level."""

    mode: Literal["grid", "extreme"] = Field("grid", description="grid: every level; extreme: dense first, then the levels raydw.search proposes per (pre-training, dataset, fraction, ticket spec) from finished verdicts (docs/search.md)")
    verify: Literal["none", "full"] = Field("none", description="extreme: afterwards run the remaining levels too, to test the answer")
    rule: Literal["strict", "loose"] = Field("strict", description="which double-win steers the search: strict = all three metrics (verdicts' reading 'full'), loose = SA std and RA adv (reading 'loose'); the comparison is always ticket >= dense")


TUNE_FIELDS = ("lr", "weight_decay", "attack_step_size", "epochs")
_TUNE_KINDS = {"lr": ("loguniform", "uniform", "choice"), "weight_decay": ("loguniform", "uniform", "choice"),
               "attack_step_size": ("loguniform", "uniform", "choice"), "epochs": ("int", "choice")}


class DistSpec(_Spec):
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


class TuneSpaceSpec(_Spec):
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


class TuneSpec(_Spec):
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


class ResourceSpec(_Spec):
    """What one cell asks of the cluster."""

    workers_per_cell: Int = Field(1, ge=1, description="Ray Train workers per cell (DDP when > 1)")
    gpus_per_worker: Num = Field(0, ge=0, description="GPUs per Train worker (0 = CPU)")
    cpus_per_worker: Num = Field(1, gt=0, description="CPUs per Train worker")
    max_concurrent_cells: Int | None = Field(None, ge=1, description="cells running at once; default: as many as the cluster's CPUs/GPUs fit")
    max_failures: Int = Field(2, ge=0, description="Ray Train restarts of a cell's workers after a crash (each resumes from the last epoch)")
    cells_per_run: Int = Field(1, ge=1, description="cells run one after another in one Ray Train run (a 'pack'): the run's start-up (~7-15 s) is paid once per pack; worth it when cells take under a few minutes (docs/performance.md)")
    torch_threads: Int = Field(1, ge=1, description="intra-op threads per CPU worker")
    amp: Literal["bf16", "fp32"] = Field("bf16", description="precision on CUDA devices for training, attack crafting and evaluation: bf16 autocast, or fp32 as the paper's reference code runs; CPUs always run fp32. Recorded per cell (trials.amp); not part of the cell id (docs/protocol.md)")


class VerdictSpec(_Spec):
    """How this study's verdicts are decided, fixed before the results are seen (docs/findings.md): the sweep's
    end-of-run table, its report and `raydw verdicts --spec` use it; the command-line flags override it."""

    rule: Literal["strict", "tol", "equivalence"] = Field("strict", description="strict: ticket >= dense (the paper's); tol: >= dense - tol x dense std over seeds (Chen et al. CVPR 2021); equivalence: two one-sided tests on the interval of ticket - dense (match / no match / inconclusive)")
    tol: Num = Field(1.0, ge=0, description="tol: dense standard deviations of slack (needs >= 2 dense seeds)")
    margin: Num = Field(1.0, gt=0, le=100, description="equivalence: the margin in accuracy points (0-100): a metric matches when the interval's lower bound is above -margin")
    level: Num = Field(0.95, gt=0.5, lt=1, description="confidence level of the intervals (two-sided); each one-sided test of equivalence is at (1 - level) / 2")
    resamples: Int = Field(2000, ge=100, le=100_000, description="bootstrap resamples (seeds, then test images)")
    seed: Seed = Field(0, description="seed of the bootstrap (the intervals are reproducible)")
    seed_variance: Literal["pooled", "per_comparison"] = Field("pooled", description="seed part of each interval: pooled = the seed spread of the metric's family (dataset x regime x fraction x SA/RA, every pre-training and level), single-seed comparisons included, where Bartlett's test finds the spreads compatible; per_comparison = each comparison's own seeds, none at one seed (docs/findings.md)")


class AdaptiveSeedsSpec(_Spec):
    """Seeds spent where a verdict is still open (docs/findings.md, "Adaptive seeds"): the sweep runs in rounds; after
    each, the comparisons still inconclusive get one more seed, until each is decided or has `max` seeds."""

    start: Int = Field(1, ge=1, description="seeds every ticket cell runs before the first look (the paper: 1)")
    replicate: Int = Field(3, ge=1, description="seeds every dense cell runs before the first look: they estimate each family's seed variance, which single-seed tickets are judged with")
    max: Int = Field(5, ge=1, le=100, description="the most seeds a comparison gets; the error is split over its max - start + 1 looks (Bonferroni)")
    values: list[Seed] | None = Field(None, description="the seed values in the order they are used; default 1..max, so seed k's cells have the ids a fixed `seeds: [1, ..., k]` gives")

    @model_validator(mode="after")
    def _within_max(self):
        for name in ("start", "replicate"):
            if getattr(self, name) > self.max:
                raise ValueError(f"{name} {getattr(self, name)} is more than max {self.max}: at most max seeds run")
        if self.values is not None:
            if len(self.values) != self.max:
                raise ValueError(f"values lists {len(self.values)} seeds, max is {self.max}: give one value per possible seed")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"values repeats a seed: {short(self.values)}")
        return self

    def seeds(self) -> list[int]:
        return list(self.values) if self.values is not None else list(range(1, self.max + 1))


class SeedsSpec(_Spec):
    """`seeds: {adaptive: {...}}`: the mapping form of `seeds` (a list is fixed seeds)."""

    adaptive: AdaptiveSeedsSpec


# A list is fixed seeds, a mapping adaptive ones; the tag picks the branch so an error names one path, not two.
SeedsField = Annotated[Annotated[list[Seed], Tag("list")] | Annotated[SeedsSpec, Tag("mapping")],
                       Discriminator(lambda v: "mapping" if isinstance(v, (dict, SeedsSpec)) else "list")]


class MlflowTrackerSpec(_Spec):
    """Log each cell as an MLflow run (`pip install -e '.[mlflow]'`); docs/findings.md, "Watching a sweep"."""

    kind: Literal["mlflow"]
    tracking_uri: str | None = Field(None, description="MLflow tracking URI: http(s)://host:port of an `mlflow server`, sqlite:///file.db or a local folder; default MLflow's own (MLFLOW_TRACKING_URI, else its local default)")
    experiment: Name | None = Field(None, description="experiment name; default the sweep name")


class WandbTrackerSpec(_Spec):
    """Log each cell as a Weights & Biases run (`pip install -e '.[wandb]'`)."""

    kind: Literal["wandb"]
    project: str | None = Field(None, description="W&B project; default the sweep name")
    entity: str | None = Field(None, description="W&B entity (user or team); default your W&B default entity")
    mode: Literal["online", "offline", "disabled"] | None = Field(None, description="online: stream to the W&B server; offline: write runs under dir for a later `wandb sync`; default WANDB_MODE, else online")
    dir: str | None = Field(None, description="folder W&B writes its local run files into (offline runs too); default W&B's (./wandb)")


class TensorboardTrackerSpec(_Spec):
    """Write each cell's TensorBoard event files (`pip install -e '.[tensorboard]'`): <logdir>/<sweep>/<cell>."""

    kind: Literal["tensorboard"]
    logdir: str = Field("./tensorboard", description="folder of the event files (`tensorboard --logdir` it); one sub-folder per sweep, one per cell below it")


def _tracker_shorthand(v: Any) -> Any:
    """`trackers: [mlflow, tensorboard]` is `[{kind: mlflow}, {kind: tensorboard}]` (each with its defaults)."""
    return {"kind": v} if isinstance(v, str) else v


TrackerSpec = Annotated[MlflowTrackerSpec | WandbTrackerSpec | TensorboardTrackerSpec, Field(discriminator="kind"),
                        BeforeValidator(_tracker_shorthand)]
TRACKER_KINDS = ("mlflow", "wandb", "tensorboard")


class SweepSpec(_Spec):
    """A whole study: the grid of cells and how to run them."""

    name: Name = Field(description="sweep name, recorded in every trials row and naming Ray Tune's folder in the store; letters, digits, '.', '_', '-'")
    storage: Annotated[str, AfterValidator(lambda v: _storage(v))] = Field("./results", description="results store: local folder or file:// / s3:// URI; ~ is your home folder")
    pretrainings: list[PretrainingSpec] = Field(min_length=1)
    tickets: list[TicketSpec] = Field(min_length=1, description="one ticket spec, or a list of them (e.g. omp, imp and random side by side); the dense level is shared")
    data: DataSpec
    regimes: dict[Name, RegimeSpec] = Field(min_length=1, description="named fine-tuning regimes, e.g. standard and adversarial")
    eval: EvalSpec
    seeds: SeedsField = Field(default_factory=lambda: [1], description="fine-tuning seeds: a list runs every cell at each (the paper: [1]); {adaptive: {start, replicate, max}} runs start seeds (dense cells: replicate) and adds one to comparisons still inconclusive, up to max (docs/findings.md, needs verdicts.rule equivalence)")
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    search: SearchSpec = Field(default_factory=SearchSpec, description="full grid or adaptive search over sparsity levels")
    early_stop: EarlyStopSpec = Field(default_factory=EarlyStopSpec, description="stop tickets that clearly trail the dense model (status 'stopped')")
    tune: TuneSpec = Field(default_factory=TuneSpec, description="Optuna-tuned dense baselines: tune each setting's dense recipe, then hold it fixed for its tickets (docs/tuning.md)")
    verdicts: VerdictSpec = Field(default_factory=VerdictSpec, description="the rule, margin and interval settings of this study's verdicts (docs/findings.md)")
    trackers: list[TrackerSpec] = Field(default_factory=list, description="experiment trackers that receive every cell as a run while the sweep runs: mlflow (tracking_uri, experiment), wandb (project, entity, mode, dir), tensorboard (logdir); the results store stays the source of truth (docs/findings.md)")
    max_cells: Int = Field(MAX_CELLS, ge=1, description="refuse a grid of more cells than this (a typo such as 2,000,000 seeds would fill memory while the grid is listed); raise it here for a larger study")

    @field_validator("tickets", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, dict) else v

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("list at least one seed, e.g. seeds: [1], or seeds: {adaptive: {start: 1, replicate: 3, max: 5}}")
        return v

    def adaptive_seeds(self) -> AdaptiveSeedsSpec | None:
        """The adaptive section, or None for fixed seeds."""
        return self.seeds.adaptive if isinstance(self.seeds, SeedsSpec) else None

    def seed_values(self) -> list[int]:
        """Every seed a cell may run: the fixed list, or the adaptive seeds at max (the planner's full grid)."""
        a = self.adaptive_seeds()
        return a.seeds() if a is not None else list(self.seeds)

    def start_seeds(self, dense: bool) -> list[int]:
        """The seeds a cell runs before the first look: all of a fixed list; the first `start` (tickets) or
        `replicate` (dense) adaptive seeds."""
        a = self.adaptive_seeds()
        if a is None:
            return list(self.seeds)
        return a.seeds()[:a.replicate if dense else a.start]

    @model_validator(mode="after")
    def _unique_names(self) -> "SweepSpec":
        self._check_grid_size()
        if self.adaptive_seeds() is not None and self.verdicts.rule != "equivalence":
            raise ValueError(f"seeds.adaptive spends seeds on inconclusive verdicts, which only verdicts.rule equivalence has; "
                             f"set verdicts: {{rule: equivalence, margin: ...}} (got rule {self.verdicts.rule}) or list fixed seeds")
        names = [p.name for p in self.pretrainings]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"pretraining names must be unique; repeated: {sorted(dup)}")
        for rname, r in self.regimes.items():
            for ds in r.per_dataset:
                if ds not in self.data.datasets:
                    raise ValueError(f"regimes.{rname}.per_dataset names '{ds}', which is not in data.datasets {self.data.datasets}")
        if self.tune.enabled:
            self._check_tune()
        return self

    def grid_bound(self) -> int:
        """An upper bound of the number of cells, from the axis sizes alone (nothing expanded): pre-trainings x
        ticket levels x (dataset, regime, fraction) settings x seeds. Duplicates that expand() merges count here."""
        levels = sum(int(t.include_dense) + len(t.rounds if t.rounds is not None else t.sparsities or []) for t in self.tickets)
        settings = 0
        for r in self.regimes.values():
            for ds in self.data.datasets:
                over = r.per_dataset.get(ds, {}).get("data_fractions") if isinstance(r.per_dataset.get(ds), dict) else None
                settings += len(over) if isinstance(over, list) else len(r.data_fractions)
        return len(self.pretrainings) * levels * settings * len(self.seed_values())

    def _check_grid_size(self) -> None:
        n = self.grid_bound()
        if n > self.max_cells:
            raise ValueError(f"the grid has up to {n:,} cells ({len(self.pretrainings)} pre-trainings x ticket levels x "
                             f"{len(self.data.datasets)} datasets x regimes and fractions x {len(self.seed_values())} seeds), more "
                             f"than max_cells {self.max_cells:,}; shrink an axis, or set max_cells: {n} if you mean it")

    def _check_tune(self) -> None:
        t = self.tune
        fields = t.space.fields()
        if not fields:
            raise ValueError(f"tune.space: give at least one of {list(TUNE_FIELDS)} to search")
        for r in t.regimes or []:
            if r not in self.regimes:
                raise ValueError(f"tune.regimes names '{r}', which is not a regime; regimes: {sorted(self.regimes)}")
        if self.search.mode != "grid":
            raise ValueError("tune with search.mode 'extreme' is not supported yet (the two have not been tested together); "
                             "use search.mode 'grid' with tune")
        for rname in t.tuned_regimes(self.regimes):
            for ds in self.data.datasets:
                r = self.regimes[rname].for_dataset(ds)
                where = f"regime '{rname}'" + (f" on {ds}" if len(self.data.datasets) > 1 else "")
                if "attack_step_size" in fields and r.kind != "adversarial":
                    adv = sorted(n for n, x in self.regimes.items() if x.kind == "adversarial")
                    raise ValueError(f"tune.space.attack_step_size: {where} is kind standard and has no attack; set tune.regimes "
                                     f"to adversarial regimes only (here: {adv}) or drop attack_step_size")
                if t.metric_for(r.kind) == "val_ra" and not r.validate_ra:
                    raise ValueError(f"tune.metric: {where} scores trials by val_ra, but it has validate_ra: false; "
                                     "choose metric val_sa or turn validate_ra on")
                if "epochs" in fields and min(fields["epochs"].points()) <= r.val_start_epoch:
                    raise ValueError(f"tune.space.epochs: {where} validates from epoch {r.val_start_epoch} (val_start_epoch); "
                                     f"every epochs value must exceed it, got {short(fields['epochs'].points())}")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _format_errors(err: ValidationError, source: str, single_tickets: bool = False) -> str:
    lines = [f"{source}: invalid sweep spec ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = list(e["loc"])
        if single_tickets and loc[:2] == ["tickets", 0]:  # the YAML had one mapping, not a list: say its path
            loc = ["tickets", *loc[2:]]
        if loc[:1] == ["seeds"] and loc[1:2] in (["list"], ["mapping"]):  # the seeds union's tag, not a YAML key
            loc = [loc[0], *loc[2:]]
        path = ".".join(str(p)[:60] for p in loc) or "(top level)"  # a key is user text: bounded too
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (misspelt?)"
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a tagged union (trackers): say the valid tags
            ctx = e.get("ctx", {})
            got = f"got {short(ctx.get('tag'))}" if e["type"] == "union_tag_invalid" else "missing"
            key = str(ctx.get("discriminator", "kind")).strip("'")
            msg = f"'{key}' must be one of {ctx.get('expected_tags') or ', '.join(TRACKER_KINDS)}; {got}"
        if e["type"] == "literal_error":
            msg = f"{msg}; got {short(e.get('input'))}"
        lines.append(f"  at {path}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec is a YAML mapping, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_errors(e, source, isinstance(data.get("tickets"), dict))) from None
    # Names that need a registry are checked here too, so a typo fails before Ray starts.
    from raydw import names

    problems = names.check_spec(spec)
    if problems:
        raise SpecError(f"{source}: invalid sweep spec ({len(problems)} problem{'s' if len(problems) > 1 else ''})\n" + "\n".join(f"  at {p}" for p in problems))
    # Per-dataset overrides must validate too.
    for rname, r in spec.regimes.items():
        for ds in spec.data.datasets:
            try:
                r.for_dataset(ds)
            except ValidationError as e:
                raise SpecError(_format_errors(e, f"{source} (regimes.{rname}.per_dataset.{ds})")) from None
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file with raydw.safeyaml (bounded, no duplicate keys) and validate it; SpecError otherwise."""
    import yaml

    from raydw import safeyaml

    p = Path(path)
    try:
        data = safeyaml.load(p, "sweep file")
    except safeyaml.InputError as e:
        raise SpecError(str(e)) from None
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    return parse_spec(data, str(p))


def _type_name(ann) -> str:
    """A field's type as the user writes it: Num is a float, Int an int (the Annotated validators are not shown)."""
    import types
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None and args and origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def describe(model: type[BaseModel] = SweepSpec, prefix: str = "") -> list[str]:
    """Every field of the spec with its type, default and help: `raydw spec-fields` prints it."""
    import typing

    out = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = f.annotation
        default = "required" if f.is_required() else f"default {f.get_default(call_default_factory=True)!r}"
        args = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a for a in getattr(ann, "__args__", ())]
        inner = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]  # seeds' branches are Annotated
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            inner = [ann]
        tname = _type_name(ann)
        shown = tname if not inner or "|" in tname else (f"list of {inner[0].__name__}" if tname.startswith("list") else inner[0].__name__)
        out.append(f"{path}: {shown} ({default})" + (f"\n    {f.description}" if f.description else ""))
        for sub in inner:
            out += describe(sub, f"{path}.")
    return out
