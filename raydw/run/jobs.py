"""The typed jobs a sweep runs, and the one place each is built.

A job is a frozen value that travels whole from the driver to the Tune trial and on to every Ray Train worker
(open_lth's Desc): a `CellJob` holds its cell (with the evaluation its id covers), its mask, its index set, its
early-stop plan and the sweep's `RunContext`; `rows.cell_row(job, ...)` turns it into the cell's trials row.
No job is a dict, and none is assembled anywhere but in `JobBuilder`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from raydw.cells import Cell, pretrained_id
from raydw.data.splits import index_set
from raydw.provenance import git_commit
from raydw.planning.plan import ImpItem, ImpNeed, StoreView
from raydw.spec import ImpSpec, PretrainingSpec, RecipeSpec, ResourceSpec, SweepSpec, TicketSpec
from raydw.store import Store, config_json
from raydw.tickets import registry
from raydw.tickets.registry import params_json
from raydw.ids import digest

if TYPE_CHECKING:  # a job module free of torch: every Tune trial unpickles its job, and torch cost it ~1.4 CPU-s
    from raydw.train.probe import Probe


@dataclass(frozen=True)
class RunContext:
    """Where and how every job of one sweep runs: set once per sweep, shared by all its jobs."""

    storage: str  # the store's URI
    sweep: str  # the spec's name (recorded on each row)
    resources: ResourceSpec
    data_root: str | None  # downstream and source-task files (--data-root, else data.root)
    git_commit: str | None  # the driver's code version (recorded on each row)


@dataclass(frozen=True)
class EarlyStop:
    """When a ticket cell stops: its validation trails its dense baseline's by more than `margin` after `grace`."""

    dense_cell_id: str
    margin: float
    metrics: tuple[str, ...]
    grace: int  # epochs before the first comparison


class _SweepResources:
    """A job that runs on the sweep's `resources:` (an ImpJob carries its own: tickets.imp.workers / CPUs)."""

    @property
    def resources(self) -> ResourceSpec:
        return self.run.resources


@dataclass(frozen=True)
class CellJob(_SweepResources):
    """One downstream cell: fine-tune the pre-trained model under the mask, evaluate, store its rows."""

    cell: Cell
    run: RunContext
    mask_id: str | None  # None: the dense model
    sparsity: float  # the mask's measured sparsity (0 for dense)
    index_set_id: str  # the training indices of its data fraction (index_sets table)
    pretraining_kind: str | None  # standard / fast / pgd (the pretrained row's kind), recorded on the row
    early_stop: EarlyStop | None = None

    @property
    def train_name(self) -> str:
        """The Train run's name: the cell's content id, so a rerun restores it and continues from its last epoch."""
        return f"cell-{self.cell.cell_id}"

    def for_cell(self, cell: Cell) -> "CellJob":
        """The same job for another cell of the same setting (a tuning candidate of this dense cell)."""
        return replace(self, cell=cell)


@dataclass(frozen=True)
class PackJob(_SweepResources):
    """Several ready cells run one after another in one Train run (`resources.cells_per_run`)."""

    cells: tuple[CellJob, ...]

    @property
    def run(self) -> RunContext:
        return self.cells[0].run

    @property
    def train_name(self) -> str:
        """Named by its cells, so a rerun with the same pack continues its half-done cell."""
        ids = sorted(j.cell.cell_id for j in self.cells)
        return "pack-" + digest(",".join(ids))


@dataclass(frozen=True)
class PretrainJob(_SweepResources):
    """Stage 1: train one recipe on its source task; rank 0 stores the weights."""

    run: RunContext
    pretrained_id: str
    name: str
    recipe: RecipeSpec

    @property
    def train_name(self) -> str:
        return f"pretrain-{self.pretrained_id}"


@dataclass(frozen=True)
class ImpJob:
    """Stage 2 for IMP: every round of one (pre-training, IMP spec), each stored the moment it exists."""

    run: RunContext
    pretrained_id: str
    name: str  # the pre-training's name
    tickets: TicketSpec
    params: dict  # the masks' store key (registry: Iterative.params)
    resources: ResourceSpec  # the sweep's, with tickets.imp's own workers / CPUs

    @property
    def train_name(self) -> str:
        return f"imp-{self.pretrained_id}-{digest(config_json(self.params), 8)}"

    @property
    def rounds(self) -> int:
        return registry.imp_rounds_needed(self.tickets)


@dataclass(frozen=True)
class ProbeJob:
    """A preflight probe (raydw sweep --preflight): one path's real job, run shrunk to a few timed steps in the
    preflight's scratch store (the job's RunContext points there), on resources that fit the cluster."""

    job: CellJob | ImpJob | PretrainJob
    probe: Probe
    path_id: str
    label: str

    @property
    def resources(self) -> ResourceSpec:
        """The job's, which the preflight fitted to the cluster (raydw.run.preflight.fitted)."""
        return self.job.resources

    @property
    def run(self) -> RunContext:
        return self.job.run

    @property
    def train_name(self) -> str:
        return f"probe-{self.job.train_name}"


Job = CellJob | PackJob | PretrainJob | ImpJob | ProbeJob


