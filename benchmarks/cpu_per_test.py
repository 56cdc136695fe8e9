"""A pytest plugin: the CPU seconds of each test (user+sys of the test process and of the children it waited for),
and when each worker started, collected, finished and unconfigured, as tab-separated lines in
$CPU_PER_TEST_DIR/cpu_<worker>.tsv (default: the current folder).

    PYTHONPATH=benchmarks python -m pytest -q -m "not ray" -p cpu_per_test
    cat cpu_gw*.tsv | sort -t$'\\t' -k1 -rn | head     # the tests that cost most CPU

Columns of a test line: self CPU s, children CPU s, wall s, start (epoch s), test id. Lines starting with '#' are
the worker's events with their epoch times: the run's start-up and end, not spent in any test."""
from __future__ import annotations

import os
import resource
import time

import pytest

_OUT = open(os.path.join(os.environ.get("CPU_PER_TEST_DIR", "."),
                         f"cpu_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv"), "a")


def _cpu() -> tuple[float, float]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def _event(name: str) -> None:
    _OUT.write(f"#{name}\t{time.time():.2f}\n")
    _OUT.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    a, b = _cpu()
    t = time.time()
    yield
    a2, b2 = _cpu()
    _OUT.write(f"{a2 - a:.2f}\t{b2 - b:.2f}\t{time.time() - t:.2f}\t{t:.2f}\t{item.nodeid}\n")
    _OUT.flush()


def pytest_sessionstart(session):
    _event("sessionstart")


def pytest_collection_finish(session):
    _event("collected")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    _event("sessionfinish")


def pytest_unconfigure(config):
    _event("unconfigure")
