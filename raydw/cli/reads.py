"""The commands that read a store: results, export-mask, verdicts, status, report, compact; spec-fields and models."""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


from raydw.bounded import short
from raydw.outputs import output_dir, output_file
from raydw.store.atomic import write_whole
from raydw.spec import SpecError, load_spec
from raydw.store import SCHEMAS
from raydw.cli.flags import spec_path


PHASES = {"main": "main", "tune": "tune", "all": None}  # --phase -> raydw.results.load(phase=...)
TRIALS_COLUMNS = ["cell_id", "pretraining", "ticket_method", "sparsity", "dataset", "regime", "data_fraction", "seed",
                  "status", "sa", "ra", "best_epoch_sa", "best_epoch_ra", "wall_s"]
TUNE_COLUMNS = ["cell_id", "pretraining", "dataset", "regime", "data_fraction", "seed", "status", "recipe", "val_sa_best",
                "val_ra_best", "tune_id", "recipe_id", "wall_s"]
TABLE_COLUMNS = {  # default columns of the other tables: the long JSON / binary ones are left to --columns
    "masks": lambda cols: [c for c in cols if c not in ("bits", "layout", "layer_density")],
    "recipes": lambda cols: [c for c in ["tune_id", "pretraining", "dataset", "regime", "data_fraction", "recipe", "metric",
                                         "value", "trials", "failed", "recipe_id", "sweep"] if c in cols],
    "searches": lambda cols: [c for c in cols if c != "state"],
}


def _trial_recipe(config) -> str | None:
    """A tuning trial's candidate recipe, from its stored config (canonical `tune_trial.recipe`)."""
    import json

    try:
        rec = json.loads(config).get("tune_trial", {}).get("recipe")
    except (TypeError, ValueError, AttributeError):
        return None
    return json.dumps(rec, sort_keys=True, separators=(",", ":")) if rec is not None else None


def cmd_results(a) -> int:
    import pandas as pd

    from raydw.findings.results import load

    if a.phase is not None and a.table != "trials":
        raise SpecError(f"--phase applies to --table trials only (tuning trials are trials rows); got --table {a.table}")
    phase = a.phase or "main"
    if a.out:
        output_file(a.out, stores=(a.uri,))  # before reading the store: a typo in the folder is said at once
    df = load(a.uri, a.table, phase=PHASES[phase])  # load applies phase to trials only
    if a.table == "trials" and phase != "main" and "config" in df.columns:
        df = df.assign(recipe=[_trial_recipe(c) for c in df["config"]])  # the candidate a tuning trial ran
    for f in a.where or []:
        k, _, v = f.partition("=")
        if k not in df.columns:
            raise SpecError(f"--where {f}: no column {k!r}; columns: {list(df.columns)}")
        df = df[df[k].astype(str) == v]
    if a.columns:
        cols = a.columns.split(",")
        bad = [c for c in cols if c not in df.columns]
        if bad:
            raise SpecError(f"--columns: unknown {bad}; columns: {list(df.columns)}")
        df = df[cols]
    elif a.table == "trials":
        cols = TUNE_COLUMNS if phase == "tune" else TRIALS_COLUMNS + (["phase"] if phase == "all" else []) + \
            (["recipe_id"] if "recipe_id" in df.columns and df["recipe_id"].notna().any() else [])
        df = df[[c for c in cols if c in df.columns]]
    elif a.table in TABLE_COLUMNS:
        df = df[TABLE_COLUMNS[a.table](list(df.columns))]
    if a.out:
        write_whole(a.out, lambda f: (df.to_parquet if a.out.endswith(".parquet") else df.to_csv)(f, index=False))
        print(f"wrote {len(df)} rows to {a.out}")
        return 0
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 50,
                           "display.max_colwidth", 80, "display.float_format", "{:.4f}".format):
        what = a.table + (f" (phase {phase})" if a.table == "trials" and phase != "main" else "")
        print(df.to_string(index=False) if len(df) else f"(no rows in {what})")
    return 0


def cmd_export_mask(a) -> int:
    """The reference code's ticket format, so masks move between raydw stores and the reference scripts."""
    import torch

    from raydw.store import Store
    from raydw.train.setup import load_mask, load_pretrained

    output_file(a.out, "export-mask OUT", stores=(a.uri,))
    store = Store(a.uri)
    row = store.get("masks", a.mask_id)
    if row is None:
        raise SpecError(f"{a.uri}: no mask {a.mask_id!r}; see `raydw results {a.uri} --table masks`")
    mask = load_mask(store, a.mask_id)
    _, net = load_pretrained(store, row["pretrained_id"])
    params = dict(net.named_parameters())
    state = {k: v for k, v in net.state_dict().items() if k not in mask.tensors}
    for n in mask.names:
        state[f"{n}_orig"] = params[n].detach().clone()
        state[f"{n}_mask"] = mask.tensors[n].float()
    write_whole(a.out, lambda f: torch.save({"state_dict": state}, f))  # whole or not at all
    print(f"wrote {a.out}: {row['method']} mask of {row['pretraining']}, sparsity {row['sparsity']:.4f}")
    return 0


