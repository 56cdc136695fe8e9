"""The HTML report and the status summary, on a hand-made store (always) and on a copy of the demo store (if present)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from raydw.cells import expand
from raydw.cli import DEMO, main
from raydw.reporting.report import write_report
from raydw.spec import load_spec
from raydw.reporting.status import summary
from raydw.store import Store

def put(store: Store, pre: str, k: int, regime: str, frac: float, sa: float, ra: float | None,
        status: str = "done", error: str = "", wall_s: float = 10.0, workers: int = 1, device: str = "cpu (1 threads)") -> None:
    method = "dense" if k == 0 else "imp"
    store.write_row("trials", {
        "cell_id": f"{pre}-{k}-{regime}-{frac:g}", "sweep": "t", "status": status, "error": error, "pretraining": pre,
        "ticket_method": method, "ticket_round": k, "target_sparsity": 1 - 0.8 ** k, "sparsity": 1 - 0.8 ** k,
        "dataset": "digits", "regime": regime, "regime_kind": regime, "data_fraction": frac, "seed": 1,
        "sa": sa, "ra": ra, "sa_last": sa, "ra_last": ra, "wall_s": wall_s, "workers": workers, "device": device})


def _hand_store(path: Path) -> Store:
    """Two pre-trainings, dense + IMP rounds 1-2, standard f=1 and adversarial f=1 / 0.1; one failed cell."""
    store = Store(str(path))
    for pre, base in (("ST", 0.80), ("AT", 0.75)):
        for k in (0, 1, 2):
            put(store, pre, k, "standard", 1.0, base - 0.02 * k, None)
            put(store, pre, k, "adversarial", 1.0, base - 0.2 - 0.01 * k, 0.40 - 0.03 * k)
            put(store, pre, k, "adversarial", 0.1, base - 0.4 + 0.01 * k, 0.10 + 0.01 * k)
    put(store, "AT", 2, "adversarial", 0.1, None, None, status="failed", error="ValueError: mask shape mismatch\n  at ...")
    return store


@pytest.fixture
def hand_store(tmp_path) -> Store:
    return _hand_store(tmp_path / "store")


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory) -> Path:
    """The hand store's report, written once (~1 s: two PNGs) for the tests that only read it; they share a worker."""
    t = tmp_path_factory.mktemp("hand_report")
    return write_report(_hand_store(t / "store").uri, t / "report")


# The tests that read hand_report: on one pytest-xdist worker (`--dist loadgroup`), so it is written once.
reads_hand_report = pytest.mark.xdist_group("hand_report")


def pngs_referenced(index: Path) -> list[Path]:
    return [index.parent / m for m in re.findall(r"<img src='([^']+\.png)'", index.read_text())]


@reads_hand_report
def test_the_report_writes_index_html_referencing_its_pngs_relatively(hand_report):
    index = hand_report
    pngs = pngs_referenced(index)
    assert index.name == "index.html" and len(pngs) == 2
    assert all(p.exists() and p.parent == index.parent for p in pngs)


@reads_hand_report
def test_every_report_png_is_a_valid_nonempty_image(hand_report):
    for png in pngs_referenced(hand_report):
        assert png.stat().st_size > 10_000
        with Image.open(png) as im:
            im.verify()  # raises on a truncated or non-PNG file
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 300


@reads_hand_report
def test_the_report_has_all_five_sections_and_the_failed_cells_error(hand_report):
    text = hand_report.read_text()
    for title in ("(1) SA and RA against sparsity", "(2) Extreme double-win sparsity", "(3) Data efficiency",
                  "(4) Verdicts per ticket", "(5) Sweep status", "full (SA std", "loose (SA std"):
        assert title in text
    assert "ValueError: mask shape mismatch" in text and "17 done, 1 failed" in text


def test_the_report_of_an_empty_store_still_shows_the_status(tmp_path):
    text = write_report(str(tmp_path / "empty"), tmp_path / "report").read_text()
    assert "no trials yet" in text and "0 done, 0 failed" in text


def _demo_shaped_store(path) -> tuple[Store, int]:
    """Every cell sweeps/demo.yaml plans, done, each with per-example outcomes on the 360 digits test images: made
    up (seeded), so the report's full grid is checked without running the demo. Returns the store and its cells."""
    import numpy as np

    from raydw import outcomes

    rng = np.random.default_rng(0)
    store = Store(str(path))
    cells = expand(load_spec(DEMO))
    base = rng.random(360)
    for c in cells:
        p = 0.9 - 0.15 * c.target_sparsity - (0.3 if c.regime_kind == "adversarial" else 0)
        clean = base < p + rng.normal(0, 0.01)
        robust = clean & (rng.random(360) < 0.5)
        row = c.row_fields()
        store.write_row("trials", {**row, "status": "done", "sparsity": c.target_sparsity, "sa": clean.mean(),
                                   "ra": robust.mean(), "wall_s": 5.0, "workers": 1, "device": "cpu", "test_n": 360,
                                   outcomes.column("clean", "sa_best"): outcomes.pack(clean),
                                   outcomes.column("robust", "ra_best"): outcomes.pack(robust),
                                   outcomes.column("robust", "sa_best"): outcomes.pack(robust)})
    return store, len(cells)


