"""The `raydw` command: parse, call one function, print. Bad input exits 2 with a message, before Ray starts."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from raydw.outputs import output_dir, output_file
from raydw.spec import SpecError, load_spec
from raydw.store import SCHEMAS, StoreError, StoreKeyError, StorePathError

DEMO = Path(__file__).resolve().parent / "sweeps" / "demo.yaml"


def spec_path(p: str) -> Path:
    """A spec file; 'demo' or 'paper' name the bundled ones (also installed with the package)."""
    path = Path(p)
    if not path.exists() and (Path(__file__).resolve().parent / "sweeps" / f"{p}.yaml").exists():
        return Path(__file__).resolve().parent / "sweeps" / f"{p}.yaml"
    return path


MAX_COUNT = 1 << 20  # steps, batch, threads: a batch of 2**63 images was accepted and failed every path minutes later


def positive_int(text: str) -> int:
    """argparse type: a whole number in [1, 2**20] (a batch of -1 images fails deep in torch, 0 steps times nothing,
    2**63 starts Ray and fails every path minutes later)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not >= 1")
    if v > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{v} is larger than {MAX_COUNT:,}")
    return v


MIN_EVERY_S = 0.1  # a rewrite reads the store and renders plots: more often than this is the busy loop of --every 0


def _positive_seconds(text: str) -> float:
    """argparse type: seconds >= 0.1 and finite (--every 0 or 1e-9 would rewrite the report in a busy loop)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    if v < MIN_EVERY_S:
        raise argparse.ArgumentTypeError(f"{text} s is below {MIN_EVERY_S:g} s (a rewrite that often is a busy loop)")
    return v


def cmd_sweep(a) -> int:
    spec = load_spec(spec_path(a.spec))
    if a.tracker:  # --tracker adds to the spec's trackers (they are not part of any cell's id)
        from raydw.trackers import from_flag

        spec = spec.model_copy(update={"trackers": [*spec.trackers, *(from_flag(t) for t in a.tracker)]})
    from raydw.trackers import check

    check(spec.trackers, str(a.spec))  # an absent tracker package: exit 2 before anything is planned or run
    probe_flags = [f for f, v in (("--preflight", a.preflight), ("--steps", a.steps), ("--batch", a.batch),
                                  ("--cover", a.cover), ("--scratch", a.scratch)) if v]
    if a.dry_run and probe_flags:  # the dry run starts nothing: these would be silently ignored
        print(f"error: --dry-run lists the cells and starts nothing; it does not go with {', '.join(probe_flags)}",
              file=sys.stderr)
        return 2
    if a.dry_run:
        from raydw.planning.dryrun import dry_run

        print(dry_run(spec, a.storage or spec.storage, a.data_root))
        return 0
    probe_flags = [f for f, v in (("--steps", a.steps), ("--batch", a.batch), ("--cover", a.cover), ("--scratch", a.scratch)) if v]
    if probe_flags and not a.preflight:
        print(f"error: {', '.join(probe_flags)} only go with --preflight", file=sys.stderr)
        return 2
    _verbose(a)
    if a.preflight:
        from raydw.run.preflight import preflight

        return preflight(spec, a.storage, a.address, a.data_root, steps=a.steps or 2, batch=a.batch, cover_only=a.cover,
                         scratch=a.scratch)
    from raydw.findings.analysis import verdict_settings
    from raydw.run.sweep import run_sweep

    live = None
    if a.live_report is not None:  # started by run_sweep once the store is locked (a refused sweep writes nothing)
        from raydw.reporting.live import LiveReport

        folder = output_dir(a.live_report, "--live-report", stores=(a.storage or spec.storage,)) if a.live_report else None
        live = LiveReport(None, folder, a.live_every, spec=spec, verdict_args=verdict_settings(spec))
    s = run_sweep(spec, storage=a.storage, address=a.address, data_root=a.data_root, live=live)
    return 0 if s.complete else 1  # stopped early / not needed by the search are outcomes the spec asked for


def _verbose(a) -> None:
    """--verbose: Ray's and Tune's own output too (read once by raydw.run.cluster, before it is imported)."""
    if a.verbose:
        os.environ["RAYDW_VERBOSE"] = "1"


def cmd_pretrain(a) -> int:
    spec = load_spec(spec_path(a.spec))
    _verbose(a)
    from raydw.run.sweep import run_pretraining

    run_pretraining(spec, storage=a.storage, address=a.address)
    return 0


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
        (df.to_parquet if a.out.endswith(".parquet") else df.to_csv)(a.out, index=False)
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
    torch.save({"state_dict": state}, a.out)
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
    output_dir(a.out, stores=(a.uri,))
    try:
        if a.watch:
            return _watch_report(a)
        print(f"wrote {write_report(a.uri, a.out, cells=_spec_cells(a), design=_seed_design(a), **_verdict_args(a))}")
    except AnalysisError as e:
        raise SpecError(str(e)) from None
    return 0


def _watch_report(a) -> int:
    """`raydw report --watch`: rewrite until SIGINT / SIGTERM (after the write in progress) or --until-complete."""
    import signal

    from raydw.reporting.live import LiveReport

    live = LiveReport(a.uri, Path(a.out), a.every, spec=spec_path(a.spec) if a.spec else None, verdict_args=_verdict_args(a))
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


def _verdict_flags(s) -> None:
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


def cmd_convert(a) -> int:
    from raydw.models.convert import CheckpointError, convert_file

    output_file(a.output, "convert OUTPUT")
    if Path(a.input).exists() and Path(a.output).exists() and Path(a.input).resolve() == Path(a.output).resolve():
        raise SpecError(f"convert: OUTPUT {a.output} is the INPUT file; give another name (the input would be replaced)")
    try:
        info = convert_file(a.input, a.output, fmt=a.format, arch=a.arch, trust=a.trust)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{info['source']} ({info['format']}, sha256 {info['source_sha256']})\n"
          f"  -> {info['out']} ({info['arch']}, {info['num_classes']} classes, weights-only, sha256 {info['sha256']})")
    if info["normalizer"]:
        print(f"  the file normalized inputs inside the model with {info['normalizer']} (dropped: raydw normalizes itself)")
    return 0


def cmd_fetch(a) -> int:
    from raydw.models.convert import CheckpointError
    from raydw.models.fetch import FetchError, fetch

    if a.cache:
        output_dir(a.cache, "--cache")
    try:
        fetch(a.name, cache=a.cache, url=a.url, trust=a.trust, force=a.force)
    except (FetchError, CheckpointError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    return 0


def cmd_data(a) -> int:
    from raydw.data.prepare import PrepareError, prepare, verify

    try:
        if a.data_cmd == "prepare":
            prepare(a.name, a.root)
            return 0
        bad = verify(a.name, a.root)
    except (PrepareError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    for b in bad:
        print(f"md5 mismatch: {b}")
    print(f"{a.name} under {a.root}: " + (f"{len(bad)} file(s) differ from the real ones" if bad else "all files match the real md5"))
    return 1 if bad else 0


def cmd_bench(a) -> int:
    from raydw.bench import format_table, run, write_json

    output_file(a.json or f"bench-{a.profile}.json", "--json")  # before minutes of benchmarking
    res = run(a.profile, steps=a.steps, batch=a.batch, device=a.device, warmup=a.warmup, threads=a.threads)
    print(format_table(res))
    print(f"wrote {write_json(res, a.json or f'bench-{a.profile}.json')}")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="raydw", description="Double-win lottery ticket sweeps on Ray Tune + Ray Train")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sweep", help="run (or resume) a sweep; --dry-run lists its cells")
    s.add_argument("spec", nargs="?", default=str(DEMO), help="sweep YAML (default: the embedded demo)")
    s.add_argument("--storage", help="results store URI (overrides the spec's storage)")
    s.add_argument("--dry-run", action="store_true", help="list the cells, their resources and what is done; start nothing")
    s.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    s.add_argument("--data-root", help="folder with downstream dataset files (overrides data.root)")
    s.add_argument("--preflight", action="store_true",
                   help="run every distinct path of the sweep (pre-training, dataset, regime, ticket method, IMP job, recipe) "
                        "for a few steps in a scratch store, then print each path's figures and the sweep's measured cost; "
                        "exit 0 only when every path ran (docs/sweeps.md)")
    s.add_argument("--steps", type=positive_int, metavar="N", help="--preflight: timed training steps per path (default 2)")
    s.add_argument("--batch", type=positive_int, metavar="B",
                   help="--preflight: every path's per-step batch (default: each path's own; a CPU needs a small one)")
    s.add_argument("--cover", action="store_true",
                   help="--preflight: only as many cell paths as take every value of every axis once (every branch, "
                        "not every combination), with every IMP job and recipe")
    s.add_argument("--scratch", metavar="URI", help="--preflight: the scratch store (default: a new folder beside the sweep's store, <store>-preflight/<time>)")
    s.add_argument("--live-report", nargs="?", const="", metavar="DIR",
                   help="rewrite the HTML report while the cells run (default folder: <store>/report, ./report for an "
                        "object store); see raydw report --watch")
    s.add_argument("--live-every", type=_positive_seconds, default=30.0, metavar="S",
                   help="--live-report: seconds between rewrites (default 30)")
    s.add_argument("--tracker", action="append", metavar="KIND[:TARGET]",
                   help="also send every cell to an experiment tracker (repeatable; added to the spec's trackers): "
                        "mlflow[:TRACKING_URI], wandb[:PROJECT], tensorboard[:LOGDIR]; each needs its extra, e.g. "
                        "pip install -e '.[mlflow]'")
    s.add_argument("--verbose", action="store_true",
                   help="also print Ray's and Tune's own output (its experiment table, worker logs and warnings)")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("pretrain", help="train a spec's pre-training recipes (Ray Train jobs), cached in the store")
    s.add_argument("spec", nargs="?", default=str(DEMO))
    s.add_argument("--storage")
    s.add_argument("--address")
    s.add_argument("--verbose", action="store_true", help="also print Ray's and Tune's own output (worker logs too)")
    s.set_defaults(fn=cmd_pretrain)

    s = sub.add_parser("results", help="print or export a table of a results store",
                       description="Print or export one table of a results store (docs/results-schema.md). "
                                   "Tuning trials: --phase tune; tuned recipes: --table recipes (docs/tuning.md).")
    s.add_argument("uri", nargs="?", default="./results")
    s.add_argument("--table", default="trials", choices=list(SCHEMAS), metavar="TABLE",
                   help=f"one of {', '.join(SCHEMAS)} (default: trials)")
    s.add_argument("--phase", choices=list(PHASES), metavar="PHASE",
                   help="trials only: main (default: the sweep's cells), tune (tuning trials of dense recipes, with the "
                        "candidate recipe) or all")
    s.add_argument("--where", action="append", metavar="COL=VALUE", help="keep rows whose column equals the value")
    s.add_argument("--columns", help="comma-separated columns to show")
    s.add_argument("--out", help="write CSV (or Parquet, by extension) instead of printing")
    s.set_defaults(fn=cmd_results)

    s = sub.add_parser("export-mask", help="write a stored mask as a reference-format checkpoint (weight_orig + weight_mask)")
    s.add_argument("uri", help="results store")
    s.add_argument("mask_id")
    s.add_argument("out", help="output .pth.tar")
    s.set_defaults(fn=cmd_export_mask)

    s = sub.add_parser("spec-fields", help="every field of a sweep spec with its type, default and help")
    s.set_defaults(fn=cmd_spec_fields)

    s = sub.add_parser("models", help="list architectures and the pre-trained registry")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("verdicts", help="print matching flags, double-win verdicts and extreme sparsities (docs/findings.md)")
    s.add_argument("uri", nargs="?", default="./results")
    _verdict_flags(s)
    s.set_defaults(fn=cmd_verdicts)

    s = sub.add_parser("status", help="cells done / failed / missing, compute spent, time left")
    s.add_argument("uri", nargs="?", default="./results")
    s.add_argument("--spec", help="sweep YAML (or 'demo'/'paper'): also count missing cells and estimate time left; "
                                  "with tune: on, the stored tuned recipes are applied and cells waiting for one are shown")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("report", help="write an HTML report (plots, verdicts, extreme sparsities, status)")
    s.add_argument("uri", nargs="?", default="./results")
    s.add_argument("--out", required=True, help="output folder; index.html and PNGs are written there")
    s.add_argument("--watch", action="store_true",
                   help="keep rewriting it (atomically) with the cells done / running / failed and the time left, "
                        "until SIGINT / SIGTERM")
    s.add_argument("--every", type=_positive_seconds, default=30.0, metavar="S", help="--watch: seconds between rewrites (default 30)")
    s.add_argument("--until-complete", action="store_true",
                   help="--watch: stop once every cell of --spec has its row (done, failed or stopped)")
    _verdict_flags(s)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("convert", help="convert a published checkpoint to a weights-only torchvision state dict")
    s.add_argument("input", help="checkpoint file (torchvision, fast_adversarial or robustness format)")
    s.add_argument("output", help="where to write the plain state dict (.pt)")
    s.add_argument("--format", choices=["torchvision", "fast_adversarial", "robustness"], help="default: detected")
    s.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"], help="checked by a strict load")
    s.add_argument("--trust", action="store_true", help="allow full unpickling (can run code in the file; dill files need it)")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("fetch", help="download a registry entry into the model cache, hash-checked and converted")
    s.add_argument("name", help="registry entry (raydw models)")
    s.add_argument("--cache", help="cache folder (default $RAYDW_MODEL_CACHE, else ~/.cache/raydw/models)")
    s.add_argument("--url", help="download from here instead (a mirror, or file:///path)")
    s.add_argument("--trust", action="store_true", help="allow full unpickling of the published file (robustness/dill)")
    s.add_argument("--force", action="store_true", help="download again even if cached")
    s.set_defaults(fn=cmd_fetch)

    s = sub.add_parser("data", help="prepare (download) or verify (md5) a downstream dataset under a root folder")
    dsub = s.add_subparsers(dest="data_cmd", required=True)
    for verb, what in [("prepare", "download with torchvision (needs a network)"), ("verify", "check md5 against the real files")]:
        d = dsub.add_parser(verb, help=what)
        d.add_argument("name", help="dataset (cifar10, cifar100, svhn, fashion_mnist, ...)")
        d.add_argument("--root", required=True, help="the folder data.root points to")
        d.set_defaults(fn=cmd_data)

    s = sub.add_parser("bench", help="images/s of the reference recipe vs raydw's engine, side by side (docs/performance.md)")
    s.add_argument("--profile", default="cpu", choices=["cpu", "gpu"], help="cpu: ResNet-18 at 32 px, minutes on a laptop; gpu: ResNet-50 at 224 px, batch 128")
    s.add_argument("--steps", type=positive_int, help="timed steps (batches) per row (default: the profile's)")
    s.add_argument("--batch", type=positive_int, help="batch size (default: the profile's)")
    s.add_argument("--warmup", type=positive_int, help="untimed warm-up steps per row, at least 1 (FLOPs are counted on them)")
    s.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's)")
    s.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    s.add_argument("--json", help="write the table here too (default: bench-<profile>.json)")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("compact", help="merge the rows of finished cells into a few large files (a sweep that ran cells does it at its end; this is for a sweep killed or interrupted before it, a compaction that failed there, and older stores)",
                       description="Merge the trials and epochs rows of finished cells (cells with a trials row) into a few large Parquet "
                                   "files, under the store's driver lock. A sweep that ran cells does this at its end; run it for a sweep "
                                   "killed or interrupted before its end, after a compaction that failed there, or to migrate a store of "
                                   "the one-file-per-epoch layout (docs/results-schema.md, 'Compaction').")
    s.add_argument("uri", help="results store (folder or URI)")
    s.set_defaults(fn=cmd_compact)

    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (StorePathError, StoreKeyError) as e:  # the store's path is unusable (a symlink loop, a file): the user must fix it
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:  # not writable, or in use by another driver: nothing was run
        print(f"error: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # `raydw ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGINT to a sweep (raydw.run.cluster.Interrupted)
        import signal

        driver = sys.modules.get("raydw.run.cluster")
        signum = getattr(e, "signum", None) or getattr(driver, "STOPPED_BY", None) or signal.SIGINT
        print(f"interrupted ({signal.Signals(signum).name}); every row already stored is kept whole: rerun the same "
              "command to resume (finished cells are not run again)", file=sys.stderr)
        return 128 + signum


def entry() -> None:
    """The `raydw` command (console script): main(), then an exit that survives an object-store call abandoned in
    its time bound (raydw.store.remote.exit_code). main() stays a plain function for callers in Python."""
    from raydw.store.remote import exit_code

    sys.exit(exit_code(main()))


if __name__ == "__main__":
    entry()
