"""What one cell is made of: attacks, optimizers, regimes, pre-trainings, tickets, data and evaluation."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import (Field, model_validator)

from raydw.spec.types import Bool, Int, Name, Num, Seed, SpecModel, deep_merge


class AttackSpec(SpecModel):
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


class OptimizerSpec(SpecModel):
    """SGD with momentum and a learning-rate schedule, as in every script of the paper."""

    lr: Num = Field(description="initial learning rate", gt=0)
    momentum: Num = Field(0.9, ge=0, lt=1)
    weight_decay: Num = Field(5e-4, ge=0, description="L2 on all parameters (the paper's downstream scripts use 5e-4)")
    schedule: Literal["constant", "multistep", "cosine"] = Field("multistep", description="multistep: x gamma at each milestone epoch; cosine: T_max = epochs")
    milestones: list[Int] = Field(default_factory=list, description="epochs at which multistep multiplies lr by gamma")
    gamma: Num = Field(0.1, gt=0, le=1)


class RegimeSpec(SpecModel):
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
        merged = deep_merge(base, self.per_dataset.get(dataset, {}))
        return RegimeSpec.model_validate(merged)


class RecipeSpec(SpecModel):
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


class PretrainingSpec(SpecModel):
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


class ImpSpec(SpecModel):
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


class TicketSpec(SpecModel):
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


class DataSpec(SpecModel):
    """Downstream data: which datasets, how they are split, transformed and sub-sampled."""

    datasets: list[str] = Field(min_length=1, description="downstream dataset names (raydw.data registry)")
    root: str | None = Field(None, description="local folder holding torchvision-format files (CIFAR, SVHN); not needed for packaged data")
    protocol: Literal["paper", "native"] = Field("native", description="paper: upsample to 224 with RandomResizedCrop+flip, eval Resize256+CenterCrop224; native: the dataset's own size")
    fraction_method: Literal["first_n", "stratified"] = Field("first_n", description="first_n: the paper's first N pool indices; stratified: class-balanced, seeded")
    normalization: Literal["downstream", "pretraining"] = Field("downstream", description="input statistics inside the model: the downstream dataset's (the paper's code) or the pre-training's")


class EvalSpec(SpecModel):
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


class EarlyStopSpec(SpecModel):
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


class SearchSpec(SpecModel):
    """Which ticket levels run: the full grid, or an adaptive search for each group's extreme double-win level."""

    mode: Literal["grid", "extreme"] = Field("grid", description="grid: every level; extreme: dense first, then the levels raydw.planning.search proposes per (pre-training, dataset, fraction, ticket spec) from finished verdicts (docs/search.md)")
    verify: Literal["none", "full"] = Field("none", description="extreme: afterwards run the remaining levels too, to test the answer")
    rule: Literal["strict", "loose"] = Field("strict", description="which double-win steers the search: strict = all three metrics (verdicts' reading 'full'), loose = SA std and RA adv (reading 'loose'); the comparison is always ticket >= dense")