def batch_size(job: CellJob | ImpJob | PretrainJob) -> int:
    """The global batch of a job's training steps (split across its Train workers)."""
    if isinstance(job, CellJob):
        return job.cell.regime_spec.batch_size
    return job.recipe.batch_size if isinstance(job, PretrainJob) else (job.tickets.imp or ImpSpec()).batch_size


def _absolute(root: str | None) -> str | None:
    """A relative data folder (the paper's ./data) is relative to where the driver runs; a Ray Train worker runs in
    a working directory of Ray's own, where it would not be found. URIs are left as they are."""
    if root is None or "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def index_key(c: Cell) -> tuple:
    """What a data fraction's training indices depend on (a cell's index set is shared by every cell with its key)."""
    return (c.dataset, c.data_fraction, c.fraction_method, c.seed if c.fraction_method == "stratified" else 0)


class JobBuilder:
    """Every job of one sweep, built from its spec and store: the one place a job is made.

    Masks of omp / random / import tickets are computed the first time a cell of that (pre-training, ticket spec)
    is built (by then its pre-trained model is stored); IMP rounds are looked up as their job stores them."""

    def __init__(self, spec: SweepSpec, store: Store, data_root: str | None = None, out=print):
        # `out` is the driver's console: Tune pickles its searcher (and so this builder) with the experiment state,
        # and a console function need not pickle (print, once replaced by another library, does not).
        self.spec, self.store, self.out = spec, store, out
        self.run = RunContext(storage=store.uri, sweep=spec.name, resources=spec.resources,
                              data_root=_absolute(data_root or spec.data.root), git_commit=git_commit())
        self._masks: dict[tuple, dict[float, dict]] = {}
        self._index: dict[tuple, str] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "out": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, out=state.get("out") or print)

    # stage 1 and 2 ---------------------------------------------------------------------------------------------
    def pretrain(self, p: PretrainingSpec) -> PretrainJob:
        return PretrainJob(self.run, pretrained_id(p), p.name, p.recipe)

    def imp(self, item: ImpItem) -> ImpJob:
        """The IMP job of one plan item (its rounds are stored as found; it resumes after the last stored one)."""
        t = item.tickets
        imp = t.imp or ImpSpec()  # an IMP job may ask for its own resources (ImageNet: DDP, JPEG decoding)
        own = {"workers_per_cell": imp.workers, "cpus_per_worker": imp.cpus_per_worker}
        resources = self.spec.resources.model_copy(update={k: v for k, v in own.items() if v is not None})
        if imp.root is not None:  # not part of the masks' params (RUN_ONLY): resolving it changes no mask's identity
            t = t.model_copy(update={"imp": imp.model_copy(update={"root": _absolute(imp.root)})})
        return ImpJob(self.run, item.pretrained_id, item.pretraining.name, t, item.params, resources)

    # stage 3 ---------------------------------------------------------------------------------------------------
    def index_sets(self, cells: list[Cell]) -> None:
        """Persist each data fraction's training indices once; every cell with the same key reuses them."""
        for c in cells:
            self._index_set(c)

    def early_stop(self, c: Cell, dense_cell_id: str | None) -> EarlyStop | None:
        """When a ticket cell stops, compared with its dense baseline (the plan's Needs.cell), early stopping on."""
        es = self.spec.early_stop
        if not es.enabled or dense_cell_id is None:
            return None
        return EarlyStop(dense_cell_id, es.margin, tuple(es.metrics), es.grace_for(c.regime_spec))

    def cell(self, c: Cell, view: StoreView, dense_cell_id: str | None = None) -> CellJob:
        """`view`: what the store holds now (the IMP round's mask row, the pre-trained model's kind)."""
        mask = self._mask(c, view)
        return CellJob(c, self.run, mask["mask_id"], mask["sparsity"], self._index_set(c), view.pretrained.get(c.pretrained_id),
                       self.early_stop(c, dense_cell_id))

    def _index_set(self, c: Cell) -> str:
        key = index_key(c)
        if key not in self._index:
            iid, idx = index_set(*key, root=self.run.data_root)  # stratified draws read the labels there
            if self.store.get("index_sets", iid) is None:
                self.store.write_row("index_sets", {"index_set_id": iid, "dataset": key[0], "fraction": key[1],
                                                    "method": key[2], "seed": key[3], "n": len(idx), "indices": idx.tolist()})
            self._index[key] = iid
        return self._index[key]

    def _mask(self, c: Cell, view: StoreView) -> dict:
        if c.ticket_method == "dense":
            return {"mask_id": None, "sparsity": 0.0}
        t = self.spec.tickets[c.ticket_index]
        if registry.get(c.ticket_method).needs_job:
            p = registry.get("imp").params(t, c.pretraining)
            row = view.imp_round(ImpNeed(c.pretrained_id, params_json(p), c.ticket_round))
            if row is None:
                raise RuntimeError(f"IMP round {c.ticket_round} of {c.pretraining} is not in the store; its IMP job did not finish")
            return row
        key = (c.pretrained_id, c.ticket_index)
        if key not in self._masks:
            from raydw.tickets.make import ensure_masks  # torch: only a driver that makes masks needs it, no trial

            p = next(p for p in self.spec.pretrainings if p.name == c.pretraining)
            self._masks[key] = ensure_masks(self.store, p, t, log=self.out)
        return self._masks[key][c.target_sparsity]