def cmd_spec_fields(a) -> int:
    from raydw.spec import describe

    print("\n".join(describe()))
    return 0


def cmd_models(a) -> int:
    from raydw.models.catalog import ARCHS, PRETRAINED

    print("architectures:")
    for k, v in ARCHS.items():
        print(f"  {k:14s} {v}")
    print("\npre-trained entries (arch.tag):")
    for e in PRETRAINED.values():
        top1 = f"{e.top1:.2f}%" if e.top1 else "-"
        print(f"  {e.name:28s} {e.kind:17s} {e.threat:11s} top1 {top1:7s} format {e.format:16s} {e.citation[:60]}")
    return 0


def cmd_verdicts(a) -> int:
    from raydw.findings.analysis import AnalysisError
    from raydw.findings.text import format_verdicts
    from raydw.findings.sequential import verdicts_of

    try:
        v = verdicts_of(a.uri, _verdict_args(a), _seed_design(a), cells=_spec_cells(a))
    except AnalysisError as e:
        raise SpecError(str(e)) from None
    print(format_verdicts(v))
    return 0


def _seed_design(a):
    """The --spec's adaptive seed design (its verdicts are replayed look by look, as the sweep decided them); None
    without --spec or with fixed seeds."""
    if not getattr(a, "spec", None):
        return None
    from raydw.findings.sequential import Design

    seeds = load_spec(spec_path(a.spec)).adaptive_seeds()
    return Design.of(seeds) if seeds is not None else None


def _verdict_args(a) -> dict:
    """The verdict settings: the spec's `verdicts:` section when --spec is given, each overridden by its flag."""
    from raydw.spec import VerdictSpec

    base = load_spec(spec_path(a.spec)).verdicts if getattr(a, "spec", None) else VerdictSpec()
    pick = {k: getattr(a, k, None) for k in ("rule", "tol", "margin", "level", "resamples", "seed", "seed_variance")}
    chosen = {k: (v if v is not None else getattr(base, k)) for k, v in pick.items()}
    if chosen["rule"] != "tol" and pick["tol"] is None:
        chosen["tol"] = 0.0
    try:  # the flags meet the spec's own bounds here: deeper down an adaptive design checks its split level instead
        VerdictSpec.model_validate(chosen)
    except ValidationError as e:
        raise SpecError("; ".join(f"--{'-'.join(str(p) for p in err['loc']).replace('_', '-')} "
                                  f"{short(err['input'], 40)}: {err['msg']}" for err in e.errors())) from None
    return {**chosen, "reading": getattr(a, "reading", "full"), "checkpoint": a.checkpoint}


def _store_note(uri: str) -> str | None:
    """What is wrong with a local store path that is not a store: a mistyped path reads as an empty store."""
    from raydw.store import Store

    store = Store(uri)
    if not store.local:
        return None
    root = Path(store.root)
    if not root.exists():
        return f"no results store at {root} (no such folder; the store is the spec's `storage`, default ./results)"
    if not root.is_dir():
        return f"{root} is a file, not a results store (a folder)"
    if not any((root / t).is_dir() for t in (*SCHEMAS, "locks", "tune", "train")):
        return f"{root} holds no raydw tables ({', '.join(SCHEMAS)}): is it the results store?"
    return None


def cmd_status(a) -> int:
    from raydw.reporting.status import summary

    note = _store_note(a.uri)
    if note and not a.spec:  # without a spec there is nothing to say about an empty store but this
        raise SpecError(note)
    spec = spec_path(a.spec) if a.spec else None
    if spec is not None:
        load_spec(spec)  # a bad spec is refused before the store is read
    print((f"note: {note}; counting the spec's cells as missing\n" if note else "") + summary(a.uri, spec))
    return 0


