"""Where a sweep stands: cells done, failed, stopped and missing, compute spent and an estimate of time left.

Reads the trials table (the sweep's `main` rows; tuning trials are counted apart) and, given a spec, the cells it
expands to, with the store's tuned recipes applied as `raydw sweep` plans them (docs/tuning.md). Torch- and
Ray-free, safe to run while a sweep writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from raydw.findings.results import load


@dataclass
class SweepStatus:
    done: int
    failed: int
    stopped: int
    other: int  # rows whose status is none of the above (a newer writer's status word)
    total: int | None  # cells of the spec; None without a spec
    missing: int | None  # spec cells with no row yet
    outside_spec: int  # rows of the store that the spec does not ask for
    hours: dict[str, float]  # 'GPU' / 'CPU' -> sum(wall_s * workers) / 3600
    mean_wall_s: float | None  # per done cell; None where no done row holds wall_s
    left_s: float | None  # serial wall seconds for the cells not yet done
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (cell_id, label, first error line)
    # Tuning (spec with `tune:` on; docs/tuning.md). None / 0 without a spec or with tuning off.
    groups: int | None = None  # tuned groups of the spec
    groups_tuned: int = 0  # ... with a stored recipe
    groups_spent: int = 0  # ... without a recipe although their whole budget of trials is stored (every trial failed)
    tune_trials: int = 0  # tuning trials (phase "tune") stored for the spec's groups
    tune_budget: int = 0  # num_samples x groups
    waiting: int = 0  # spec cells waiting for their group's tuned recipe ("tune first"; counted in missing)
    to_run: int | None = None  # what the next `raydw sweep` of the spec runs (raydw.planning.plan.Plan.todo)
    not_final: int | None = None  # spec cells without a final row (waiting ones included)
    # Adaptive seeds (raydw.planning.seedplan): cells a later round may ask for, cells no open verdict needs, where it stands.
    more: int = 0
    not_needed: int = 0
    seeds: str | None = None


def _label(r: dict) -> str:
    lvl = "dense" if r.get("ticket_method") == "dense" else f"{r.get('ticket_method')} s={r.get('target_sparsity', float('nan')):.3f}"
    return f"{r.get('pretraining')} {lvl} {r.get('dataset')} {r.get('regime')} f={r.get('data_fraction', float('nan')):g} seed={r.get('seed')}"


def _hours(df: pd.DataFrame) -> dict[str, float]:
    """Device-hours by kind: a worker that ran on a GPU counts as GPU time, anything else as CPU time."""
    if df.empty:
        return {}
    workers = df["workers"].fillna(1).astype(float)
    spent = df["wall_s"].fillna(0).astype(float) * workers / 3600
    kind = df["device"].fillna("cpu").astype(str).str.lower().map(lambda d: "CPU" if d.startswith("cpu") else "GPU")
    return {k: float(v) for k, v in spent.groupby(kind).sum().items()}


def _wall_by_setting(done: pd.DataFrame) -> dict[tuple, float]:
    """Mean wall seconds per (regime, data fraction): adversarial cells cost several times a standard one."""
    if done.empty:
        return {}
    return done.groupby(["regime", "data_fraction"])["wall_s"].mean().dropna().to_dict()


def _estimate_left(todo, done: pd.DataFrame) -> float | None:
    """Serial wall seconds for the cells still to run, from the mean of done cells of the same setting."""
    if done.empty or done["wall_s"].isna().all():
        return None
    by, overall = _wall_by_setting(done), float(done["wall_s"].mean())
    return float(sum(by.get((c.regime, c.data_fraction), overall) for c in todo))


def _tuning(uri: str, p) -> dict:
    """Counts of the spec's tuning groups, from its plan: tuned, spent without a recipe, and their tuning trials."""
    return {"groups": len(p.tuning), "groups_tuned": sum(t.state == "tuned" for t in p.tuning),
            "groups_spent": sum(t.state == "spent" for t in p.tuning), "tune_trials": sum(t.trials for t in p.tuning),
            "tune_budget": sum(t.budget for t in p.tuning), "waiting": len(p.waiting)}


