"""Store layouts at the paper's grid and at 10x it: files per table, whole-table loads, "what is left to run", the
whole-sweep compaction, on local disk and (--s3) through a local S3 server (moto, loopback), with its requests.

    python benchmarks/store_read.py [--scales 1 10] [--root /tmp/raydw-store-bench] [--repeat 3] [--s3] [--delta]
                                    [--layouts before per-cell compacted] [--s3-upload-compacted]

Per scale (1 = the paper grid: 468 cells, 107 epochs each, ~50,000 epoch rows) three stores are measured:
  before     the earlier layout: one epochs file per epoch row (written as the old write path wrote them, without its
             temporary and fsync, to keep generation short; the files are the same) and one trials file per cell
  per-cell   raydw's write path now: one trials and one epochs file per cell (Store.write_row / write_rows)
  compacted  per-cell after raydw.store.compact.compact (timed: the compaction of the whole sweep)
"What is left to run" is raydw.planning.plan.plan(spec, store).todo (what the sweep, `raydw status` and the dry run use) for
sweeps/paper.yaml with more seeds, about 10% more cells than are stored (1x: 2 seeds, 936 cells; 10x: 11 seeds,
5,148 cells); the stored cells are its first ones, under their real cell ids.
Trials rows carry CIFAR-sized per-example bits (nine bits_* columns of 1,250 bytes) and a 2 kB config. Stores are
generated once under --root and reused. --s3-upload-compacted: on S3 only the compacted store, its parts copied from
the local one under --root (one PUT each), its loads measured (moto is too slow to generate 10x through it). --delta
adds a Delta Lake table (deltalake) of the same epochs, one commit per cell, before and after its OPTIMIZE, for the
layout comparison. Results: docs/results-schema.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raydw import outcomes

from raydw.findings import results
from raydw.store.compact import compact
from raydw.planning.plan import plan
from raydw.spec import SweepSpec, parse_spec
from raydw.store import SCHEMAS, Store

CELLS, EPOCHS = 468, 107  # sweeps/paper.yaml: 468 cells, ~50,000 epoch rows
IDS: list[str] = []  # the cell ids of the scale being measured (paper_spec)
PAPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sweeps", "paper.yaml")


def paper_spec(cells: int) -> tuple[SweepSpec, list[str]]:
    """sweeps/paper.yaml with enough seeds for about 10% more cells than `cells` (at least 2 seeds), and its cell ids
    in plan order: the stored cells are the first `cells` of them."""
    import yaml

    with open(PAPER) as f:
        d = yaml.safe_load(f)
    per_seed = len(plan(parse_spec(d)).cells)
    d["seeds"] = list(range(1, 1 + max(2, -(-cells * 11 // (10 * per_seed)))))
    spec = parse_spec(d)
    return spec, [c.cell_id for c in plan(spec).cells]


def trial_row(i: int, rng) -> dict:
    row = {"cell_id": IDS[i], "sweep": "bench", "status": "done" if i % 17 else "failed", "sa": 0.9, "ra": 0.5,
           "dataset": "cifar10", "arch": "resnet18", "ticket_method": "imp", "ticket_round": i % 19, "seed": i % 5,
           "epochs": EPOCHS, "test_n": 10000, "config": "{" + "x" * 2000 + "}", "phase": "main"}
    row.update({c: rng.bytes(1250) for c in outcomes.COLUMNS})
    return row


def epoch_rows(i: int) -> list[dict]:
    return [{"cell_id": IDS[i], "epoch": e, "lr": 0.01, "train_loss": 1.0 / (e + 1), "train_acc": 0.5,
             "val_sa": 0.5 + e / 1000, "val_ra": 0.2, "epoch_s": 30.0, "eval_s": 3.0, "train_images": 45000,
             "node": "node-1", "resumed_from": 0} for e in range(EPOCHS)]


def generate(store: Store, cells: int, layout: str) -> float:
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    for i in range(cells):
        store.write_row("trials", trial_row(i, rng))
        rows = epoch_rows(i)
        if layout == "per-cell":
            store.write_rows("epochs", rows[0]["cell_id"], rows)
        else:  # the earlier layout: one file per epoch row, named <cell>.e<epoch>
            folder = store.path("epochs")
            store.fs.create_dir(folder, recursive=True)
            for r in rows:
                t1 = pa.Table.from_pylist([r], schema=SCHEMAS["epochs"])
                with store.fs.open_output_stream(f"{folder}/{r['cell_id']}.e{r['epoch']:04d}.parquet") as f:
                    pq.write_table(t1, f)
    return time.perf_counter() - t


class Requests:
    """Requests the local S3 server answered (its access log: one line each)."""

    def __init__(self, log: str | None):
        self.log = log

    def count(self) -> int:
        if not self.log:
            return 0
        with open(self.log, errors="replace") as f:
            return sum(1 for line in f if re.search(r'" \d{3} ', line))


def timed(fn, repeat: int, req: Requests):
    best, n0 = None, req.count()
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        s = time.perf_counter() - t
        best = s if best is None else min(best, s)
    return out, best, (req.count() - n0) // repeat


def measure(store: Store, cells: int, repeat: int, req: Requests, spec: SweepSpec) -> dict:
    files = {t: len(store.list_files(t)) for t in ("trials", "epochs")}
    trials, t_trials, r_trials = timed(lambda: results.load(store.uri, "trials", phase=None), repeat, req)
    epochs, t_epochs, r_epochs = timed(lambda: results.load(store.uri, "epochs"), repeat, req)
    left, t_left, r_left = timed(lambda: plan(spec, Store(store.uri)).todo, repeat, req)  # the sweep's own definition
    one, t_get, r_get = timed(lambda: Store(store.uri).get("epochs", f"{IDS[cells // 2]}.e0042"), repeat, req)
    assert len(trials) == cells and len(epochs) == cells * EPOCHS and one["epoch"] == 42, (len(trials), len(epochs))
    assert len(left) == len(IDS) - sum(1 for i in range(cells) if i % 17), (len(left), len(IDS))
    return {"spec_cells": len(IDS), "files": files, "trials_s": t_trials, "epochs_s": t_epochs, "left_s": t_left, "get_s": t_get,
            "req": {"trials": r_trials, "epochs": r_epochs, "left": r_left, "get": r_get}}


def line(where: str, scale: int, layout: str, m: dict, extra: str = "") -> str:
    r = m["req"]
    req = f" | {r['trials']} / {r['epochs']} / {r['left']} / {r['get']}" if where == "s3" else ""
    return (f"| {where} | {scale}x | {layout} | {m['files']['trials']:,} / {m['files']['epochs']:,} | {m['trials_s']:.2f} | "
            f"{m['epochs_s']:.2f} | {m['left_s']:.2f} | {m['get_s'] * 1000:.0f} ms | {extra}{req} |")


def uploaded(local: str, store: Store) -> str:
    """A local store's files PUT into the bucket as they are (one PUT each, as compaction writes its parts)."""
    t = time.perf_counter()
    for table in ("trials", "epochs"):
        for name in sorted(os.listdir(f"{local}/{table}")):
            with open(f"{local}/{table}/{name}", "rb") as f:
                store.write_bytes((table, name), f.read())
    return f"{local}'s parts uploaded in {time.perf_counter() - t:.0f} s; "


