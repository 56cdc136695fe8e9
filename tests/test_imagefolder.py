"""ImageNet streamed from an ImageFolder for IMP: the real folder layout (JPEG files under 1000 wnid folders, as
ILSVRC-2012 unpacks), torchvision's class order, the paper's transforms, sharding, and IMP rounds trained on it
through the same loop and worker entry point as every other source task."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from raydw.data import imagefolder
from raydw.models.build import Normalized, build_net
from raydw.pruning.imp import imp
from raydw.testinputs.imagefolder import write_imagefolder
from raydw.train.imp_rounds import fit_round, imp_regime
from raydw.train.setup import source_data

USED = {0: 3, 1: 2, 999: 3}  # class index -> images in train/ (val/ gets one per used class)


def _write_folder(root: Path, classes: int = imagefolder.CLASSES) -> None:
    """ILSVRC-2012's layout with JPEGs of varied sizes in three of the 1000 classes (the others empty)."""
    write_imagefolder(root, USED, {k: 1 for k in USED}, sizes=(180, 300), classes=classes)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("imagenet")
    _write_folder(r)
    return r


def test_labels_follow_the_sorted_wnids_and_batches_are_224px_floats(root):
    data = source_data("imagenet", str(root), "cpu")
    assert len(data.train.ds) == 8 and data.train_images == 8 and data.test is data.val
    xs, ys = zip(*data.train.batches(4, seed=1, epoch=0))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (8, 3, 224, 224) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 999, 999, 999]  # the 1000th wnid is label 999, as in the head
    vx, vy = next(data.val.batches(8))
    assert vx.shape == (3, 3, 224, 224) and vy.tolist() == [0, 1, 999]  # val: Resize(256) + CenterCrop(224), in order


def test_the_order_and_crops_depend_only_on_seed_and_epoch(root):
    data = source_data("imagenet", str(root), "cpu")

    def epoch(seed, e):
        return torch.cat([x for x, _ in data.train.batches(8, seed, e)])

    assert torch.equal(epoch(1, 0), epoch(1, 0))  # a resumed round repeats its epoch exactly
    assert not torch.equal(epoch(1, 0), epoch(1, 1))
    decoders = source_data("imagenet", str(root), "cpu", workers=2)  # JPEGs decoded in two DataLoader processes
    assert torch.equal(torch.cat([x for x, _ in decoders.train.batches(8, 1, 0)]), epoch(1, 0))


def test_ranks_get_disjoint_validation_shards_that_cover_it(root):
    shards = [source_data("imagenet", str(root), "cpu", rank=r, world=2) for r in (0, 1)]
    labels = [torch.cat([y for _, y in s.val.batches(2)]).tolist() for s in shards]
    assert sorted(labels[0] + labels[1]) == [0, 1, 999] and len(labels[0]) == 2 and len(labels[1]) == 1
    assert all(len(s.train) == 4 for s in shards)  # training shards: 8 images over 2 ranks


def test_a_folder_without_the_1000_classes_is_refused_naming_it(tmp_path):
    _write_folder(tmp_path, classes=10)
    with pytest.raises(ValueError, match=r"train has 10 class folders, the pre-trained head has 1000"):
        source_data("imagenet", str(tmp_path), "cpu")
    with pytest.raises(FileNotFoundError, match="tickets.imp.root must hold train/<wnid>/"):
        source_data("imagenet", str(tmp_path / "nowhere"), "cpu")
    with pytest.raises(ValueError, match="set tickets.imp.root"):
        source_data("imagenet", None, "cpu")