def collect(uri: str, spec=None) -> SweepStatus:
    """The numbers behind `summary`; `spec` is a SweepSpec or a path to one.

    With `tune:` on, the cells are planned as `raydw sweep` plans them: the store's tuned recipes applied. A cell
    whose group has no recipe yet is counted as missing and waiting ("tune first"): its id is not known until the
    recipe is, so a row under its untuned id (an untuned run of the same grid) is not taken for it.
    """
    df = load(uri, "trials")
    cells, tune, p = None, {}, None
    if spec is not None:
        from raydw.planning.plan import Plan
        from raydw.spec import load_spec
        from raydw.store import Store

        spec = load_spec(spec) if not hasattr(spec, "pretrainings") else spec
        p = Plan.of(spec, Store(uri))  # the sweep's own plan: the same cells, the same "done"
        cells = p.cells
        if spec.tune.enabled:
            tune = _tuning(uri, p)
        ids = {c.cell_id for c in cells} - p.waiting
        outside = int((~df["cell_id"].isin(ids)).sum())
        df = df[df["cell_id"].isin(ids)]
    counts = df["status"].value_counts()
    done = df[df["status"] == "done"]
    later = set(p.not_needed) | {c.cell_id for c in p.more} if p is not None else set()  # adaptive seeds only
    todo = [c for c in cells if c.cell_id not in p.done and c.cell_id not in later] if cells is not None else []
    adaptive = {} if p is None or p.seeds is None else \
        {"more": len(p.more), "not_needed": len(p.not_needed), "seeds": p.seeds.describe()}
    bad = df[df["status"].isin(["failed", "stopped"])].to_dict("records")
    return SweepStatus(
        done=int(counts.get("done", 0)), failed=int(counts.get("failed", 0)), stopped=int(counts.get("stopped", 0)),
        other=int(len(df) - counts.get("done", 0) - counts.get("failed", 0) - counts.get("stopped", 0)),
        total=len(cells) if cells is not None else None,
        missing=len([c for c in cells if c.cell_id not in set(df["cell_id"])]) if cells is not None else None,
        outside_spec=outside if cells is not None else 0,
        hours=_hours(df), mean_wall_s=float(done["wall_s"].mean()) if done["wall_s"].notna().any() else None,
        left_s=_estimate_left(todo, done) if cells is not None else None,
        failures=[(r["cell_id"], _label(r), _first_line(r.get("error"), r["status"])) for r in bad], **tune,
        to_run=len(p.todo) if p is not None else None, not_final=len(todo) if p is not None else None, **adaptive,
    )


def _first_line(err, status: str) -> str:
    text = str(err).strip() if isinstance(err, str) else ""
    return text.splitlines()[0] if text else f"({status}, no error recorded)"


def duration(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def render(st: SweepStatus, uri: str) -> str:
    head = f"store {uri}: {st.done} done, {st.failed} failed, {st.stopped} stopped"
    head += f", {st.other} other" if st.other else ""
    if st.total is not None:
        head += f"; spec: {st.total} cells, {st.missing} missing (no row yet)"
    lines = [head]
    if st.outside_spec:
        lines.append(f"  ({st.outside_spec} rows in the store belong to cells outside this spec; not counted)")
    if st.groups is not None:
        to_tune = st.groups - st.groups_tuned - st.groups_spent
        line = (f"tune: {st.groups} dense recipe group(s), {st.groups_tuned} tuned (recipe stored), {to_tune} still to "
                f"tune; {st.tune_trials} of {st.tune_budget} tuning trials stored")
        if st.groups_spent:
            line += (f"; {st.groups_spent} group(s) spent their budget without a recipe (every trial failed): their cells "
                     "do not run, change tune.space to tune again")
        lines.append(line)
        if st.waiting:
            lines.append(f"  {st.waiting} of the missing cells are waiting for a tuned recipe (tune first): their ids are "
                         "known once it is chosen; `raydw sweep SPEC --dry-run` lists them")
        lines.append(f"  tuning trials: raydw results {uri} --phase tune   recipes: raydw results {uri} --table recipes")
    spent = ", ".join(f"{h:.3f} {k}-hours" for k, h in sorted(st.hours.items())) or "nothing yet"
    lines.append(f"compute spent: {spent} (sum of wall_s x workers)")
    if st.done:  # rows without wall_s (written by hand, or by an old raydw) have no time to average
        lines.append("mean wall per done cell: " + ("unknown (no wall_s stored)" if st.mean_wall_s is None
                                                    else duration(st.mean_wall_s)))
    if st.total is not None:
        left = "unknown (no done cell to time yet)" if st.left_s is None else \
            f"about {duration(st.left_s)} if run one at a time; divide by the cells running at once"
        lines.append(f"to run: {st.to_run} cells (what `raydw sweep` runs next)"
                     + (f"; {st.waiting} more once their recipe is tuned" if st.waiting else "")
                     + (f"; up to {st.more} more while verdicts stay open, {st.not_needed} not needed (decided)"
                        if st.seeds else ""))
        if st.seeds:
            lines.append(st.seeds)
        lines.append(f"time left for {st.not_final} cells without a final row: {left}"
                     + (" (the cells that may follow not counted)" if st.seeds else ""))
    if st.failures:
        lines.append("failed or stopped cells (a rerun of the sweep retries them):")
        lines += [f"  {cid}  {label}: {err}" for cid, label, err in st.failures]
    return "\n".join(lines)


def summary(uri: str, spec=None) -> str:
    """A few lines for `raydw status URI [--spec SPEC]`."""
    return render(collect(uri, spec), uri)
