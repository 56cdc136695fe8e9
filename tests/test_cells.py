"""Grid expansion and cell ids: stable content hashes, tied axes, nothing about where a cell runs."""
from __future__ import annotations

import yaml

from raydw.cells import expand
from raydw.spec import parse_spec

# A golden value: if this changes, every existing store's cells would run again. Change it only on purpose
# (and bump raydw.cells.HASH_VERSION). The spec is spelled out here so no other fixture can move it.
GOLDEN_SPEC = """
name: golden
pretrainings:
  - {name: ST, recipe: {kind: standard, arch: resnet_tiny, dataset: mnist5k, epochs: 1}}
tickets: {method: omp, sparsities: [0.5]}
data: {datasets: [digits]}
regimes:
  adversarial:
    kind: adversarial
    epochs: 2
    batch_size: 64
    optimizer: {lr: 0.01, milestones: [1]}
    attack: {eps: 8/255, step_size: 2/255, steps: 3}
eval: {attack: {eps: 8/255, step_size: 2/255, steps: 20}}
"""
GOLDEN = {("dense", 0.0): "e29014398089f016", ("omp", 0.5): "39b4b4948bf67722"}


def _spec(text, **edits):
    d = yaml.safe_load(text)
    for k, v in edits.items():
        d[k] = v
    return parse_spec(d)


def test_cell_id_golden_value_is_stable():
    cells = {(c.ticket_method, c.target_sparsity): c.cell_id for c in expand(_spec(GOLDEN_SPEC))}
    assert cells == GOLDEN


def test_grid_is_dense_plus_each_level_per_setting(tiny_spec_text):
    cells = expand(_spec(tiny_spec_text))
    assert [(c.ticket_method, c.target_sparsity) for c in cells] == [("dense", 0.0), ("omp", 0.5)]
    assert len({c.cell_id for c in cells}) == 2


def test_storage_resources_and_sweep_name_do_not_change_cell_ids(tiny_spec_text):
    a = [c.cell_id for c in expand(_spec(tiny_spec_text))]
    b = [c.cell_id for c in expand(_spec(tiny_spec_text, storage="/elsewhere", name="other",
                                         resources={"max_concurrent_cells": 7, "gpus_per_worker": 1}))]
    assert a == b


def test_anything_that_changes_the_numbers_changes_the_id(tiny_spec_text):
    base = {c.target_sparsity: c.cell_id for c in expand(_spec(tiny_spec_text))}
    seeds = {c.target_sparsity: c.cell_id for c in expand(_spec(tiny_spec_text, seeds=[2]))}
    assert set(base.values()).isdisjoint(seeds.values())


def test_dense_cell_is_shared_between_ticket_methods(tiny_spec_text):
    omp = expand(_spec(tiny_spec_text))
    rnd = expand(_spec(tiny_spec_text, tickets={"method": "random", "sparsities": [0.5]}))
    assert omp[0].cell_id == rnd[0].cell_id  # the dense baseline
    assert omp[1].cell_id != rnd[1].cell_id


def test_data_fractions_belong_to_their_regime():
    from pathlib import Path

    from raydw.spec import load_spec

    cells = expand(load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"))
    assert {c.data_fraction for c in cells if c.regime_kind == "standard"} == {1.0}
    assert {c.data_fraction for c in cells if c.regime_kind == "adversarial"} == {1.0, 0.1, 0.01}
    # 3 pretrainings x 13 levels x 3 datasets x (1 standard + 3 adversarial fractions)
    assert len(cells) == 468


def test_per_dataset_overrides_resolve_into_the_cell():
    from pathlib import Path

    from raydw.spec import load_spec

    cells = expand(load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"))
    svhn = next(c for c in cells if c.dataset == "svhn" and c.regime_kind == "adversarial")
    cifar = next(c for c in cells if c.dataset == "cifar10" and c.regime_kind == "adversarial")
    assert (svhn.regime_spec.epochs, svhn.regime_spec.optimizer.schedule) == (80, "cosine")
    assert (cifar.regime_spec.epochs, cifar.regime_spec.optimizer.schedule) == (100, "multistep")


def test_a_cell_holds_its_specs_typed_and_the_cells_of_one_setting_share_one_regime():
    from pathlib import Path

    from raydw.spec import RegimeSpec, load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml")
    cells = expand(spec)
    assert all(isinstance(c.regime_spec, RegimeSpec) and c.eval_spec is spec.eval for c in cells)
    shared: dict[tuple, set[int]] = {}
    for c in cells:
        shared.setdefault((c.regime, c.dataset), set()).add(id(c.regime_spec))
    assert all(len(ids) == 1 for ids in shared.values()) and len(shared) == 6  # 2 regimes x 3 datasets
    c = cells[-1]
    assert c.regime_spec == spec.regimes[c.regime].for_dataset(c.dataset)  # resolved as written, not rebuilt
