"""The input files a sweep needs, checked before Ray starts: missing ones (with the command that provides each)
and present ones that cannot be used (damaged weights, wrong mask files). Torch-light: tensors are memory-mapped
and shapes compared with the arch built on the meta device."""
from __future__ import annotations

import os
from pathlib import Path

from raydw.cells import pretrained_id, pretraining_arch
from raydw.data import catalog as data_catalog
from raydw.data.catalog import STREAMED
from raydw.data.prepare import FILES, missing_files, unusable_files
from raydw.models.catalog import PRETRAINED, fetch_command, local_weights_path
from raydw.planning.plan import Plan
from raydw.tickets.registry import get as method
from raydw.spec import ImpSpec, SpecError, SweepSpec
from raydw.store import Store
from raydw.trackers import check as check_trackers


def check_inputs(spec: SweepSpec, store: Store, address: str | None, data_root: str | None, out,
                 readable: bool = True) -> None:
    """Missing weights or data, before anything runs. On local Ray the driver's files are the workers' files, so a
    sweep that lacks them is refused (else every cell would start, fail and be retried on each rerun). On a
    cluster the workers may hold them (docs/cluster.md: data on the GPU nodes), so it is a warning.
    `readable=False` (the preflight): files that are there but cannot be used are left to fail their own paths."""
    check_trackers(spec.trackers, f"sweep {spec.name}")  # a tracker whose package is absent, before Ray
    p = Plan.of(spec, store)
    miss = missing_inputs(spec, data_root, plan=p)
    bad = unreadable_inputs(p) if readable else []  # there but unusable: refused wherever the cells run
    if bad:
        listed = "\n".join(f"  {m}" for m in bad)
        raise SpecError(f"sweep {spec.name}: input files that cannot be used, nothing was run:\n{listed}")
    if not miss:
        return
    listed = "\n".join(f"  {m}" for m in miss)
    if address or os.environ.get("RAY_ADDRESS"):  # raydw.run.cluster.cluster_address, without importing Ray
        out(f"inputs missing on this machine (the driver); cells fail unless the cluster's workers have them:\n{listed}")
        return
    raise SpecError(f"sweep {spec.name}: inputs missing on this machine, nothing was run:\n{listed}")


def unreadable_inputs(plan: Plan) -> list[str]:
    """`weights:` files and import mask files present on this machine that the sweep could not use (damaged,
    a pickle payload, not a state dict, wrong keys or shapes for the arch), each with the file and the reason.
    Checked before Ray starts, where the driver reads them (register_weights, ensure_masks); cheap: tensors are
    memory-mapped and compared by shape with the arch built on the meta device."""
    # torch: only where a sweep checks its files (the dry run and `raydw status` stay torch-free)
    from raydw.models.convert import CheckpointError, check_weights
    from raydw.pruning.importer import check_mask_file

    spec, out = plan.spec, []
    for i, item in enumerate(plan.pretrainings):
        p = item.spec
        if item.state != "register":
            continue
        path = local_weights_path(p.weights)
        if not path.is_file():
            continue  # missing: missing_inputs says so, with the command that fetches it
        entry = PRETRAINED.get(p.weights)
        try:
            check_weights(path, pretraining_arch(p), entry.format if entry else None)
        except CheckpointError as e:
            out.append(f"pretrainings.{i}.weights ({p.name}): {e}")
    for i, t in enumerate(spec.tickets):
        for name, f in (t.files.items() if t.method == "import" else ()):
            try:
                check_mask_file(f)
            except FileNotFoundError:
                continue  # missing_inputs says so (unless its mask is stored already)
            except ValueError as e:
                out.append(f"tickets.{i}.files.{name}: {e}")
    return out


def missing_inputs(spec: SweepSpec, data_root: str | None = None, store: Store | None = None,
                   plan: Plan | None = None) -> list[str]:
    """Each local file a sweep needs and lacks, with the command (or manual step) that provides it.

    `data_root`: `raydw sweep --data-root`, which replaces data.root. Only what the remaining work needs, by the
    plan (of `store`, where the caller has not planned already): weights and pre-trained recipes the store holds,
    datasets whose cells are all done and IMP sources whose rounds are all stored are not asked for (a rerun
    elsewhere of a sweep that ran on a cluster). Without a store every input of the spec is asked for."""
    p = Plan.of(spec, store) if plan is None else plan
    out = []
    for item in (i for i in p.pretrainings if i.state == "register"):
        path = local_weights_path(item.spec.weights)
        how = fetch_command(item.spec.weights) if item.spec.weights in PRETRAINED else "a local file: check the path"
        if not path.is_file():
            out.append(f"pre-training {item.spec.name}: {path} {'is a folder' if path.is_dir() else 'missing'} -> {how}")
        elif path.stat().st_size == 0:
            out.append(f"pre-training {item.spec.name}: {path} is empty (0 bytes) -> {how}")
    root = data_root or spec.data.root
    # Downstream datasets with cells to run or tune (waiting cells run once tuned), and the source tasks of recipes
    # still to train (they read data.root too).
    todo = {c.dataset for c in p.cells if c.cell_id not in p.done}
    recipes = [i.spec.recipe.dataset for i in p.pretrainings if i.state == "train"]
    for ds in dict.fromkeys([*(d for d in spec.data.datasets if d in todo), *recipes]):
        if not data_catalog.get(ds).needs_root or ds not in FILES:
            continue  # packaged data; or a dataset without a downstream reader (imagenet: streamed, below)
        where = f"--root {root}" if root else "--root DIR (and set data.root)"
        for gone, what in ((missing_files(ds, root), " missing"), (unusable_files(ds, root), "")):
            if gone:  # unusable: present but empty, a folder, or another format by its first bytes
                more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
                out.append(f"dataset {ds}: {gone[0]}{more}{what} -> raydw data prepare {ds} {where}")
    out += _missing_mask_files(p)
    for t in (t for t in spec.tickets if t.method == "imp"):
        imp = t.imp or ImpSpec()  # no imp section: the paper's defaults
        if imp.dataset not in STREAMED:
            continue
        if not any(i.to_make for i in p.imp if i.params == method("imp").params(t, i.pretraining.name)):  # every round stored: IMP has nothing left to train
            continue
        root = Path(imp.root).expanduser() if imp.root else None
        gone = ["tickets.imp.root (not set)"] if root is None else [str(root / d) for d in ("train", "val") if not (root / d).is_dir()]
        if gone:  # no download: ILSVRC-2012 needs an account (image-net.org), so this is a manual step
            out.append(f"IMP source {imp.dataset}: {' and '.join(gone)} missing -> put ILSVRC-2012 there as an ImageFolder "
                       "(train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, 1000 classes each; docs/tickets.md)")
    return out


def _missing_mask_files(plan: Plan) -> list[str]:
    """Import tickets' mask files that are not on this machine, unless the store holds their masks already."""
    out = []
    for i, t in enumerate(plan.spec.tickets):
        for p in (p for p in plan.spec.pretrainings if t.method == "import" and p.name in t.files):
            pid = pretrained_id(p)
            if all(m.stored for m in plan.masks if m.ticket_index == i and m.pretrained_id == pid):
                continue
            f = Path(t.files[p.name]).expanduser()
            if not f.is_file():
                out.append(f"tickets.{i}.files.{p.name}: mask file {f} {'is a folder' if f.is_dir() else 'missing'} "
                           "-> a reference-format ticket checkpoint (`raydw export-mask` writes one)")
            elif f.stat().st_size == 0:
                out.append(f"tickets.{i}.files.{p.name}: mask file {f} is empty (0 bytes)")
    return out