def test_imp_rounds_train_on_the_streamed_folder(root):
    torch.manual_seed(0)
    net = build_net("resnet_tiny", imagefolder.CLASSES, 3)
    model = Normalized(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = source_data("imagenet", str(root), "cpu")
    seen = []
    train_round = fit_round(model, data, imp_regime(epochs_per_round=1, batch_size=4, lr=0.05), seed=1,
                            on_fit=lambda k, out: seen.append((k, out.history[0]["train_images"], out.history[0]["val_sa"])))
    masks = imp(net, 3, 0.2, train_round)
    assert [round(m.sparsity(), 4) for m in masks.values()] == [0.2, 0.36, 0.488]
    assert [k for k, _, _ in seen] == [1, 2] and all(n == 8 and 0 <= sa <= 1 for _, n, sa in seen)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # handed back pre-trained


def test_the_dry_run_names_a_missing_imagenet_root(tmp_path, root):
    from raydw.planning.inputs import missing_inputs
    from raydw.spec import load_spec

    spec = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "paper.yaml").read_text())
    spec["tickets"]["imp"]["root"] = str(tmp_path / "imagenet")
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(spec))
    miss = [m for m in missing_inputs(load_spec(tmp_path / "paper.yaml")) if m.startswith("IMP source")]
    assert miss == [f"IMP source imagenet: {tmp_path / 'imagenet' / 'train'} and {tmp_path / 'imagenet' / 'val'} missing "
                    "-> put ILSVRC-2012 there as an ImageFolder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, 1000 classes "
                    "each; docs/tickets.md)"]
    # Every round of every pre-training already stored (IMP ran on a cluster): ImageNet is not needed here.
    from raydw.cells import pretrained_id
    from raydw.tickets import registry
    from raydw.store import Store

    paper = load_spec(tmp_path / "paper.yaml")
    store = Store(str(tmp_path / "store"))
    t = paper.tickets[0]
    for p in paper.pretrainings:
        for k in range(1, 12):
            store.write_row("masks", {"mask_id": f"{p.name}{k}", "pretrained_id": pretrained_id(p), "method": "imp",
                                      "params": registry.params_json(registry.get("imp").params(t, p.name)), "round": k, "bits": b"\0"})
    assert [m for m in missing_inputs(paper, store=store) if m.startswith("IMP source")]  # round 12 missing
    for p in paper.pretrainings:
        store.write_row("masks", {"mask_id": f"{p.name}12", "pretrained_id": pretrained_id(p), "method": "imp",
                                  "params": registry.params_json(registry.get("imp").params(t, p.name)), "round": 12, "bits": b"\0"})
    assert not [m for m in missing_inputs(paper, store=store) if m.startswith("IMP source")]
    spec["tickets"]["imp"]["root"] = str(root)
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(spec))
    assert not [m for m in missing_inputs(load_spec(tmp_path / "paper.yaml")) if m.startswith("IMP source")]


def test_two_ticket_specs_of_one_method_at_one_sparsity_are_refused(tiny_spec_text):
    from raydw.spec import SpecError, parse_spec

    d = yaml.safe_load(tiny_spec_text)
    d["tickets"] = [{"method": "omp", "sparsities": [0.5, 0.7]}, {"method": "omp", "sparsities": [0.5], "prunable": "cv_lth"}]
    with pytest.raises(SpecError, match=r"tickets.1: a second 'omp' ticket spec at sparsities tickets.0 also has \(\[0.5\]\)"):
        parse_spec(d)
    d["tickets"][1]["sparsities"] = [0.6]  # no common level: the analysis tells them apart by sparsity
    parse_spec(d)


def test_imagenet_as_a_downstream_dataset_is_refused_naming_the_field(tiny_spec_text):
    from raydw.spec import SpecError, parse_spec

    d = yaml.safe_load(tiny_spec_text)
    d["data"]["datasets"] = ["digits", "imagenet"]
    with pytest.raises(SpecError, match=r"data.datasets.1: 'imagenet' is a source task for tickets.imp.dataset"):
        parse_spec(d)


def test_an_imp_job_can_ask_for_its_own_workers_without_changing_masks_or_cells(tmp_path, tiny_spec_text):
    from raydw.cells import expand
    from raydw.planning.plan import StoreView, imp_item
    from raydw.run.jobs import JobBuilder
    from raydw.spec import parse_spec
    from raydw.store import Store
    from raydw.tickets.registry import get as method

    d = yaml.safe_load(tiny_spec_text)
    d["tickets"] = {"method": "imp", "rounds": [1, 2], "imp": {"dataset": "mnist5k", "epochs_per_round": 1}}
    plain = parse_spec(d)
    d["tickets"]["imp"] |= {"workers": 8, "cpus_per_worker": 12}
    ddp = parse_spec(d)
    store = Store(str(tmp_path))
    job = JobBuilder(ddp, store).imp(imp_item(ddp, ddp.tickets[0], ddp.pretrainings[0], StoreView()))
    assert job.resources.workers_per_cell == 8 and job.resources.cpus_per_worker == 12
    assert JobBuilder(plain, store).imp(imp_item(plain, plain.tickets[0], plain.pretrainings[0], StoreView())).resources.workers_per_cell == 1
    assert method("imp").params(ddp.tickets[0], "ST") == method("imp").params(plain.tickets[0], "ST")  # where it runs is not the mask
    assert [c.cell_id for c in expand(ddp)] == [c.cell_id for c in expand(plain)]
