"""Verdicts and extreme sparsities on hand-made stores whose answers are worked out by hand in each test."""
from __future__ import annotations

import pandas as pd
import pytest

from raydw.findings.analysis import AnalysisError, extreme, verdicts
from raydw.cli import main
from raydw.store import Store

# Dense values every test starts from: SA std 0.80, SA adv 0.60, RA adv 0.30 (one seed unless a test says).
DENSE = {"standard": (0.80, None), "adversarial": (0.60, 0.30)}


def put(store: Store, *, pre="ST", method="omp", k=1, regime="adversarial", frac=1.0, seed=1,
        sa=0.5, ra=0.2, status="done", error="", sa_last=None, ra_last=None) -> None:
    """One trials row. k=0 / method='dense' is the dense model; sparsity is 1-0.8^k as for IMP rounds."""
    dense = method == "dense" or k == 0
    method, k = ("dense", 0) if dense else (method, k)
    sparsity = 0.0 if dense else 1 - 0.8 ** k
    cid = f"{pre}-{method}-{k}-{regime}-{frac:g}-{seed}"
    store.write_row("trials", {
        "cell_id": cid, "sweep": "t", "status": status, "error": error, "pretraining": pre, "ticket_method": method,
        "ticket_round": k, "target_sparsity": sparsity, "sparsity": sparsity, "dataset": "digits", "regime": regime,
        "regime_kind": regime, "data_fraction": frac, "seed": seed, "sa": sa, "ra": ra,
        "sa_last": sa if sa_last is None else sa_last, "ra_last": ra if ra_last is None else ra_last,
        "wall_s": 10.0, "workers": 1, "device": "cpu"})


def put_dense(store: Store, pre="ST", frac=1.0, seed=1, shift=0.0) -> None:
    put(store, pre=pre, method="dense", regime="standard", frac=1.0, seed=seed, sa=DENSE["standard"][0] + shift, ra=None)
    put(store, pre=pre, method="dense", regime="adversarial", frac=frac, seed=seed,
        sa=DENSE["adversarial"][0] + shift, ra=DENSE["adversarial"][1] + shift)


def put_ticket(store: Store, k=1, sa_std=0.85, sa_adv=0.65, ra_adv=0.35, pre="ST", frac=1.0, seed=1) -> None:
    put(store, pre=pre, k=k, regime="standard", frac=1.0, seed=seed, sa=sa_std, ra=None)
    put(store, pre=pre, k=k, regime="adversarial", frac=frac, seed=seed, sa=sa_adv, ra=ra_adv)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "store"))


class Row(dict):
    __getattr__ = dict.__getitem__


def only(v: pd.DataFrame, **where) -> Row:
    """The one row matching `where`, with verdicts as True / False / pd.NA so `is` tells the three apart."""
    for col, val in where.items():
        v = v[v[col] == val]
    assert len(v) == 1, f"expected one verdict row for {where}, got {len(v)}"
    return Row({c: (pd.NA if v[c].dtype == "boolean" and pd.isna(x) else bool(x) if v[c].dtype == "boolean" else x)
                for c, x in v.iloc[0].items()})


def test_a_ticket_above_dense_on_every_metric_is_a_strict_double_win(store):
    put_dense(store)
    put_ticket(store, sa_std=0.85, sa_adv=0.65, ra_adv=0.35)
    r = only(verdicts(store.uri))
    assert (r.matching_sa_std, r.matching_sa_adv, r.matching_ra_adv) == (True, True, True)
    assert r.double_win_full is True and r.double_win_loose is True and r.reason == ""


def test_a_tie_with_the_dense_model_counts_as_matching(store):
    put_dense(store)
    put_ticket(store, sa_std=0.80, sa_adv=0.60, ra_adv=0.30)
    assert only(verdicts(store.uri)).double_win_full is True


def test_a_ticket_a_hair_below_dense_is_not_matching(store):
    put_dense(store)
    put_ticket(store, sa_std=0.80, sa_adv=0.60, ra_adv=0.2999)
    r = only(verdicts(store.uri))
    assert r.matching_ra_adv is False and r.double_win_full is False


