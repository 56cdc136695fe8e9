"""`raydw sweep --dry-run`: the cells, what each asks of the cluster, what is already done, what is missing.

Torch- and Ray-free, so it answers in about a second even for the paper's grid.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from raydw.cells import expand, tune_groups
from raydw.data import catalog as data_catalog
from raydw.models.catalog import PRETRAINED
from raydw.spec import SweepSpec
from raydw.store import Store


def missing_inputs(spec: SweepSpec, data_root: str | None = None, store: Store | None = None,
                   todo: set[str] | None = None) -> list[str]:
    """Each local file a sweep needs and lacks, with the command (or manual step) that provides it.

    `data_root`: `raydw sweep --data-root`, which replaces data.root. With `store`, only what the remaining work
    needs: weights and pre-trained recipes the store holds, datasets whose cells are all done and IMP sources
    whose rounds are all stored are not asked for (a rerun elsewhere of a sweep that ran on a cluster). `todo`:
    the datasets of the cells still to run, where the caller has planned them already (else planned here)."""
    from raydw.cells import pretrained_id
    from raydw.data.catalog import STREAMED
    from raydw.data.prepare import FILES, missing_files, unusable_files
    from raydw.mask_keys import imp_rounds_needed, mask_params, stored_imp_rounds
    from raydw.models.catalog import fetch_command, local_weights_path
    from raydw.spec import ImpSpec

    def stored(p) -> bool:
        return store is not None and store.exists("pretrained", f"{pretrained_id(p)}.parquet")

    out = []
    for p in (p for p in spec.pretrainings if p.weights is not None and not stored(p)):
        path = local_weights_path(p.weights)
        how = fetch_command(p.weights) if p.weights in PRETRAINED else "a local file: check the path"
        if not path.is_file():
            out.append(f"pre-training {p.name}: {path} {'is a folder' if path.is_dir() else 'missing'} -> {how}")
        elif path.stat().st_size == 0:
            out.append(f"pre-training {p.name}: {path} is empty (0 bytes) -> {how}")
    if store is not None and todo is None:
        done = store.done_cells()
        todo = {c.dataset for c in expand(spec, store.recipes() if spec.tune.enabled else {}) if c.cell_id not in done}
    root = data_root or spec.data.root
    # Downstream datasets with cells to run, and the source tasks of recipes still to train (they read data.root too).
    recipes = [p.recipe.dataset for p in spec.pretrainings if p.recipe is not None and not stored(p)]
    for ds in dict.fromkeys([*(d for d in spec.data.datasets if todo is None or d in todo), *recipes]):
        if not data_catalog.get(ds).needs_root or ds not in FILES:
            continue  # packaged data; or a dataset without a downstream reader (imagenet: streamed, below)
        where = f"--root {root}" if root else "--root DIR (and set data.root)"
        for gone, what in ((missing_files(ds, root), " missing"), (unusable_files(ds, root), "")):
            if gone:  # unusable: present but empty, a folder, or another format by its first bytes
                more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
                out.append(f"dataset {ds}: {gone[0]}{more}{what} -> raydw data prepare {ds} {where}")
    out += _missing_mask_files(spec, store)
    for t in (t for t in spec.tickets if t.method == "imp"):
        imp = t.imp or ImpSpec()  # no imp section: the paper's defaults
        if imp.dataset not in STREAMED:
            continue
        if store is not None and all(  # every round of every pre-training stored: IMP has nothing left to train
                set(range(1, imp_rounds_needed(t) + 1)) <= set(stored_imp_rounds(store, pretrained_id(p), mask_params(t, p.name)))
                for p in spec.pretrainings):
            continue
        root = Path(imp.root).expanduser() if imp.root else None
        gone = ["tickets.imp.root (not set)"] if root is None else [str(root / d) for d in ("train", "val") if not (root / d).is_dir()]
        if gone:  # no download: ILSVRC-2012 needs an account (image-net.org), so this is a manual step
            out.append(f"IMP source {imp.dataset}: {' and '.join(gone)} missing -> put ILSVRC-2012 there as an ImageFolder "
                       "(train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, 1000 classes each; docs/tickets.md)")
    return out


def _missing_mask_files(spec: SweepSpec, store: Store | None) -> list[str]:
    """Import tickets' mask files that are not on this machine, unless the store holds their masks already."""
    import json

    from raydw.cells import pretrained_id
    from raydw.mask_keys import mask_params

    have: set[tuple] = set()
    if store is not None:
        have = {(r["pretrained_id"], r["method"], r["params"]) for r in
                store.read_table("masks", columns=["pretrained_id", "method", "params"]).to_pylist()}
    out = []
    for i, t in enumerate(spec.tickets):
        for p in (p for p in spec.pretrainings if t.method == "import" and p.name in t.files):
            f = Path(t.files[p.name]).expanduser()
            key = (pretrained_id(p), "import", json.dumps(mask_params(t, p.name), sort_keys=True))
            if key in have:
                continue
            if not f.is_file():
                out.append(f"tickets.{i}.files.{p.name}: mask file {f} {'is a folder' if f.is_dir() else 'missing'} "
                           "-> a reference-format ticket checkpoint (`raydw export-mask` writes one)")
            elif f.stat().st_size == 0:
                out.append(f"tickets.{i}.files.{p.name}: mask file {f} is empty (0 bytes)")
    return out