def run_scale(base: str, where: str, scale: int, a, req: Requests) -> list[str]:
    global IDS
    cells = CELLS * scale
    spec, IDS = paper_spec(cells)
    print(f"  {scale}x: {cells} cells stored, a spec of {len(IDS)} cells planned against them", flush=True)
    out = []
    if where == "s3" and a.s3_upload_compacted:  # moto writes ~10 PUTs/s: the local compacted store's parts instead
        store = Store(f"{base}/{scale}x-uploaded?{a.s3_query}")
        note = "" if store.list_files("trials") else uploaded(f"{a.root}/{scale}x-per-cell-compacted", store)
        out.append(line(where, scale, "compacted", measure(store, cells, a.repeat, req, spec), note))
        print(out[-1], flush=True)
        return out
    for layout in (x for x in ("before", "per-cell") if x in a.layouts or (x == "per-cell" and "compacted" in a.layouts)):
        n = cells
        if where == "s3" and layout == "before":  # moto takes ~30 PUTs/s here: 50,000 would take half an hour
            if scale > 1:
                continue
            n = max(1, int(cells * a.s3_before_fraction))
        uri = f"{base}/{scale}x-{layout}"
        store = Store(uri if where == "local" else f"{uri}?{a.s3_query}")
        gen = "" if n == cells else f"{n} cells ({a.s3_before_fraction:g} of {scale}x); "
        if len(store.list_files("trials")) != n:
            gen += f"generated in {generate(store, n, layout):.0f} s; "
            print(f"  {where} {scale}x {layout}: {gen}", flush=True)
        big = n * EPOCHS > 100_000  # the earlier layout at 10x: minutes per load, so one run
        if layout in a.layouts:
            out.append(line(where, scale, layout, measure(store, n, 1 if big and layout == "before" else a.repeat, req, spec), gen))
            print(out[-1], flush=True)
        if layout == "per-cell" and "compacted" in a.layouts:
            if where == "local":  # compact a copy: the per-cell store stays for the next run
                shutil.rmtree(f"{uri}-compacted", ignore_errors=True)
                shutil.copytree(uri, f"{uri}-compacted")
                store = Store(f"{uri}-compacted")
            n0 = req.count()
            t = time.perf_counter()
            done = compact(store)
            c_s, c_req = time.perf_counter() - t, req.count() - n0
            m = measure(store, cells, a.repeat, req, spec)
            out.append(line(where, scale, "compacted", m, f"compaction {c_s:.1f} s" + (f" ({c_req:,} requests)" if c_req else "")
                            + f", {done['epochs']['parts']} + {done['trials']['parts']} parts; "))
            print(out[-1], flush=True)
    return out