def cmd_report(a) -> int:
    from raydw.findings.analysis import AnalysisError
    from raydw.reporting.report import write_report

    if a.until_complete and not (a.watch and a.spec):
        raise SpecError("--until-complete needs --watch and --spec (the spec says which cells complete the sweep)")
    output_dir(a.out, stores=(a.uri,), create=False)
    from raydw.store import Store

    Store(a.uri)  # an unreachable or missing store is said before the --out folder is made
    # So are a bad flag, a bad --spec and a --spec of another store: each is read before anything is written.
    verdict_args = _verdict_args(a)
    settings = {} if a.watch else {"cells": _spec_cells(a), "design": _seed_design(a)}
    out = Path(a.out).expanduser().absolute()
    made = [p for p in (out, *out.parents) if not p.exists()]  # what output_dir creates, innermost first
    output_dir(a.out, stores=(a.uri,))
    try:
        if a.watch:
            return _watch_report(a, verdict_args)
        print(f"wrote {write_report(a.uri, a.out, **settings, **verdict_args)}")
    except AnalysisError as e:
        raise SpecError(str(e)) from None
    finally:
        for p in made:  # refused (or failed) before writing: the folders it made go again, while empty
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return 0


def _watch_report(a, verdict_args: dict) -> int:
    """`raydw report --watch`: rewrite until SIGINT / SIGTERM (after the write in progress) or --until-complete."""
    import signal

    from raydw.reporting.live import LiveReport

    live = LiveReport(a.uri, Path(a.out), a.every, spec=spec_path(a.spec) if a.spec else None, verdict_args=verdict_args)
    stopped = []

    def stop(signum, frame):
        stopped.append(signal.Signals(signum).name)
        live._stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    print(f"watching {a.uri}: rewriting {Path(a.out) / 'index.html'} every {a.every:g} s"
          + (" until every cell has its row" if a.until_complete else "") + " (Ctrl-C stops)", flush=True)
    n = live.watch(until_complete=a.until_complete)
    why = f"stopped by {stopped[0]}" if stopped else "the sweep is complete" if a.until_complete else "stopped"
    print(f"{why}; the report was written {n} time(s): {Path(a.out) / 'index.html'}", flush=True)
    return 0


def verdict_flags(s) -> None:
    """The verdict flags of `raydw verdicts` and `raydw report` (defaults: the --spec's `verdicts:` section, else
    rule strict, tol 1 for rule tol, margin 1 point, level 0.95, 2000 resamples, seed 0)."""
    s.add_argument("--rule", choices=["strict", "tol", "equivalence"],
                   help="strict: ticket >= dense (the paper's); tol: >= dense - K dense std over seeds; equivalence: the "
                        "interval of ticket - dense decides match / no match / inconclusive against --margin")
    s.add_argument("--reading", default="full", choices=["full", "loose"],
                   help="which metrics make a double-win: full = SA std, SA adv, RA adv; loose = SA std, RA adv")
    s.add_argument("--tol", type=float, metavar="K", help="rule tol: dense standard deviations of slack (default 1)")
    s.add_argument("--margin", type=float, metavar="POINTS", help="rule equivalence: margin in accuracy points (default 1)")
    s.add_argument("--level", type=float, help="confidence level of the intervals (default 0.95)")
    s.add_argument("--resamples", type=int, help="bootstrap resamples (default 2000)")
    s.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    s.add_argument("--seed-variance", choices=["pooled", "per_comparison"],
                   help="seed part of the intervals: pooled over each family of cells (default) or each comparison's own seeds")
    s.add_argument("--checkpoint", default="paper", choices=["paper", "last"], help="paper: SA@SA-best, RA@RA-best; last: last epoch")
    s.add_argument("--spec", help="sweep YAML (or 'demo'/'paper'): only the cells it plans, when the store holds other "
                                  "runs too (an edited spec rerun into it, a tuned and an untuned grid), and its verdicts: settings")


def _spec_cells(a) -> set[str] | None:
    """--spec: the cell ids that sweep plans against the store (its findings alone, other runs in the store left out)."""
    if not a.spec:
        return None
    from raydw.planning.plan import spec_cells
    from raydw.store import Store

    ids = spec_cells(a.uri, spec_path(a.spec))
    if not ids & set(Store(a.uri).names("trials")):
        raise SpecError(f"none of the {len(ids)} cells {a.spec} plans is stored in {a.uri}: another spec or store?")
    return ids


def cmd_compact(a) -> int:
    """`raydw compact STORE`: also migrates a store of the one-file-per-epoch layout (docs/results-schema.md)."""
    from raydw.store.compact import compact
    from raydw.store import Store

    store = Store(a.uri)
    if not (store.exists("trials") or store.exists("epochs")):
        raise SpecError(f"{a.uri} holds no trials or epochs table: not a results store?")
    print(f"compacting {store.uri} (under its driver lock)")
    compact(store, log=print)
    return 0