def test_a_loss_on_adversarial_sa_only_fails_strict_but_passes_loose(store):
    put_dense(store)
    put_ticket(store, sa_std=0.85, sa_adv=0.55, ra_adv=0.35)
    r = only(verdicts(store.uri))
    assert r.matching_sa_adv is False
    assert r.double_win_full is False and r.double_win_loose is True


def test_the_reading_argument_chooses_which_verdict_is_double_win(store):
    put_dense(store)
    put_ticket(store, sa_std=0.85, sa_adv=0.55, ra_adv=0.35)
    assert only(verdicts(store.uri, reading="loose")).double_win is True
    assert only(verdicts(store.uri, reading="full")).double_win is False
    with pytest.raises(AnalysisError, match="reading='loose'"):  # the old spelling says where it went
        verdicts(store.uri, rule="loose")


def test_each_ticket_is_compared_with_the_dense_model_of_its_own_pretraining(store):
    put_dense(store, pre="ST")
    put_dense(store, pre="AT", shift=0.1)  # AT's dense is better than every ST ticket value below
    put_ticket(store, pre="ST", sa_std=0.85, sa_adv=0.65, ra_adv=0.35)
    put_ticket(store, pre="AT", sa_std=0.85, sa_adv=0.65, ra_adv=0.35)
    v = verdicts(store.uri)
    assert only(v, pretraining="ST").double_win_full is True
    assert only(v, pretraining="AT").double_win_full is False


def test_a_missing_dense_baseline_gives_na_and_names_the_missing_setting(store):
    put_dense(store)
    put_ticket(store)
    put_ticket(store, frac=0.1, sa_adv=0.9, ra_adv=0.9)  # no dense at adversarial f=0.1
    r = only(verdicts(store.uri), data_fraction=0.1)
    assert r.matching_sa_std is True  # the standard side still has its f=1.0 baseline
    assert r.matching_sa_adv is pd.NA and r.matching_ra_adv is pd.NA and r.double_win_full is pd.NA
    assert "dense baseline missing: adversarial f=0.1" in r.reason


def test_a_sweep_without_an_adversarial_regime_says_so_rather_than_a_missing_baseline(store):
    put(store, method="dense", regime="standard", sa=0.8, ra=None)
    put(store, k=1, regime="standard", sa=0.85, ra=None)
    r = only(verdicts(store.uri), ticket_method="omp")
    assert r.matching_sa_std is True and r.matching_sa_adv is pd.NA and r.double_win_full is pd.NA
    assert "no adversarial regime in the trials" in r.reason and "(no regime)" not in r.reason


def test_a_failed_ticket_cell_gives_na_with_the_first_line_of_its_error(store):
    put_dense(store)
    put(store, k=1, regime="standard", sa=0.85, ra=None)
    put(store, k=1, regime="adversarial", status="failed", sa=None, ra=None,
        error="RuntimeError: CUDA out of memory\nTraceback ...")
    r = only(verdicts(store.uri))
    assert r.matching_sa_adv is pd.NA and r.double_win_loose is pd.NA
    assert r.reason == "cell failed: RuntimeError: CUDA out of memory (adversarial f=1)"


def test_a_missing_ticket_cell_is_reported_for_a_level_other_pretrainings_have(store):
    put_dense(store, pre="ST")
    put_dense(store, pre="AT")
    put_ticket(store, pre="ST", k=1)
    r = only(verdicts(store.uri), pretraining="AT")
    assert r.double_win_full is pd.NA and "ticket cell missing: standard f=1" in r.reason


def test_a_known_loss_decides_strict_even_when_another_metric_is_missing(store):
    put_dense(store)
    put(store, k=1, regime="standard", sa=0.70, ra=None)  # loses SA std; adversarial cell never ran
    r = only(verdicts(store.uri))
    assert r.double_win_full is False and r.matching_sa_adv is pd.NA