def delta(root: str, a) -> list[str]:
    import deltalake

    global IDS
    out = []
    for scale in a.delta_scales:
        path = f"{root}/{scale}x-delta"
        cells = CELLS * scale
        IDS = paper_spec(cells)[1]
        if not os.path.exists(path):
            t = time.perf_counter()
            for i in range(cells):
                deltalake.write_deltalake(path, pa.Table.from_pylist(epoch_rows(i), schema=SCHEMAS["epochs"]), mode="append")
            print(f"  delta {scale}x: {cells} commits in {time.perf_counter() - t:.0f} s", flush=True)
        for stage in ("one commit per cell", "after OPTIMIZE + VACUUM"):
            if stage.startswith("after"):
                t = time.perf_counter()
                dt = deltalake.DeltaTable(path)
                dt.optimize.compact()
                dt.create_checkpoint()
                dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
                stage += f" ({time.perf_counter() - t:.1f} s)"
            files = sum(1 for n in os.listdir(path) if n.endswith(".parquet"))
            _, s, _ = timed(lambda: deltalake.DeltaTable(path).to_pyarrow_table().to_pandas(), a.repeat, Requests(None))
            out.append(f"| local | {scale}x | Delta Lake, {stage} | - / {files:,} | - | {s:.2f} | - | - | |")
            print(out[-1], flush=True)
    return out


def s3_server(root: str):
    """moto's S3 server on 127.0.0.1 (a free port), its access log under root."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = f"{root}/moto-{port}.log"
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import boto3

    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="raydw-bench")
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    return proc, port, log


def main() -> None:
    global CELLS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="multiples of the paper grid")
    ap.add_argument("--root", default="/tmp/raydw-store-bench", help="where the stores are generated (and reused)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is printed)")
    ap.add_argument("--s3", action="store_true", help="also through a local S3 server (moto on 127.0.0.1)")
    ap.add_argument("--s3-only", action="store_true", help="only the S3 figures")
    ap.add_argument("--s3-before-fraction", type=float, default=0.1,
                    help="the earlier layout on S3: this fraction of the 1x cells (moto: ~30 PUTs/s on 2 cores)")
    ap.add_argument("--s3-upload-compacted", action="store_true",
                    help="on S3, measure only the compacted store, uploaded from --root's local one (made by a local run)")
    ap.add_argument("--delta-scales", type=int, nargs="+", default=[1], help="sizes of the Delta Lake comparison")
    ap.add_argument("--delta", action="store_true", help="also a Delta Lake table of the epochs (deltalake)")
    ap.add_argument("--cells", type=int, default=CELLS, help="cells of the 1x grid (468: the paper's)")
    ap.add_argument("--layouts", nargs="+", default=["before", "per-cell", "compacted"],
                    choices=["before", "per-cell", "compacted"], help="the stores to measure (compacted needs per-cell's)")
    a = ap.parse_args()
    CELLS = a.cells
    os.makedirs(a.root, exist_ok=True)
    rows = []
    if not a.s3_only:
        for scale in a.scales:
            rows += run_scale(a.root, "local", scale, a, Requests(None))
    if a.delta:
        rows += delta(a.root, a)
    if a.s3 or a.s3_only:
        proc, port, log = s3_server(a.root)
        a.s3_query = f"endpoint_override=127.0.0.1:{port}&scheme=http"
        try:
            for scale in a.scales:
                rows += run_scale("s3://raydw-bench", "s3", scale, a, Requests(log))
        finally:
            proc.terminate()
    print("\n| where | size | layout | files trials / epochs | trials load s | epochs load s | left to run s | one get() |"
          " notes | " + ("requests trials / epochs / left / get |" if a.s3 or a.s3_only else ""))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
