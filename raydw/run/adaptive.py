"""`search: extreme` in a sweep: one ExtremeSearch per group decides which ticket cells are released.

A group is (pre-training, dataset, adversarial data fraction, ticket spec); its levels are the ticket spec's
sparsities. A level's verdict is the strict (or loose) double-win verdict of its cells against the dense cells,
computed by raydw.findings.analysis once all of them have a final row. Ray-free apart from being driven by the pipeline
Searcher; resumes from the verdicts already in the store, never repeating a cell.
"""
from __future__ import annotations

import json

import pandas as pd

from raydw.findings.analysis import verdicts
from raydw.ids import digest, level as level_key
from raydw.cells import Cell
from raydw.planning.search import ExtremeSearch
from raydw.spec import SweepSpec
from raydw.store import Store

FINAL = ("done", "failed", "stopped")


class LevelGate:
    """`seeds`: the sweep's raydw.planning.seedgate.SeedGate with adaptive seeds: a level's verdict is then its three-state
    verdict at the seeds run so far (docs/search.md, "With adaptive seeds")."""

    def __init__(self, spec: SweepSpec, cells: list[Cell], store: Store, seeds=None):
        self.spec, self.store, self.seeds = spec, store, seeds
        self.cell_ids = {c.cell_id for c in cells}  # verdicts from this sweep's cells only, never other runs in the store
        self.rule, self.verify = spec.search.rule, spec.search.verify
        self.groups: dict[tuple, dict] = {}
        dense = {(c.pretrained_id, c.dataset, c.regime, c.data_fraction, c.seed): c.cell_id
                 for c in cells if c.ticket_method == "dense"}
        tickets = [c for c in cells if c.ticket_method != "dense"]
        for c in (c for c in tickets if c.regime_kind == "adversarial"):
            key = (c.pretraining, c.dataset, c.data_fraction, c.ticket_index)
            g = self.groups.setdefault(key, {"levels": sorted({x.target_sparsity for x in tickets if x.ticket_index == c.ticket_index}),
                                             "method": c.ticket_method, "cells": {}})
            g["cells"].setdefault(c.target_sparsity, set()).add(c.cell_id)
        # Standard-FT cells of a level belong to every fraction group of their (pre-training, dataset, ticket spec);
        # the dense cells a level is compared with must be final too before its verdict counts.
        for c in tickets:
            for key, g in self.groups.items():
                if (key[0], key[1], key[3]) == (c.pretraining, c.dataset, c.ticket_index):
                    if c.regime_kind == "standard" or c.data_fraction == key[2]:
                        g["cells"].setdefault(c.target_sparsity, set()).add(c.cell_id)
                        d = dense.get((c.pretrained_id, c.dataset, c.regime, c.data_fraction, c.seed))
                        if d:
                            g.setdefault("dense", set()).add(d)
        self.released: set[str] = set()
        for g in self.groups.values():
            g["search"] = ExtremeSearch(g["levels"], verify=self.verify)
        self.update()

    def allows(self, cell_id: str) -> bool:
        return cell_id in self.released

    def update(self) -> None:
        """Record the verdicts of levels whose cells are all final, then release the levels the searches propose."""
        trials = self.store.read_table("trials").to_pandas()
        trials = trials[trials.cell_id.isin(self.cell_ids)]
        status = dict(zip(trials.cell_id, trials.status))
        verdicts = self._verdicts(trials) if self.seeds is None else self._seed_verdicts()
        asked = (lambda ids: ids) if self.seeds is None else (lambda ids: {i for i in ids if self.seeds.allows(i)})
        for key, g in self.groups.items():
            s: ExtremeSearch = g["search"]
            for level, ids in g["cells"].items():
                k = (key[0], key[1], key[2], g["method"], round(level, 9))
                if self.seeds is not None and k not in verdicts:
                    continue  # its seed round is not looked at yet
                if all(status.get(i) in FINAL for i in asked(ids | g.get("dense", set()))):
                    try:  # a bool may replace an unknown (a retried cell); the search ignores a repeat
                        s.record(level, verdicts.get(k))
                    except ValueError:
                        pass  # a verdict that changed after a rerun: keep the first, as the search saw it
            if not s.in_flight:  # one level at a time per group: speculative levels would spend the savings
                for level in s.propose():
                    self.released |= g["cells"][level]

    def _verdicts(self, trials: pd.DataFrame) -> dict[tuple, bool | None]:
        done = trials[trials.status.isin(FINAL)]
        if not len(done) or not (done.ticket_method != "dense").any():
            return {}
        # The search's rule names which double-win steers it (strict: all three metrics), compared as ticket >= dense.
        v = verdicts(done, reading="full" if self.rule == "strict" else "loose")
        col = "double_win"
        return {(r.pretraining, r.dataset, r.data_fraction, r.ticket_method, level_key(r.target_sparsity)):
                (None if pd.isna(r[col]) else bool(r[col])) for _, r in v.iterrows()}

    def _seed_verdicts(self) -> dict[tuple, bool | None]:
        """Adaptive seeds: the verdict of each level whose seeds have stopped, from the SeedGate's replay of the store:
        decided (True / False), or None (inconclusive at its maximum, or missing). A level still open (its next seed
        asked for) is left out, so the search keeps it in flight and proposes nothing else in its group until its
        seeds decide it: the search navigates on final three-state verdicts, and replication is spent only on the
        levels it proposes (docs/search.md, "With adaptive seeds"). The search's rule picks the reading."""
        rep = self.seeds.rounds.replay if self.seeds.rounds is not None else None
        if rep is None or rep.round == 0:
            return {}
        col = "double_win_full" if self.rule == "strict" else "double_win_loose"
        return {(r["pretraining"], r["dataset"], r["data_fraction"], r["ticket_method"], round(r["target_sparsity"], 9)):
                (None if pd.isna(r[col]) else bool(r[col]))
                for r in rep.verdicts.to_dict("records") if not str(r["stopped"]).startswith("open")}

    def rows(self, sweep: str) -> list[dict]:
        out = []
        for key, g in self.groups.items():
            s: ExtremeSearch = g["search"]
            a = s.answer()
            ran = {i for lvl in a["run"] for i in g["cells"][lvl]}
            all_ids = set().union(*g["cells"].values())
            ident = json.dumps([key[0], key[1], key[2], key[3], g["method"], self.rule, self.verify])
            out.append({"search_id": digest(ident), "sweep": sweep,
                        "pretraining": key[0], "dataset": key[1], "data_fraction": key[2], "ticket_method": g["method"],
                        "rule": self.rule, "verify": self.verify, "levels": json.dumps(g["levels"]),
                        "levels_run": json.dumps(a["run"]), "verdicts": json.dumps(s.state().get("verdicts", {}), default=str),
                        "max_win": a["max_win"], "max_contig_win": a["max_contig_win"], "consistent": a["consistent"],
                        "unknown": json.dumps(a["unknown"]), "done": a["done"], "cells_run": len(ran),
                        "cells_saved": len(all_ids - ran - self.released), "state": json.dumps(s.state(), default=str)})
        return out