def test_the_standard_verdict_at_a_reduced_fraction_uses_the_full_data_standard_cells(store):
    put_dense(store, frac=0.1)
    put_ticket(store, frac=0.1, sa_std=0.79)
    r = only(verdicts(store.uri))
    assert r.std_fraction == 1.0 and r.matching_sa_std is False and r.dense_sa_std == pytest.approx(0.80)


def test_checkpoint_last_reads_the_last_epoch_columns(store):
    put_dense(store)
    put(store, k=1, regime="standard", sa=0.85, ra=None)
    put(store, k=1, regime="adversarial", sa=0.65, ra=0.35, ra_last=0.10)
    assert only(verdicts(store.uri)).double_win_full is True
    assert only(verdicts(store.uri, checkpoint="last")).matching_ra_adv is False


def three_dense_seeds(store: Store) -> None:
    """Dense SA adv over seeds: 0.58, 0.60, 0.62 -> mean 0.60, sample std 0.02 (the others move alike)."""
    for seed, shift in ((1, -0.02), (2, 0.0), (3, 0.02)):
        put_dense(store, seed=seed, shift=shift)


def test_tol_one_std_accepts_a_ticket_within_one_dense_std_below(store):
    three_dense_seeds(store)
    put_ticket(store, sa_adv=0.585)  # 0.60 - 0.02 = 0.58 <= 0.585
    assert only(verdicts(store.uri, tol=0.0)).matching_sa_adv is False
    r = only(verdicts(store.uri, tol=1.0))
    assert r.matching_sa_adv is True and r.double_win_full is True and r.dense_seeds_adv == 3


def test_tol_one_std_rejects_a_ticket_more_than_one_dense_std_below(store):
    three_dense_seeds(store)
    put_ticket(store, sa_adv=0.575)
    assert only(verdicts(store.uri, tol=1.0)).matching_sa_adv is False


def test_tol_with_a_single_dense_seed_gives_na_and_warns_instead_of_assuming_zero_std(store):
    put_dense(store)
    put_ticket(store)
    with pytest.warns(UserWarning, match="needs >= 2 dense seeds"):
        r = only(verdicts(store.uri, tol=1.0))
    assert r.double_win_full is pd.NA and "needs the dense std" in r.reason


def test_a_bad_rule_is_refused_with_the_valid_choices(store):
    with pytest.raises(AnalysisError, match=r"rule 'lenient' is not one of \['strict', 'tol', 'equivalence'\]"):
        verdicts(store.uri, rule="lenient")


def test_extreme_separates_the_largest_win_from_the_largest_contiguous_win(store):
    put_dense(store)
    put_ticket(store, k=1)
    put_ticket(store, k=2)
    put_ticket(store, k=3, ra_adv=0.20)  # a loss in between
    put_ticket(store, k=4)
    r = only(extreme(store.uri))
    assert r.max_round_dw == 4 and r.max_sparsity_dw == pytest.approx(1 - 0.8 ** 4)
    assert r.max_contig_round_dw == 2 and r.max_contig_sparsity_dw == pytest.approx(1 - 0.8 ** 2)
    assert r.levels_tested == 4 and r.levels_dw == 3 and "k=3) not double-win" in r.contig_stops_at


def test_extreme_contiguous_stops_at_a_missing_level_and_lists_it(store):
    put_dense(store)
    put_dense(store, pre="AT")
    for k in (1, 2, 3):
        put_ticket(store, pre="AT", k=k)
    put_ticket(store, k=1)
    put_ticket(store, k=3)  # ST's k=2 never ran
    r = only(extreme(store.uri), pretraining="ST")
    assert r.max_round_dw == 3 and r.max_contig_round_dw == 1
    assert r.levels_missing == "s=0.360 (k=2)" and "missing: ticket cell missing" in r.contig_stops_at


