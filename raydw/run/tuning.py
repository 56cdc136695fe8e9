"""Optuna-tuned dense baselines (docs/tuning.md): one Ray Tune Tuner with OptunaSearch (TPE, seeded) per group.

A group is (pre-training, dataset, regime, data fraction) (`raydw.cells.TuneGroup`). Each tuning trial is the
group's dense cell run with a candidate recipe, exactly like a sweep cell: a Tune trial that drives one Ray Train
`TorchTrainer` (`raydw.run.trials.cell_trial`), whose `trials` row is stored with `phase = "tune"`. The trial then
reports one score to Tune, the dense run's best validation-epoch value (val_sa_best or val_ra_best; a failed run
scores 0). When the budget is spent, the best done trial's recipe is written to the `recipes` table; the sweep
then runs the dense cell and every ticket of the group with it (the fair protocol: tickets never get a tuned
recipe of their own).

Rerun is resume: stored tuning trials are handed to Optuna as evaluated points (never run again) and only the rest
of the budget runs; a group with a stored recipe is never tuned again.
"""
from __future__ import annotations

import datetime as dt
import json
import math

from ray import tune

from raydw import trackers
from raydw.cells import Cell, TuneGroup, normalize_recipe, recipe_id
from raydw.run import tuner
from raydw.run.trials import cell_trial
from raydw.planning.plan import StoreView
from raydw.run.jobs import CellJob
from raydw.run.rows import CellResult, cell_row
from raydw.spec import DistSpec, SweepSpec
from raydw.store import Store, config_json

OBJECTIVE = "objective"  # what a tuning trial reports to Tune (maximized)
FAILED_SCORE = 0.0  # a failed (e.g. diverged) trial scores the worst accuracy


def stored_trials(store: Store, names: list[str] | None = None) -> dict[str, list[dict]]:
    """tune_id -> its tuning trials in the store (cell_id, status, recipe, val_sa_best, val_ra_best, finished_at),
    oldest first; `names`: read only these trials files (those a group's tuning just wrote)."""
    t = store.read_table("trials", names, columns=["cell_id", "status", "phase", "tune_id", "config", "val_sa_best",
                                                   "val_ra_best", "finished_at"]).to_pylist()
    out: dict[str, list[dict]] = {}
    for r in (r for r in t if r["phase"] == "tune"):
        r["recipe"] = json.loads(r["config"])["tune_trial"]["recipe"]
        out.setdefault(r["tune_id"], []).append(r)
    oldest_first = lambda r: (r["finished_at"] is None, r["finished_at"] or 0, r["cell_id"])  # noqa: E731
    return {k: sorted(v, key=oldest_first) for k, v in out.items()}


def score(row: dict | None, metric: str) -> float:
    """A trial's score: its best validation-epoch value of the metric, FAILED_SCORE if it did not finish."""
    v = None if row is None or row.get("status") != "done" else row.get(f"{metric}_best")
    return FAILED_SCORE if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def choose(rows: list[dict], metric: str) -> dict | None:
    """The best done trial (highest score; a tie keeps the earlier trial), or None when none finished."""
    best = None
    for r in rows:  # in finishing order: `>` keeps the earlier of two equal scores
        if r["status"] == "done" and (best is None or score(r, metric) > score(best, metric)):
            best = r
    return best


def optuna_space(spec: SweepSpec) -> dict:
    import optuna.distributions as od  # optuna only for `tune:` (a sweep without it never loads it)

    def dist(name: str, d: DistSpec):
        if d.kind == "choice":
            return od.CategoricalDistribution([int(v) for v in d.values] if name == "epochs" else list(d.values))
        if d.kind == "int":
            return od.IntDistribution(int(d.low), int(d.high))
        return od.FloatDistribution(d.low, d.high, log=d.kind == "loguniform")

    return {k: dist(k, d) for k, d in spec.tune.space.fields().items()}