def dry_run(spec: SweepSpec, storage: str, data_root: str | None = None) -> str:
    store = Store(storage)
    exists = Path(store.root).exists() or not store.local
    recipes = store.recipes() if spec.tune.enabled and exists else {}
    cells = expand(spec, recipes)
    done = store.done_cells() if exists else set()
    r = spec.resources
    lines = [f"sweep {spec.name}: {len(cells)} cells ({len(done & {c.cell_id for c in cells})} done) -> store {store.uri}",
             f"each cell: {r.workers_per_cell} Ray Train worker(s) x ({r.cpus_per_worker} CPU, {r.gpus_per_worker} GPU)"
             + (f", at most {r.max_concurrent_cells} at once" if r.max_concurrent_cells else "")]
    if spec.search.mode == "extreme":
        lines.append(f"search: extreme ({spec.search.rule} rule, verify {spec.search.verify}): the table is the full grid; "
                     "dense cells run first, then only the ticket levels the search asks for (docs/search.md)")
    if spec.early_stop.enabled:
        lines.append(f"early stopping: tickets trailing their dense model by > {spec.early_stop.margin} after the grace period stop")
    if spec.tune.enabled:
        lines += _tune_lines(spec, store, recipes, exists)
    lines.append("")
    hdr = f"{'cell_id':16s}  {'pretraining':11s} {'ticket':7s} {'sparsity':>8s}  {'dataset':9s} {'regime':12s} {'fraction':>8s} {'seed':>4s} {'epochs':>6s}  status"
    lines += [hdr, "-" * len(hdr)]
    for c in cells:
        lines.append(f"{c.cell_id:16s}  {c.pretraining:11s} {c.ticket_method:7s} {c.target_sparsity:8.4f}  {c.dataset:9s} "
                     f"{c.regime:12s} {c.data_fraction:8g} {c.seed:4d} {c.regime_spec['epochs']:6d}  "
                     f"{'done' if c.cell_id in done else 'tune first' if c.tune_id and not c.recipe_id else 'todo'}")
    by = Counter((c.pretraining, c.regime, c.data_fraction) for c in cells)
    lines += ["", "cells per (pretraining, regime, fraction): " + ", ".join(f"{k[0]}/{k[1]}/{k[2]:g}: {v}" for k, v in sorted(by.items()))]
    epochs = sum(c.regime_spec["epochs"] for c in cells)
    lines.append(f"fine-tuning epochs in total: {epochs}")
    from raydw.cost import plan_text

    sched = spec.eval.val_schedule()
    lines += ["", plan_text(cells, spec.eval.attack.steps,
                            None if sched is None else (sched[0], sched[1].steps, sched[2]), done,
                            spec=spec, store=store if exists else None)]
    miss = missing_inputs(spec, data_root, store=store if exists else None,
                          todo={c.dataset for c in cells if c.cell_id not in done})
    lines += ["", "missing inputs:" if miss else "inputs: all present"] + [f"  {m}" for m in miss]
    return "\n".join(lines)


def _tune_lines(spec: SweepSpec, store: Store, recipes: dict, exists: bool) -> list[str]:
    """Which dense recipes are tuned (stored) and which are still to tune, with their stored trial counts."""
    import json

    t = spec.tune
    groups = tune_groups(spec)
    todo = [g for g in groups if g.tune_id not in recipes]
    trials: dict[str, int] = {}
    if exists and todo:
        tab = store.read_table("trials", columns=["phase", "tune_id"]).to_pylist()
        for r in tab:
            if r["phase"] == "tune":
                trials[r["tune_id"]] = trials.get(r["tune_id"], 0) + 1
    rows = {r["tune_id"]: r for r in store.read_table("recipes").to_pylist()} if exists and recipes else {}
    out = [f"tune: {len(groups)} dense recipe(s) (pre-training, dataset, regime, fraction), {len(groups) - len(todo)} tuned "
           f"(stored), {len(todo)} to tune first: Optuna TPE (seed {t.seed}, {t.n_startup()} random startup trials), "
           f"{t.num_samples} dense trials each over {sorted(t.space.fields())}; the chosen recipe is then held fixed for "
           "the group's dense cell and every ticket (docs/tuning.md)"]
    for g in groups:
        if g.tune_id in recipes:
            r = rows.get(g.tune_id, {})
            out.append(f"  tuned   {g.label()}: {json.dumps(recipes[g.tune_id], sort_keys=True)} ({g.metric} "
                       f"{r.get('value', float('nan')):.3f}, {r.get('trials')} trials)")
        else:
            out.append(f"  to tune {g.label()}: {trials.get(g.tune_id, 0)} of {t.num_samples} trials stored, maximize {g.metric}")
    if todo:
        out.append("  cells marked 'tune first' are listed with their regime as written: their ids (and epochs, where tuned) "
                   "are known only once their recipe is chosen")
    return out