def test_extreme_with_no_double_win_level_reports_na(store):
    put_dense(store)
    put_ticket(store, k=1, sa_std=0.1)
    r = only(extreme(store.uri))
    assert pd.isna(r.max_sparsity_dw) and r.max_round_dw is pd.NA and r.levels_dw == 0


def test_the_verdicts_command_prints_the_table(store, capsys):
    put_dense(store)
    put_ticket(store, sa_adv=0.55)
    assert main(["verdicts", store.uri, "--reading", "loose"]) == 0
    out = capsys.readouterr().out
    assert "reading loose" in out and "extreme double-win sparsity" in out and "double-win" in out


def test_two_runs_of_one_setting_and_seed_are_refused_not_averaged_as_seeds(store):
    put_dense(store)
    put_ticket(store)
    # The same dense adversarial setting and seed again, from an edited spec (another lr) rerun into this store.
    old = store.get("trials", "ST-dense-0-adversarial-1-1")
    store.write_row("trials", {**old, "config": '{"regime": {"epochs": 2, "optimizer": {"lr": 0.01}}}'})
    store.write_row("trials", {**old, "cell_id": "edited", "sa": 0.99, "ra": 0.99,
                               "config": '{"regime": {"epochs": 2, "optimizer": {"lr": 0.1}}}'})
    with pytest.raises(AnalysisError) as e:
        verdicts(store.uri)
    msg = str(e.value)
    assert "2 different runs of one setting and seed (ST, digits, adversarial, fraction 1, dense at level 0, seed 1)" in msg
    assert "['ST-dense-0-adversarial-1-1', 'edited']" in msg and "differ in regime.optimizer.lr." in msg
    assert "--spec SPEC" in msg
    # One run's cells: the edited run's dense cell left out, the verdict is the one worked out for these values.
    keep = set(store.names("trials")) - {"edited"}
    assert only(verdicts(store.uri, cells=keep)).double_win is True
    assert only(verdicts(store.uri, cells=set(store.names("trials")) - {"ST-dense-0-adversarial-1-1"})).double_win is False


def test_verdicts_and_report_take_a_spec_to_analyse_its_cells_alone(tmp_path, capsys, tiny_spec_text):
    from raydw.cells import expand
    from raydw.spec import load_spec

    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(tiny_spec_text)
    cells = expand(load_spec(spec_file))
    s = Store(str(tmp_path / "store"))
    for c in cells:  # this spec's cells: dense and the OMP ticket, standard fine-tuning only (the tiny spec's regime)
        s.write_row("trials", {"cell_id": c.cell_id, "status": "done", "pretraining": c.pretraining, "dataset": c.dataset,
                               "ticket_method": c.ticket_method, "target_sparsity": c.target_sparsity, "regime": c.regime,
                               "regime_kind": c.regime_kind, "data_fraction": c.data_fraction, "seed": c.seed,
                               "sa": 0.8, "ra": 0.1, "sweep": "tiny", "config": "{}"})
    dense = next(c for c in cells if c.ticket_method == "dense")
    s.write_row("trials", {**s.get("trials", dense.cell_id), "cell_id": "another-run", "sweep": "tiny-old"})
    assert main(["verdicts", s.uri]) == 2
    err = capsys.readouterr().err
    assert f"cells {sorted(['another-run', dense.cell_id])}, which differ in sweep." in err and "--spec" in err
    assert main(["verdicts", s.uri, "--spec", str(spec_file)]) == 0
    assert "omp" in capsys.readouterr().out
    assert main(["report", s.uri, "--out", str(tmp_path / "r"), "--spec", str(spec_file)]) == 0
    assert "the 2 stored cells of one sweep" in (tmp_path / "r" / "index.html").read_text()
    other = tmp_path / "other.yaml"  # a spec none of whose cells is stored here: said, not an empty analysis
    other.write_text(tiny_spec_text.replace("lr: 0.01", "lr: 0.02"))
    assert main(["verdicts", s.uri, "--spec", str(other)]) == 2
    assert f"none of the 2 cells {other} plans is stored in {s.uri}" in capsys.readouterr().err
