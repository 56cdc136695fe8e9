"""The commands that run work: `raydw sweep` (and its dry run and preflight), `raydw pretrain`, `raydw bench`."""
from __future__ import annotations

import os
import sys

from raydw.outputs import check_not_nested, output_dir, output_file
from raydw.spec import load_spec
from raydw.cli.flags import spec_path


def cmd_sweep(a) -> int:
    spec = load_spec(spec_path(a.spec))
    if a.tracker:  # --tracker adds to the spec's trackers (they are not part of any cell's id)
        from raydw.trackers import from_flag

        spec = spec.model_copy(update={"trackers": [*spec.trackers, *(from_flag(t) for t in a.tracker)]})
    from raydw.trackers import check

    check(spec.trackers, str(a.spec))  # an absent tracker package: exit 2 before anything is planned or run
    check_not_nested(a.storage or spec.storage, "--storage" if a.storage else "storage")
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


def cmd_bench(a) -> int:
    from raydw.bench import format_table, run, write_json

    output_file(a.json or f"bench-{a.profile}.json", "--json")  # before minutes of benchmarking
    res = run(a.profile, steps=a.steps, batch=a.batch, device=a.device, warmup=a.warmup, threads=a.threads)
    print(format_table(res))
    print(f"wrote {write_json(res, a.json or f'bench-{a.profile}.json')}")
    return 0
