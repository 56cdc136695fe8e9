"""The `raydw` command: parse, call one function, print. Bad input exits 2 with a message, before Ray starts."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raydw.spec import SpecError, load_spec

DEMO = Path(__file__).resolve().parent / "sweeps" / "demo.yaml"


def _spec_path(p: str) -> Path:
    """A spec file; 'demo' or 'paper' name the bundled ones (also installed with the package)."""
    path = Path(p)
    if not path.exists() and (Path(__file__).resolve().parent / "sweeps" / f"{p}.yaml").exists():
        return Path(__file__).resolve().parent / "sweeps" / f"{p}.yaml"
    return path


def cmd_sweep(a) -> int:
    spec = load_spec(_spec_path(a.spec))
    if a.dry_run:
        from raydw.plan import dry_run

        print(dry_run(spec, a.storage or spec.storage))
        return 0
    from raydw.run.sweep import run_sweep

    s = run_sweep(spec, storage=a.storage, address=a.address, data_root=a.data_root)
    return 0 if s.done == s.total else 1


def cmd_pretrain(a) -> int:
    spec = load_spec(_spec_path(a.spec))
    from raydw.run.sweep import run_pretraining

    run_pretraining(spec, storage=a.storage, address=a.address)
    return 0


def cmd_results(a) -> int:
    import pandas as pd

    from raydw.results import load

    df = load(a.uri, a.table)
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
        df = df[[c for c in ["cell_id", "pretraining", "ticket_method", "sparsity", "dataset", "regime", "data_fraction",
                             "seed", "status", "sa", "ra", "best_epoch_sa", "best_epoch_ra", "wall_s"] if c in df.columns]]
    elif a.table == "masks":
        df = df.drop(columns=["bits", "layout", "layer_density"])
    if a.out:
        (df.to_parquet if a.out.endswith(".parquet") else df.to_csv)(a.out, index=False)
        print(f"wrote {len(df)} rows to {a.out}")
        return 0
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 50,
                           "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False) if len(df) else f"(no rows in {a.table})")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="raydw", description="Double-win lottery ticket sweeps on Ray Tune + Ray Train")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sweep", help="run (or resume) a sweep; --dry-run lists its cells")
    s.add_argument("spec", nargs="?", default=str(DEMO), help="sweep YAML (default: the embedded demo)")
    s.add_argument("--storage", help="results store URI (overrides the spec's storage)")
    s.add_argument("--dry-run", action="store_true", help="list the cells, their resources and what is done; start nothing")
    s.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    s.add_argument("--data-root", help="folder with downstream dataset files (overrides data.root)")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("pretrain", help="train a spec's pre-training recipes (Ray Train jobs), cached in the store")
    s.add_argument("spec", nargs="?", default=str(DEMO))
    s.add_argument("--storage")
    s.add_argument("--address")
    s.set_defaults(fn=cmd_pretrain)

    s = sub.add_parser("results", help="print or export a table of a results store")
    s.add_argument("uri", nargs="?", default="./results")
    s.add_argument("--table", default="trials", choices=["trials", "epochs", "masks", "index_sets", "pretrained"])
    s.add_argument("--where", action="append", metavar="COL=VALUE", help="keep rows whose column equals the value")
    s.add_argument("--columns", help="comma-separated columns to show")
    s.add_argument("--out", help="write CSV (or Parquet, by extension) instead of printing")
    s.set_defaults(fn=cmd_results)

    s = sub.add_parser("models", help="list architectures and the pre-trained registry")
    s.set_defaults(fn=cmd_models)

    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
