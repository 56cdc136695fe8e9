"""The live report: `raydw report --watch` and `raydw sweep --live-report` rewrite the report as cells finish.

Fast: the flags refuse bad input, a watcher stops cleanly on SIGTERM, an interrupted write leaves no file.
Ray: a real tiny sweep with --live-report, screenshot twice in headless Chromium while it runs; the second shows
more finished-cell points than the first.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from raydw.store.atomic import write_atomic
from raydw.cli import main
from raydw.reporting.live import DONE_COLOUR, LiveReport

from test_report import put

REPO = Path(__file__).resolve().parents[1]


def _store(tmp_path):
    from raydw.store import Store

    store = Store(str(tmp_path / "store"))
    for k in (0, 1):
        put(store, "ST", k, "standard", 1.0, 0.8 - 0.02 * k, 0.3)
    return store


def test_watch_flags_refuse_bad_input_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(tmp_path), "--out", str(out), "--watch", "--until-complete"]) == 2
    assert "--until-complete needs --watch and --spec" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--out", str(out), "--watch", "--every", "0"])
    assert e.value.code == 2 and "not a number of seconds > 0" in capsys.readouterr().err and not out.exists()


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "index.html"
    write_atomic(target, b"old page")
    (tmp_path / "sub").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "sub", b"new")  # os.replace over a folder fails after the temporary is written
    assert target.read_bytes() == b"old page" and sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "sub"]


def test_the_live_section_counts_running_cells_from_their_epoch_rows(tmp_path):
    store = _store(tmp_path)
    store.write_row("epochs", {"cell_id": "half-way", "epoch": 0}, name="half-way.e0000")
    LiveReport(store.uri, tmp_path / "r", every=5).write()
    text = (tmp_path / "r" / "index.html").read_text()
    assert "2 done, 1 running, 0 failed or stopped" in text and "http-equiv='refresh' content='5'" in text
    assert (tmp_path / "r" / "cells_so_far.png").stat().st_size > 5000


def test_report_watch_rewrites_until_sigterm_and_stops_cleanly(tmp_path):
    store = _store(tmp_path)
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "raydw.cli", "report", store.uri, "--out", str(out), "--watch",
                          "--every", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "index.html").exists():
            time.sleep(0.2)
        first = (out / "index.html").stat().st_mtime_ns
        while time.time() < deadline and (out / "index.html").stat().st_mtime_ns == first:
            time.sleep(0.2)  # rewritten at least once more
        p.send_signal(signal.SIGTERM)
        text, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "stopped by SIGTERM" in text, text
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temporary left behind


# ------------------------------------------------------------------------------------------------ a real sweep
def _browser():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _shot(browser: str, index: Path, shot: Path) -> Path:
    # The flags test_report.py uses on this closed network.
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1200",
                    f"--screenshot={shot}", index.as_uri()], check=True, timeout=120, capture_output=True)
    return shot


def _points(shot: Path) -> int:
    """Blobs of the finished-cells plot's 'done' colour (markers and their two legend entries)."""
    from scipy import ndimage

    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    want = np.array([int(DONE_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    labels, n = ndimage.label(np.abs(rgb - want).sum(axis=2) < 40)
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= 8).sum())


def _wait_page(index: Path, text: str, sweep: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if index.exists() and text in index.read_text():
            return
        assert sweep.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"no {text!r} in the live report after {timeout} s:\n" + log.read_text()[-3000:])


@pytest.mark.slow  # over a minute on 2 cores: `-m "not slow"` leaves it out
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_live_report_shows_more_points_in_a_later_screenshot_while_the_sweep_runs(tmp_path, tiny_spec_text, tiny_store,
                                                                                     ray_address):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) - the live report is not screenshot")
    d = yaml.safe_load(tiny_spec_text)
    # Five cells in one Ray Train run, one after another (a pack: the report reads the store, whichever run wrote
    # it), 4 epochs each (~5 s a cell here): the first screenshot once one is done, the second once one more is
    # done than the page showed after the first shot. Three cells in three Train runs took 61 s here.
    d["tickets"]["sparsities"] = [0.5, 0.8, 0.9, 0.95]
    d["regimes"]["standard"]["epochs"] = 4
    d["resources"] = {"max_concurrent_cells": 1, "cells_per_run": 5}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(d))
    out, log = tmp_path / "live", tmp_path / "sweep.log"
    index = out / "index.html"
    sweep = subprocess.Popen([sys.executable, "-m", "raydw.cli", "sweep", str(spec), "--storage", str(tiny_store),
                              "--live-report", str(out), "--live-every", "1", "--address", ray_address], stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO)
    try:
        # The live section's own count (the status section further down is read a moment later and may be ahead).
        _wait_page(index, "<p class='live'>1 done, ", sweep, log)
        a = _points(_shot(browser, index, tmp_path / "a.png"))
        # The page may have moved on while Chromium loaded it (a packed cell takes seconds): the first shot shows at
        # most the count the page holds now, so the second waits for one more than that.
        shown = int(re.search(r"<p class='live'>(\d+) done, ", index.read_text()).group(1))
        _wait_page(index, f"<p class='live'>{shown + 1} done, ", sweep, log)
        b = _points(_shot(browser, index, tmp_path / "b.png"))
        assert sweep.poll() is None, "the sweep ended before the second screenshot"
        assert sweep.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    # 1 done cell: SA + RA points and 2 legend markers; each more done cell: 2 more points.
    assert b > a >= 3, (a, b)
    assert "Live: finished" in index.read_text() and "5 done, 0 running, 0 failed" in index.read_text()
    assert "live report: " in log.read_text()
