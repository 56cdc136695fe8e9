"""CPU seconds of the findings a report shows, on the stores tests/test_report.py builds (no Ray, no torch):
`write_report` on the demo-shaped store (every cell sweeps/demo.yaml plans, with per-example outcomes) and on the
hand store (two pre-trainings, one failed cell), then `verdicts` and `trials_frame` on the demo-shaped store.

    python benchmarks/findings_cost.py          # medians of 5 runs each, after one warm-up
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_report  # noqa: E402 - the store builders of the report tests

from raydw.findings import analysis  # noqa: E402
from raydw.reporting.report import write_report  # noqa: E402


def cpu(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return statistics.median(times)


def main() -> None:
    t = Path(tempfile.mkdtemp())
    demo, n = test_report._demo_shaped_store(t / "demo")
    hand = test_report._hand_store(t / "hand")
    df = analysis.trials_frame(demo.uri)
    rows = [(f"write_report, demo-shaped store ({n} cells)", lambda: write_report(demo.uri, t / "r1")),
            (f"write_report, hand store ({len(analysis.trials_frame(hand.uri))} cells)", lambda: write_report(hand.uri, t / "r2")),
            ("verdicts(frame), demo-shaped store", lambda: analysis.verdicts(df)),
            ("trials_frame(uri), demo-shaped store", lambda: analysis.trials_frame(demo.uri))]
    for name, fn in rows:
        print(f"{cpu(fn):7.3f} CPU-s  {name}")


if __name__ == "__main__":
    main()
