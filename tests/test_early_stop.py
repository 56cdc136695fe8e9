"""Double-win-aware early stopping: a ticket trailing its dense model past the grace period is stopped, said why,
and counted as not matching by the verdicts."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from raydw.findings.analysis import verdicts
from raydw.run.jobs import EarlyStop
from raydw.run.earlystop import EarlyStopped, early_stop_check
from raydw.spec import EarlyStopSpec, OptimizerSpec, RegimeSpec
from raydw.store import Store

PLAN = EarlyStop(dense_cell_id="dense", margin=0.05, metrics=("sa", "ra"), grace=2)


def _dense_epochs(store: Store, sa: float, ra: float, epochs: int = 5) -> None:
    for e in range(epochs):
        store.write_row("epochs", {"cell_id": "dense", "epoch": e, "val_sa": sa, "val_ra": ra}, name=f"dense.e{e:04d}")


def test_a_trailing_ticket_is_stopped_after_the_grace_period(tmp_path):
    store = Store(str(tmp_path))
    _dense_epochs(store, 0.9, 0.5)
    check = early_stop_check(store, PLAN)
    check({"epoch": 1, "val_sa": 0.1, "val_ra": 0.1})  # within grace: never stopped
    with pytest.raises(EarlyStopped, match="epoch 2: validation SA 0.8000 trails the dense model's 0.9000"):
        check({"epoch": 2, "val_sa": 0.8, "val_ra": 0.5})


def test_a_ticket_within_the_margin_runs_on(tmp_path):
    store = Store(str(tmp_path))
    _dense_epochs(store, 0.9, 0.5)
    check = early_stop_check(store, PLAN)
    for e in range(2, 5):
        check({"epoch": e, "val_sa": 0.86, "val_ra": 0.46})


def test_missing_validation_values_never_stop_a_cell(tmp_path):
    store = Store(str(tmp_path))
    _dense_epochs(store, 0.9, math.nan)
    early_stop_check(store, PLAN)({"epoch": 3, "val_sa": 0.88, "val_ra": 0.0})


def test_grace_defaults_to_the_first_learning_rate_decay():
    r = RegimeSpec(kind="standard", epochs=150, batch_size=64,
                   optimizer=OptimizerSpec(lr=0.001, schedule="multistep", milestones=[100, 50]))
    assert EarlyStopSpec(enabled=True).grace_for(r) == 50
    cos = r.model_copy(update={"optimizer": OptimizerSpec(lr=0.01, schedule="cosine")})
    assert EarlyStopSpec(enabled=True).grace_for(cos) == 75


def test_verdicts_count_a_stopped_ticket_as_not_matching_and_say_why():
    base = {"pretraining": "ST", "dataset": "digits", "seed": 1, "ticket_round": 0, "error": None}
    rows = []
    for method, s, status in (("dense", 0.0, "done"), ("omp", 0.5, "stopped")):
        for regime, kind in (("standard", "standard"), ("adversarial", "adversarial")):
            rows.append({**base, "cell_id": f"{method}-{regime}", "ticket_method": method, "target_sparsity": s,
                         "sparsity": s, "regime": regime, "regime_kind": kind, "data_fraction": 1.0,
                         "status": status if kind == "adversarial" else "done",
                         "error": "stopped at epoch 3: validation RA ..." if (status == "stopped" and kind == "adversarial") else None,
                         "sa": 0.9 if method == "dense" else 0.95, "ra": 0.5 if method == "dense" else None})
    v = verdicts(pd.DataFrame(rows))
    r = v.iloc[0]
    assert bool(r.matching_sa_std) and not bool(r.matching_sa_adv) and not bool(r.double_win_full)
    assert not pd.isna(r.matching_sa_adv)  # a loss, not a missing value
    assert "stopped" in r.reason and "counted as not matching" in r.reason


def test_a_stopped_cells_row_keeps_its_epochs_and_best_validation(tmp_path):
    from raydw.run.earlystop import stopped_fields

    store = Store(str(tmp_path))
    vals = [(0.5, 0.2), (0.7, math.nan), (0.7, 0.3)]  # a tie on SA: the first epoch wins, as in the loop
    for e, (sa, ra) in enumerate(vals):
        store.write_row("epochs", {"cell_id": "t", "epoch": e, "val_sa": sa, "val_ra": ra}, name=f"t.e{e:04d}")
    f = stopped_fields(store, "t", 2)
    assert f == {"epochs": 3, "val_sa_best": 0.7, "best_epoch_sa": 1, "val_ra_best": 0.3, "best_epoch_ra": 2}


def test_a_sweep_is_complete_when_its_plan_leaves_nothing_to_run():
    from raydw.reporting.summary import Summary

    # stopped (early stopping on) and skipped (extreme search) cells are final: nothing left, `raydw sweep` exits 0
    assert Summary(total=27, done=18, failed=0, ran=27, storage="x", wall_s=1.0, stopped=9, left=0).complete
    assert Summary(total=27, done=12, failed=0, ran=12, storage="x", wall_s=1.0, skipped=15, left=0).complete
    assert not Summary(total=27, done=18, failed=1, ran=27, storage="x", wall_s=1.0, stopped=8, left=1).complete
    assert not Summary(total=27, done=18, failed=0, ran=18, storage="x", wall_s=1.0, left=9).complete  # 9 missing
    assert not Summary(total=27, done=18, failed=0, ran=18, storage="x", wall_s=1.0, waiting=9).complete  # untuned
