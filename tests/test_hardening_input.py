"""Issue 14, input causes: every malformed spec, path or checkpoint is a clear refusal (exit 2, the file and the
field named, nothing written), never a traceback, a hang or a silent misread. No Ray is started here."""
from __future__ import annotations

import os
import warnings
import time
from pathlib import Path

import pytest
import yaml

from raydw.cli import main
from raydw.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]


def _spec(text: str, edit=None) -> dict:
    d = yaml.safe_load(text)
    if edit:
        edit(d)
    return d


def _write(tmp_path: Path, d: dict | str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(d if isinstance(d, str) else yaml.safe_dump(d))
    return p


def _refused(capsys, argv: list[str], *words: str) -> str:
    """The command exits 2 with every word in its message, and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


# -- cause 1: a name escapes the store -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 101, "tab\there", "a b"])
def test_sweep_name_is_one_safe_path_component(tiny_spec_text, name):
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(tiny_spec_text, lambda d: d.update(name=name)), "s.yaml")
    assert "at name:" in str(e.value) and "letters, digits" in str(e.value)


def test_pretraining_and_regime_names_are_safe_too(tiny_spec_text):
    with pytest.raises(SpecError, match=r"pretrainings\.0\.name"):
        parse_spec(_spec(tiny_spec_text, lambda d: d["pretrainings"][0].update(name="../ST")))
    with pytest.raises(SpecError, match=r"regimes"):
        parse_spec(_spec(tiny_spec_text, lambda d: d.update(regimes={"../std": d["regimes"]["standard"]})))


def test_bad_name_refused_by_the_dry_run_with_nothing_written(tiny_spec_text, tmp_path, capsys):
    store = tmp_path / "store"
    p = _write(tmp_path, _spec(tiny_spec_text, lambda d: d.update(name="../../x", storage=str(store))))
    _refused(capsys, ["sweep", str(p), "--dry-run"], "name", "letters, digits")
    assert not store.exists() and sorted(os.listdir(tmp_path)) == ["s.yaml"]


# -- cause 7: an alias bomb hangs the error message --------------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def test_alias_bomb_in_a_choice_field_is_refused_fast(tiny_spec_text, tmp_path):
    text = tiny_spec_text.replace("tickets: {method: omp, sparsities: [0.5]}",
                                  "bomb:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines())
                                  + "tickets: {method: *i, sparsities: [0.5]}")
    t0 = time.time()
    with pytest.raises(SpecError, match="aliases"):
        load_spec(_write(tmp_path, text))
    assert time.time() - t0 < 2


def test_error_messages_quote_a_huge_value_briefly(tiny_spec_text):
    """The bounded formatter: a value shared a billion times over (what an alias bomb builds) is quoted in O(1)."""
    v: list = ["x"] * 9
    for _ in range(9):
        v = [v] * 9
    t0 = time.time()
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(tiny_spec_text, lambda d: d.update(tickets={"method": v, "sparsities": [0.5]})))
    assert time.time() - t0 < 2 and len(str(e.value)) < 1000 and "tickets.method" in str(e.value)


# -- cause 8: no bound on the grid -------------------------------------------------------------------------------
def _big_grid(d: dict) -> None:  # 100 levels x 10 fractions x 101 seeds = 101,000 cells, from a 2 KB file
    d["tickets"] = {"method": "omp", "sparsities": [round(0.01 * i, 2) for i in range(1, 100)]}
    d["regimes"]["standard"]["data_fractions"] = [round(0.1 * i, 1) for i in range(1, 11)]
    d["seeds"] = list(range(101))


def test_grid_above_max_cells_is_refused_before_it_is_expanded(tiny_spec_text, tmp_path, capsys):
    p = _write(tmp_path, _spec(tiny_spec_text, _big_grid))
    t0 = time.time()
    _refused(capsys, ["sweep", str(p), "--dry-run"], "101,000 cells", "max_cells")
    assert time.time() - t0 < 5


def test_max_cells_is_a_spec_field_that_raises_the_bound(tiny_spec_text):
    spec = parse_spec(_spec(tiny_spec_text, lambda d: (_big_grid(d), d.update(max_cells=200_000))))
    assert spec.grid_bound() == 101_000


# -- cause 12: eps "8/0" ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", ["8/0", "0/0", "1/0.0"])
def test_fraction_dividing_by_zero_is_refused(tiny_spec_text, tmp_path, capsys, eps):
    p = _write(tmp_path, _spec(tiny_spec_text, lambda d: d["eval"]["attack"].update(eps=eps)))
    _refused(capsys, ["sweep", str(p), "--dry-run"], "eval.attack.eps", "divides by zero")
    _refused(capsys, ["status", str(tmp_path), "--spec", str(p)], "eval.attack.eps", "divides by zero")


# -- cause 13: spec files that cannot be read ------------------------------------------------------------------
def test_spec_files_that_cannot_be_read_are_refused_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    _refused(capsys, ["sweep", str(bad), "--dry-run"], "latin1.yaml", "not UTF-8", "line 1")
    _refused(capsys, ["sweep", str(tmp_path), "--dry-run"], "is a folder")
    if Path("/proc/self/mem").exists():
        _refused(capsys, ["sweep", "/proc/self/mem", "--dry-run"], "/proc/self/mem")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    _refused(capsys, ["sweep", str(fifo), "--dry-run"], "not a regular file")  # would block in open()
    huge = tmp_path / "huge.yaml"
    huge.write_text("seeds: [" + "1, " * 500_000 + "1]\n")
    _refused(capsys, ["sweep", str(huge), "--dry-run"], "larger than")


def test_deeply_nested_brackets_are_refused_in_well_under_a_second(tmp_path, capsys):
    p = tmp_path / "deep.yaml"
    p.write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")
    t0 = time.time()
    _refused(capsys, ["sweep", str(p), "--dry-run"], "nested more than")
    assert time.time() - t0 < 2


# -- cause 14: duplicate keys --------------------------------------------------------------------------------------
def test_duplicate_keys_are_refused_with_both_lines(tiny_spec_text, tmp_path, capsys):
    text = tiny_spec_text.replace("name: tiny\n", "name: tiny\nname: other\n")
    _refused(capsys, ["sweep", str(_write(tmp_path, text)), "--dry-run"], "duplicate key 'name'", "line 2", "line 3")
    second = tiny_spec_text + "  standard: {kind: standard, epochs: 9, batch_size: 8, optimizer: {lr: 0.1}}\n"
    second = second.replace("eval:\n  attack: {eps: 0.1, step_size: 0.05, steps: 2}\nresources: {max_concurrent_cells: 2}\n", "")
    second += "eval:\n  attack: {eps: 0.1, step_size: 0.05, steps: 2}\n"
    _refused(capsys, ["sweep", str(_write(tmp_path, second, "t.yaml")), "--dry-run"], "duplicate key 'standard'")


def test_yaml_merge_keys_are_not_duplicates(tiny_spec_text, tmp_path):
    text = tiny_spec_text.replace("        optimizer: {lr: 0.01, milestones: [1]}",
                                  "        optimizer: {<<: {lr: 0.5, milestones: [1]}, lr: 0.01}")
    assert load_spec(_write(tmp_path, text)).regimes["standard"].optimizer.lr == 0.01


# -- cause 15: weak values -------------------------------------------------------------------------------------
def _edited_refused(spec_text: str, where: tuple, value):
    """The spec with the value at `where` replaced must be refused: the SpecError."""
    def edit(d):
        node = d
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(spec_text, edit))
    return e


@pytest.mark.parametrize("where,value,words", [
    (("regimes", "standard", "optimizer", "lr"), float("inf"), "finite"),
    (("regimes", "standard", "optimizer", "weight_decay"), float("inf"), "finite"),
    (("regimes", "standard", "optimizer", "lr"), float("nan"), "finite"),
    (("regimes", "standard", "optimizer", "momentum"), "nan", "finite"),
    (("eval", "attack", "step_size"), "-inf", "finite"),
    (("eval", "fast_val_images"), float("inf"), "valid integer"),
    (("regimes", "standard", "epochs"), True, "valid integer"),
    (("regimes", "standard", "epochs"), 2.5, "valid integer"),
    (("regimes", "standard", "batch_size"), "64", "valid integer"),
    (("eval", "attack", "random_start"), 1, "valid boolean"),
    (("eval", "attack", "eps"), True, "expected a number"),
    (("seeds",), [1, True], "valid integer"),
    (("regimes", "standard", "data_fractions"), [1.0, float("nan")], "finite"),
])
def test_weak_values_are_refused(tiny_spec_text, where, value, words):
    e = _edited_refused(tiny_spec_text, where, value)
    assert ".".join(where) in str(e.value) and words in str(e.value)


def test_valid_numbers_keep_their_forms(tiny_spec_text):
    """YAML 1.1 reads `5e-4` as a string; fractions and integers where floats are due still parse."""
    spec = parse_spec(_spec(tiny_spec_text, lambda d: d["regimes"]["standard"]["optimizer"].update(
        lr="1e-3", weight_decay=0, gamma="1/2")))
    opt = spec.regimes["standard"].optimizer
    assert (opt.lr, opt.weight_decay, opt.gamma) == (1e-3, 0.0, 0.5)


# -- cause 19: storage "~/..." -------------------------------------------------------------------------------------
def test_storage_tilde_is_expanded(tiny_spec_text, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, _spec(tiny_spec_text, lambda d: d.update(storage="~/raydw-results")))
    assert main(["sweep", str(p), "--dry-run"]) == 0
    assert f"store {tmp_path / 'home' / 'raydw-results'}" in capsys.readouterr().out
    assert not (tmp_path / "~").exists()


# -- cause 16: raydw convert on damaged or odd state dicts -------------------------------------------------------
def _tiny_state(torch) -> dict:
    return {"conv.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}


def test_convert_says_a_truncated_file_is_damaged_not_that_it_needs_trust(tmp_path, capsys):
    import torch

    for legacy in (False, True):
        src = tmp_path / f"full{legacy}.pt"
        torch.save(_tiny_state(torch), src, _use_new_zipfile_serialization=not legacy)
        cut = tmp_path / f"cut{legacy}.pt"
        cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        for trust in ([], ["--trust"]):
            err = _refused(capsys, ["convert", str(cut), str(tmp_path / "o.pt"), "--arch", "resnet18", *trust],
                           str(cut), "truncated or damaged")
            assert "--trust`" not in err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _refused(capsys, ["convert", str(empty), str(tmp_path / "o.pt")], "empty file")
    assert not (tmp_path / "o.pt").exists()


def test_convert_names_non_tensor_and_zero_dim_entries(tmp_path, capsys):
    import torch

    cases = {"nontensor": {**_tiny_state(torch), "conv.bias": 3},
             "wrapped": {"state_dict": {**_tiny_state(torch), "conv.bias": "x"}, "epoch": 3},
             "zerodim": {**_tiny_state(torch), "fc.weight": torch.tensor(1.0)},
             "intkeys": {1: torch.zeros(2), "fc.weight": torch.zeros(10, 4)}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        _refused(capsys, ["convert", str(tmp_path / f"{name}.pt"), str(tmp_path / "o.pt"), "--arch", "resnet18"],
                 f"{name}.pt")


def test_convert_still_suggests_trust_for_a_pickle_payload(tmp_path, capsys):
    import argparse

    import torch

    torch.save({"state_dict": _tiny_state(torch), "args": argparse.Namespace(arch="resnet50")}, tmp_path / "p.pt")
    _refused(capsys, ["convert", str(tmp_path / "p.pt"), str(tmp_path / "o.pt")], "--trust", "full unpickling")


# -- cause 17: inputs checked before Ray: weights files, empty dataset files, import mask files ---------------------
def _weights_spec(tiny_spec_text: str, weights: Path, store: Path) -> dict:
    def edit(d):
        d["pretrainings"] = [{"name": "X", "weights": str(weights), "arch": "resnet_tiny"}]
        d["data"]["datasets"] = ["cifar10"]  # 3 channels, as a weights: entry takes
        d["data"]["root"] = str(store.parent / "data")
        d["storage"] = str(store)
    return _spec(tiny_spec_text, edit)


def _cifar_files(root: Path, empty: str | None = None) -> None:
    import pickle

    from raydw.data.prepare import FILES

    for rel in FILES["cifar10"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"" if rel.endswith(empty or "-") else pickle.dumps({"data": [], "labels": []}))


@pytest.mark.parametrize("kind", ["truncated", "payload", "shapes", "nontensor"])
def test_bad_weights_file_is_refused_before_ray_starts(tiny_spec_text, tmp_path, kind):
    import argparse

    import torch

    from raydw.models.build import build_net
    from raydw.planning.inputs import check_inputs as _preflight
    from raydw.store import Store

    good = build_net("resnet_tiny", 1000, 3).state_dict()
    w = tmp_path / "w.pt"
    if kind == "truncated":
        torch.save(good, tmp_path / "full.pt")
        w.write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
    elif kind == "payload":
        torch.save({**good, "extra": argparse.Namespace()}, w)
    elif kind == "shapes":
        torch.save(build_net("resnet_tiny", 10, 3).state_dict(), w)
    else:
        torch.save({**good, "fc.bias": [0.0] * 1000}, w)
    _cifar_files(tmp_path / "data")
    spec = parse_spec(_weights_spec(tiny_spec_text, w, tmp_path / "store"))
    with pytest.raises(SpecError) as e:
        _preflight(spec, Store(str(tmp_path / "store")), None, None, print)
    assert str(w) in str(e.value) and "pretrainings.0.weights" in str(e.value)
    assert not (tmp_path / "store").exists()


def test_good_weights_file_passes_the_check(tiny_spec_text, tmp_path):
    import torch

    from raydw.models.build import build_net
    from raydw.planning.inputs import check_inputs as _preflight
    from raydw.store import Store

    torch.save(build_net("resnet_tiny", 1000, 3).state_dict(), tmp_path / "w.pt")
    _cifar_files(tmp_path / "data")
    spec = parse_spec(_weights_spec(tiny_spec_text, tmp_path / "w.pt", tmp_path / "store"))
    _preflight(spec, Store(str(tmp_path / "store")), None, None, print)


def test_empty_dataset_file_is_a_missing_input(tiny_spec_text, tmp_path, capsys):
    import torch

    from raydw.models.build import build_net

    torch.save(build_net("resnet_tiny", 1000, 3).state_dict(), tmp_path / "w.pt")
    _cifar_files(tmp_path / "data", empty="data_batch_3")
    p = _write(tmp_path, _weights_spec(tiny_spec_text, tmp_path / "w.pt", tmp_path / "store"))
    assert main(["sweep", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "missing inputs:" in out and "data_batch_3 is empty" in out


def test_missing_import_mask_file_is_a_missing_input(tiny_spec_text, tmp_path, capsys):
    p = _write(tmp_path, _spec(tiny_spec_text, lambda d: d.update(
        tickets={"method": "import", "sparsities": [0.5], "files": {"ST": str(tmp_path / "gone.pth.tar")}},
        storage=str(tmp_path / "store"))))
    assert main(["sweep", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "missing inputs:" in out and "tickets.0.files.ST" in out and "gone.pth.tar" in out


# -- cause 20: --out to a missing or unusable folder ---------------------------------------------------------------
def test_out_paths_that_cannot_be_written_are_refused(tmp_path, capsys):
    store = tmp_path / "store"
    (store / "trials").mkdir(parents=True)
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(capsys, ["results", str(store), "--out", str(tmp_path / "nope" / "r.csv")], "does not exist")
    _refused(capsys, ["results", str(store), "--out", str(afile / "r.csv")], "is a file")
    _refused(capsys, ["results", str(store), "--out", str(tmp_path)], "is a folder")
    _refused(capsys, ["report", str(store), "--out", str(afile / "sub")], "--out")
    _refused(capsys, ["report", str(store), "--out", str(afile)], "is a file")
    _refused(capsys, ["export-mask", str(store), "m1", str(tmp_path / "nope" / "m.pth.tar")], "does not exist")
    _refused(capsys, ["convert", str(afile), str(tmp_path / "nope" / "o.pt")], "does not exist")
    assert sorted(os.listdir(tmp_path)) == ["afile", "store"]


def test_results_out_into_an_existing_folder_still_works(tmp_path, capsys):
    (tmp_path / "store" / "trials").mkdir(parents=True)
    assert main(["results", str(tmp_path / "store"), "--out", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").exists()


# -- weaker: a mistyped store path for raydw status ----------------------------------------------------------------
def test_status_points_out_a_store_path_that_does_not_exist(tmp_path, capsys):
    _refused(capsys, ["status", str(tmp_path / "reslts")], "no results store", "reslts")
    assert main(["status", str(tmp_path / "reslts"), "--spec", "demo"]) == 0
    assert "no results store" in capsys.readouterr().out
    assert not (tmp_path / "reslts").exists()


# -- adversarial pass: neighbours of the causes above ------------------------------------------------------------
@pytest.mark.parametrize("where,value,words", [
    (("regimes", "standard", "epochs"), 0, "greater than or equal to 1"),  # a field's own bound beside Int's int64 one
    (("eval", "fast_val_images"), 0, "greater than or equal to 1"),
    (("regimes", "standard", "batch_size"), 10 ** 30, "64-bit"),
    (("seeds",), [-1], "[0, 2**32)"),
    (("seeds",), [2 ** 40], "[0, 2**32)"),
    (("tickets",), {"method": "omp", "rounds": [1_000_000]}, "every weight pruned"),
    (("storage",), "", "storage"),
    (("storage",), "a\0b", "storage"),
    (("regimes", "standard", "data_fractions"), [], "at least 1"),
    (("name",), "ünïcode", "letters, digits"),
    (("data", "datasets"), ["x" * 200_000], "unknown dataset"),
])
def test_neighbouring_bad_values_are_refused(tiny_spec_text, where, value, words):
    e = _edited_refused(tiny_spec_text, where, value)
    assert words in str(e.value) and len(str(e.value)) < 2000


def test_yaml_tags_and_recursive_aliases_are_refused(tmp_path, capsys):
    _refused(capsys, ["sweep", str(_write(tmp_path, "name: !!python/object/apply:os.getcwd []\n")), "--dry-run"], "not valid YAML")
    _refused(capsys, ["sweep", str(_write(tmp_path, "name: &a [*a]\n")), "--dry-run"], "aliases")
    loop = tmp_path / "loop.yaml"
    os.symlink(loop, loop)
    _refused(capsys, ["sweep", str(loop), "--dry-run"], "symbolic links")


def test_bench_sizes_must_be_positive(capsys):
    for opt in ("--batch", "--steps", "--warmup", "--threads"):
        with pytest.raises(SystemExit) as e:
            main(["bench", opt, "-1"])
        assert e.value.code == 2 and "is not >= 1" in capsys.readouterr().err


def test_dry_run_of_an_arch_without_a_flop_count_lists_its_cells(tiny_spec_text, tmp_path, capsys):
    """resnet_tiny on 32 px CIFAR has no FLOP count: the plan says so instead of a KeyError traceback."""
    p = _write(tmp_path, _spec(tiny_spec_text, lambda d: d.update(
        pretrainings=[{"name": "X", "weights": str(tmp_path / "w.pt"), "arch": "resnet_tiny"}],
        data={"datasets": ["cifar10"], "root": str(tmp_path)}, storage=str(tmp_path / "store"))))
    assert main(["sweep", str(p), "--dry-run"]) == 0
    assert "not estimated: 2 cell(s) of resnet_tiny at 32 px" in capsys.readouterr().out


def test_convert_of_a_protocol_4_pickle_payload_is_one_line_without_torchs_warnings(tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (tmp_path / "p.pth").write_bytes(pickle.dumps(Payload(), protocol=4))
    with warnings.catch_warnings(record=True) as caught:  # what an interpreter outside pytest prints on stderr
        warnings.simplefilter("always")
        err = _refused(capsys, ["convert", str(tmp_path / "p.pth"), str(tmp_path / "o.pt")], "p.pth")
    assert not caught, [str(w.message)[:100] for w in caught]
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "o.pt").exists()