def test_the_report_of_a_demo_shaped_store_has_every_pretraining_intervals_and_states(tmp_path):
    store, n = _demo_shaped_store(tmp_path / "demo")
    index = write_report(store.uri, tmp_path / "report", rule="equivalence", margin=3.0)
    text = index.read_text()
    assert all(p.stat().st_size > 10_000 for p in pngs_referenced(index))
    pres = {c.pretraining for c in expand(load_spec(DEMO))}
    assert all(f"<td class=''>{p}</td>" in text for p in pres) and f"{n} done, 0 failed" in text
    assert "bars: its 95 % interval" in text and "rule equivalence, margin 3 points" in text
    assert "class='key inc'" in text  # the legend of the three states
    assert any(f"<td class='{k}'>{w}</td>" in text for k, w in (("yes", "match"), ("no", "no match"), ("inc", "inconclusive")))


@reads_hand_report
def test_the_report_renders_in_headless_chromium(hand_report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) - the rendered page is not checked")
    index = hand_report
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,2200",
                    f"--screenshot={shot}", index.as_uri()], check=True, timeout=120, capture_output=True)
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    # A blank or error page has a handful of colours; plots with anti-aliased lines and coloured tables have hundreds.
    assert colours is not None and len(colours) > 200


def test_status_counts_cells_and_device_hours_from_wall_time_and_workers(tmp_path):
    store = Store(str(tmp_path / "s"))
    put(store, "ST", 0, "standard", 1.0, 0.8, None, wall_s=1800, workers=2, device="cuda:0 NVIDIA H100")
    put(store, "ST", 1, "standard", 1.0, 0.8, None, wall_s=3600, workers=1, device="cpu (1 threads)")
    put(store, "ST", 2, "standard", 1.0, None, None, status="failed", error="OOM\nmore", wall_s=0)
    put(store, "ST", 3, "standard", 1.0, None, None, status="stopped", wall_s=0)
    text = summary(store.uri)
    assert "2 done, 1 failed, 1 stopped" in text
    assert "1.000 CPU-hours, 1.000 GPU-hours" in text and "mean wall per done cell: 45.0 min" in text
    assert "OOM" in text and "more" not in text and "(stopped, no error recorded)" in text  # first error line only


def test_status_with_a_spec_counts_missing_cells_and_estimates_time_left(tmp_path):
    cells = expand(load_spec(DEMO))
    store = Store(str(tmp_path / "s"))
    for c in cells[:3]:
        store.write_row("trials", {**{k: v for k, v in c.to_dict().items() if k not in ("canonical", "regime_spec", "arch",
                                                                                         "pretrained_id", "prunable", "protocol",
                                                                                         "normalization", "fraction_method", "ticket_index", "eval_spec")},
                                   "pretrained_id": c.pretrained_id, "status": "done", "wall_s": 30.0, "workers": 1, "device": "cpu"})
    text = summary(store.uri, DEMO)
    # The rest are left; settings without a done cell fall back to the overall mean of 30 s each.
    left = len(cells) - 3
    assert f"spec: {len(cells)} cells, {left} missing" in text and f"about {left * 30 / 60:.1f} min" in text


def test_the_status_and_report_commands_print_and_write(hand_store, tmp_path, capsys):
    assert main(["status", hand_store.uri]) == 0
    assert "17 done, 1 failed" in capsys.readouterr().out
    assert main(["report", hand_store.uri, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").exists()


def test_status_of_rows_without_wall_s_says_unknown_not_nan(tmp_path, capsys):
    """Rows written without wall_s (by hand, or an old raydw): `raydw status` printed 'mean wall per done cell: nan s'."""
    from raydw.cli import main
    from raydw.store import Store

    Store(str(tmp_path / "S")).write_row("trials", {"cell_id": "c1", "sweep": "t", "status": "done", "sa": 0.5, "ra": 0.1,
                                                    "dataset": "digits"})
    assert main(["status", str(tmp_path / "S")]) == 0
    out = capsys.readouterr().out
    assert "mean wall per done cell: unknown (no wall_s stored)" in out and "nan" not in out, out