def run_tuning(spec: SweepSpec, store: Store, groups: list[TuneGroup], builder, concurrency: int,
               out=print) -> dict[str, dict]:
    """Tune each group that has no stored recipe; returns tune_id -> its recipes row (None where every trial failed).
    `builder`: the sweep's JobBuilder (a candidate is the group's dense cell job with the sampled recipe)."""
    chosen: dict[str, dict] = {}
    stored, seen = stored_trials(store), set(store.names("trials"))  # one scan; each group then reads only its new rows
    view = StoreView.read(store, ("pretrained",))  # the groups' pre-trained models (their kind goes on each row)
    for g in groups:
        rows = stored.get(g.tune_id, [])
        left = spec.tune.num_samples - len(rows)
        out(f"tune {g.label()}: {len(rows)} of {spec.tune.num_samples} trials stored, {max(left, 0)} to run "
            f"(Optuna TPE, seed {spec.tune.seed}, {spec.tune.n_startup()} random startup trials; maximize {g.metric})")
        if left > 0:
            _tune_one(spec, store, g, rows, left, builder.cell(g.base, view), concurrency)
            new = sorted(set(store.names("trials")) - seen)
            seen.update(new)  # this group's rows again too: a repeated candidate (a `choice` space) rewrites its file
            rows = stored_trials(store, [r["cell_id"] for r in rows] + new).get(g.tune_id, [])
        chosen[g.tune_id] = write_recipe(spec, store, g, rows, out)
    return chosen


def write_recipe(spec: SweepSpec, store: Store, g: TuneGroup, rows: list[dict], out=print) -> dict | None:
    import optuna  # only for `tune:`, as above

    best = choose(rows, g.metric)
    if best is None:
        out(f"  {g.label()}: every tuning trial failed; no recipe, so the group's cells do not run (see "
            f"raydw.results.load(uri, phase='tune'); change tune.space, which makes a new group, to tune again)")
        return None
    rec = normalize_recipe(best["recipe"])
    row = {"tune_id": g.tune_id, "sweep": spec.name, "pretraining": g.base.pretraining, "pretrained_id": g.base.pretrained_id,
           "dataset": g.base.dataset, "regime": g.base.regime, "regime_kind": g.base.regime_kind,
           "data_fraction": g.base.data_fraction, "recipe": config_json(rec), "recipe_id": recipe_id(rec),
           "metric": g.metric, "value": score(best, g.metric), "trials": len(rows),
           "failed": sum(r["status"] != "done" for r in rows), "best_cell_id": best["cell_id"], "sampler": "TPESampler",
           "optuna_seed": spec.tune.seed, "startup_trials": spec.tune.n_startup(),
           "space": config_json(spec.tune.space.model_dump(mode="json", exclude_none=True)),
           "base_regime": config_json(g.base.regime_spec.model_dump(mode="json")), "optuna_version": optuna.__version__,
           "finished_at": dt.datetime.now(dt.timezone.utc)}
    store.write_row("recipes", row)
    out(f"  {g.label()}: recipe {row['recipe']} ({g.metric} {row['value']:.3f}, best of {len(rows)} trials"
        + (f", {row['failed']} failed" if row["failed"] else "") + f"); recipe_id {row['recipe_id']}")
    return row


