"""The spec's adaptive seeds section: typed and validated with errors naming the field, fixed seed lists unchanged,
and seed k's cells carrying the ids a fixed spec listing seeds 1..k gives them."""
from __future__ import annotations

from pathlib import Path

import pytest

from raydw.cells import expand
from raydw.spec import SpecError, load_spec, parse_spec

DEMO = Path(__file__).resolve().parents[1] / "raydw" / "sweeps" / "demo.yaml"


def _demo(**over) -> dict:
    return {**load_spec(DEMO).model_dump(mode="json", exclude_defaults=True), **over}


def test_adaptive_seeds_give_the_ids_of_the_fixed_seeds_they_stand_for():
    fixed = parse_spec(_demo(seeds=[1, 2, 3]))  # the demo as shipped
    adaptive = parse_spec(_demo(seeds={"adaptive": {"start": 1, "replicate": 3, "max": 3}}))
    assert {c.cell_id for c in expand(adaptive)} == {c.cell_id for c in expand(fixed)}
    five = parse_spec(_demo(seeds={"adaptive": {"max": 5}}))
    ids5 = {c.cell_id: c.seed for c in expand(five)}
    assert {i for i, s in ids5.items() if s <= 3} == {c.cell_id for c in expand(fixed)}
    assert (five.seed_values(), five.start_seeds(dense=True), five.start_seeds(dense=False)) == ([1, 2, 3, 4, 5], [1, 2, 3], [1])
    from raydw.findings.sequential import Design

    assert Design.of(five.adaptive_seeds()).rounds == 5
    assert fixed.adaptive_seeds() is None and fixed.start_seeds(dense=False) == fixed.seed_values() == [1, 2, 3]


def test_chosen_seed_values_are_used_in_their_order():
    s = parse_spec(_demo(seeds={"adaptive": {"start": 2, "replicate": 2, "max": 3, "values": [7, 11, 13]}}))
    assert s.seed_values() == [7, 11, 13] and s.start_seeds(dense=False) == [7, 11]
    assert {c.seed for c in expand(s)} == {7, 11, 13}


@pytest.mark.parametrize("seeds,words", [
    ({"adaptive": {"start": 0}}, "at seeds.adaptive.start: Input should be greater than or equal to 1"),
    ({"adaptive": {"start": 4, "max": 3}}, "at seeds.adaptive: start 4 is more than max 3"),
    ({"adaptive": {"replicate": 6}}, "at seeds.adaptive: replicate 6 is more than max 5"),
    ({"adaptive": {"max": 3, "values": [1, 2]}}, "values lists 2 seeds, max is 3"),
    ({"adaptive": {"max": 2, "replicate": 2, "values": [4, 4]}}, "values repeats a seed"),
    ({"adaptive": {"maximum": 3}}, "at seeds.adaptive.maximum: unknown field"),
    ({"fixed": [1]}, "at seeds.fixed: unknown field"),
    ({"adaptive": {"start": 1, "replicate": 1, "max": 3}}, "at seeds.adaptive: start 1 and replicate 1 leave round 1"),
    ([], "at seeds: list at least one seed"),
    ([1, -1], "at seeds.1: a seed is a whole number in [0, 2**32)"),
])
def test_bad_seeds_are_refused_naming_the_field(seeds, words):
    with pytest.raises(SpecError) as e:
        parse_spec(_demo(seeds=seeds), "demo.yaml")
    assert words in str(e.value)


def test_adaptive_seeds_need_the_equivalence_rule():
    with pytest.raises(SpecError, match=r"seeds.adaptive .* only verdicts.rule equivalence has.*got rule strict"):
        parse_spec(_demo(seeds={"adaptive": {}}, verdicts={"rule": "strict"}), "demo.yaml")
