"""The sweep as a whole: resources, verdicts, seeds, trackers and SweepSpec, which holds the parts (tuning:
raydw.spec.tune)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator)

from raydw.bounded import short
from raydw.spec.parts import (RegimeSpec, PretrainingSpec, TicketSpec, DataSpec, EvalSpec, EarlyStopSpec, SearchSpec)
from raydw.spec.tune import TUNE_FIELDS, DistSpec, TuneSpaceSpec, TuneSpec  # noqa: F401 - the first two: their old home
from raydw.spec.types import MAX_CELLS, Int, Name, Num, Seed, SpecModel, check_storage


class ResourceSpec(SpecModel):
    """What one cell asks of the cluster."""

    workers_per_cell: Int = Field(1, ge=1, description="Ray Train workers per cell (DDP when > 1)")
    gpus_per_worker: Num = Field(0, ge=0, description="GPUs per Train worker (0 = CPU)")
    cpus_per_worker: Num = Field(1, gt=0, description="CPUs per Train worker")
    max_concurrent_cells: Int | None = Field(None, ge=1, description="cells running at once; default: as many as the cluster's CPUs/GPUs fit")
    max_failures: Int = Field(2, ge=0, description="Ray Train restarts of a cell's workers after a crash (each resumes from the last epoch)")
    cells_per_run: Int = Field(1, ge=1, description="cells run one after another in one Ray Train run (a 'pack'): the run's start-up (~7-15 s) is paid once per pack; worth it when cells take under a few minutes (docs/performance.md)")
    torch_threads: Int = Field(1, ge=1, description="intra-op threads per CPU worker")
    amp: Literal["bf16", "fp32"] = Field("bf16", description="precision on CUDA devices for training, attack crafting and evaluation: bf16 autocast, or fp32 as the paper's reference code runs; CPUs always run fp32. Recorded per cell (trials.amp); not part of the cell id (docs/protocol.md)")


class VerdictSpec(SpecModel):
    """How this study's verdicts are decided, fixed before the results are seen (docs/findings.md): the sweep's
    end-of-run table, its report and `raydw verdicts --spec` use it; the command-line flags override it."""

    rule: Literal["strict", "tol", "equivalence"] = Field("strict", description="strict: ticket >= dense (the paper's); tol: >= dense - tol x dense std over seeds (Chen et al. CVPR 2021); equivalence: two one-sided tests on the interval of ticket - dense (match / no match / inconclusive)")
    tol: Num = Field(1.0, ge=0, description="tol: dense standard deviations of slack (needs >= 2 dense seeds)")
    margin: Num = Field(1.0, gt=0, le=100, description="equivalence: the margin in accuracy points (0-100): a metric matches when the interval's lower bound is above -margin")
    level: Num = Field(0.95, gt=0.5, lt=1, description="confidence level of the intervals (two-sided); each one-sided test of equivalence is at (1 - level) / 2")
    resamples: Int = Field(2000, ge=100, le=100_000, description="bootstrap resamples (seeds, then test images)")
    seed: Seed = Field(0, description="seed of the bootstrap (the intervals are reproducible)")
    seed_variance: Literal["pooled", "per_comparison"] = Field("pooled", description="seed part of each interval: pooled = the seed spread of the metric's family (dataset x regime x fraction x SA/RA, every pre-training and level), single-seed comparisons included, where Bartlett's test finds the spreads compatible; per_comparison = each comparison's own seeds, none at one seed (docs/findings.md)")


class AdaptiveSeedsSpec(SpecModel):
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
        if self.start < 2 and self.replicate < 2:  # no family variance and no own spread: no look could decide
            raise ValueError(f"start {self.start} and replicate {self.replicate} leave round 1 with no replicated cell, so no "
                             "verdict could carry the seed variation and the first look would decide nothing; set "
                             "replicate: 2 or more (the dense cells' seeds before the first look; 3 in sweeps/demo-adaptive.yaml)")
        if self.values is not None:
            if len(self.values) != self.max:
                raise ValueError(f"values lists {len(self.values)} seeds, max is {self.max}: give one value per possible seed")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"values repeats a seed: {short(self.values)}")
        return self

    def seeds(self) -> list[int]:
        return list(self.values) if self.values is not None else list(range(1, self.max + 1))


class SeedsSpec(SpecModel):
    """`seeds: {adaptive: {...}}`: the mapping form of `seeds` (a list is fixed seeds)."""

    adaptive: AdaptiveSeedsSpec


# A list is fixed seeds, a mapping adaptive ones; the tag picks the branch so an error names one path, not two.
SeedsField = Annotated[Annotated[list[Seed], Tag("list")] | Annotated[SeedsSpec, Tag("mapping")],
                       Discriminator(lambda v: "mapping" if isinstance(v, (dict, SeedsSpec)) else "list")]


class MlflowTrackerSpec(SpecModel):
    """Log each cell as an MLflow run (`pip install -e '.[mlflow]'`); docs/findings.md, "Watching a sweep"."""

    kind: Literal["mlflow"]
    tracking_uri: str | None = Field(None, description="MLflow tracking URI: http(s)://host:port of an `mlflow server`, sqlite:///file.db or a local folder; default MLflow's own (MLFLOW_TRACKING_URI, else its local default)")
    experiment: Name | None = Field(None, description="experiment name; default the sweep name")


class WandbTrackerSpec(SpecModel):
    """Log each cell as a Weights & Biases run (`pip install -e '.[wandb]'`)."""

    kind: Literal["wandb"]
    project: str | None = Field(None, description="W&B project; default the sweep name")
    entity: str | None = Field(None, description="W&B entity (user or team); default your W&B default entity")
    mode: Literal["online", "offline", "disabled"] | None = Field(None, description="online: stream to the W&B server; offline: write runs under dir for a later `wandb sync`; default WANDB_MODE, else online")
    dir: str | None = Field(None, description="folder W&B writes its local run files into (offline runs too); default W&B's (./wandb)")


class TensorboardTrackerSpec(SpecModel):
    """Write each cell's TensorBoard event files (`pip install -e '.[tensorboard]'`): <logdir>/<sweep>/<cell>."""

    kind: Literal["tensorboard"]
    logdir: str = Field("./tensorboard", description="folder of the event files (`tensorboard --logdir` it); one sub-folder per sweep, one per cell below it")


def _tracker_shorthand(v: Any) -> Any:
    """`trackers: [mlflow, tensorboard]` is `[{kind: mlflow}, {kind: tensorboard}]` (each with its defaults)."""
    return {"kind": v} if isinstance(v, str) else v


TrackerSpec = Annotated[MlflowTrackerSpec | WandbTrackerSpec | TensorboardTrackerSpec, Field(discriminator="kind"),
                        BeforeValidator(_tracker_shorthand)]
TRACKER_KINDS = ("mlflow", "wandb", "tensorboard")


class SweepSpec(SpecModel):
    """A whole study: the grid of cells and how to run them."""

    name: Name = Field(description="sweep name, recorded in every trials row and naming Ray Tune's folder in the store; letters, digits, '.', '_', '-'")
    storage: Annotated[str, AfterValidator(lambda v: check_storage(v))] = Field("./results", description="results store: local folder or file:// / s3:// URI; ~ is your home folder")
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