def _tune_one(spec: SweepSpec, store: Store, g: TuneGroup, rows: list[dict], left: int, job: CellJob,
              concurrency: int) -> None:
    # optuna is imported here, not at the top: `raydw sweep` without `tune:` never loads it.
    import optuna
    from ray.tune.search.optuna import OptunaSearch


    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created; progress comes from _progress
    space = optuna_space(spec)
    # Stored trials are told to Optuna as finished (never run again), so TPE continues from them.
    points = [{k: r["recipe"][k] for k in space} for r in rows]
    searcher = OptunaSearch(space=space, metric=OBJECTIVE, mode="max",
                            sampler=optuna.samplers.TPESampler(seed=spec.tune.seed, n_startup_trials=spec.tune.n_startup()),
                            points_to_evaluate=points or None,
                            evaluated_rewards=[score(r, g.metric) for r in rows] or None)
    def lines(trial) -> list:
        r = trial.last_result or {}
        rec = ", ".join(f"{k}={trial.config[k]:.4g}" for k in trial.config.get("fields", []))
        what = (f"{g.metric} {r[OBJECTIVE]:.3f}" if r.get("status") == "done"
                else f"FAILED ({str(r.get('error') or 'see its trials row')[:120]}), scored {FAILED_SCORE}")
        took = r.get("time_total_s")
        return [(g.label(), f"{rec} -> {what}" + (f" ({took:.0f} s)" if took else ""))]

    tuner.fit(tuner.run_name(spec.name, f"tune-{g.tune_id}"), store, concurrency,
              [tuner.Progress(spec.tune.num_samples, lines, done=len(rows), prefix="  ", tag="tune "),
               *trackers.callbacks(spec.trackers, spec.name, tuner.trial_jobs)],
              searcher, num_samples=left, entry=_trial_entry,
              param_space={"job": job, "group": g, "fields": sorted(space)})


def _trial_entry(config: dict) -> None:
    tune.report(run_candidate(config))


def run_candidate(config: dict) -> dict:
    """One tuning trial: the group's dense cell with the sampled recipe, run by cell_trial; returns its score."""
    job = tuner.candidate(config)
    store = Store(job.run.storage)
    row = store.get("trials", job.cell.cell_id)
    if row is None or row.get("status") != "done":  # the same candidate twice (a choice space) runs once
        cell_trial(job)
        row = store.get("trials", job.cell.cell_id)
    return {OBJECTIVE: score(row, config["group"].metric), "status": (row or {}).get("status") or "failed",
            "cell_id": job.cell.cell_id, "error": str((row or {}).get("error") or "")[-300:]}


def reuse_best_trials(spec: SweepSpec, store: Store, cells: list[Cell], done: set[str], builder,
                      out=print) -> set[str]:
    """The ids of main dense cells stored here from their group's best tuning trial instead of being trained again.

    A tuned group's dense cell at the tuning seed is that trial run once more: the chosen recipe is the trial's,
    and seed, data, evaluation and code path are the same (their canonical configs differ only in the `tune_trial`
    / `tuned` tags, which is checked). Its epoch rows are copied first and its trials row last (a row means the
    cell is complete): the cell's job (from `builder`, the sweep's JobBuilder) with the trial's stored result, its
    run's provenance and `reused_from` naming the trial. Other seeds train.
    """
    recipes = {r["tune_id"]: r for r in store.read_table("recipes", columns=["tune_id", "best_cell_id"]).to_pylist()}
    epoch_files: list[str] | None = None
    reused: set[str] = set()
    view = StoreView.read(store, ("pretrained",))  # the pre-trained model's kind goes on each row
    for c in cells:
        if c.ticket_method != "dense" or c.recipe_id is None or c.cell_id in done:
            continue
        best = (recipes.get(c.tune_id) or {}).get("best_cell_id")
        trial = store.get("trials", best) if best else None
        if trial is None or trial.get("status") != "done":
            continue
        as_trial = {k: v for k, v in json.loads(trial["config"]).items() if k != "tune_trial"}
        as_cell = {k: v for k, v in json.loads(config_json(c.canonical)).items() if k != "tuned"}
        if config_json(as_trial) != config_json(as_cell):
            continue  # another seed (or a trial from another spec): this cell trains
        epoch_files = store.names("epochs") if epoch_files is None else epoch_files
        names = [n for n in epoch_files if n.startswith(f"{best}.e")]
        for name, row in zip(names, store.read_table("epochs", names).to_pylist()):
            store.write_row("epochs", {**row, "cell_id": c.cell_id}, name=f"{c.cell_id}{name[len(best):]}")
        store.write_row("trials", cell_row(builder.cell(c, view), CellResult.from_row(trial), trial.get("wall_s"),
                                           reused_from=trial))
        reused.add(c.cell_id)
        out(f"  {c.label()}: the group's best tuning trial {best} is this cell (same recipe, seed and data): "
            "its rows are stored for it instead of training it again")
    return reused
