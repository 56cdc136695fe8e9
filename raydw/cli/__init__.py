"""The `raydw` command: parse, call one function, print. Bad input exits 2 with a message, before Ray starts."""
from __future__ import annotations

import argparse
import sys

from raydw.spec import SpecError
from raydw.store import SCHEMAS, StoreError, StoreKeyError, StorePathError
from raydw.cli.flags import DEMO, positive_int, positive_seconds, spec_path  # noqa: F401 - raydw.cli.DEMO
from raydw.cli.inputs import cmd_convert, cmd_data, cmd_fetch
from raydw.cli.reads import (PHASES, cmd_compact, cmd_export_mask, cmd_models, cmd_report, cmd_results, cmd_spec_fields,
                             cmd_status, cmd_verdicts, verdict_flags)
from raydw.cli.runs import cmd_bench, cmd_pretrain, cmd_sweep


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
    s.add_argument("--live-every", type=positive_seconds, default=30.0, metavar="S",
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
    verdict_flags(s)
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
    s.add_argument("--every", type=positive_seconds, default=30.0, metavar="S", help="--watch: seconds between rewrites (default 30)")
    s.add_argument("--until-complete", action="store_true",
                   help="--watch: stop once every cell of --spec has its row (done, failed or stopped)")
    verdict_flags(s)
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
    except OSError as e:  # the machine refused a read or write the checks could not foresee (a full disk, EIO): a sentence
        text = " ".join(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}".split())
        print(f"error: {text}", file=sys.stderr)
        return 3
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

