"""Every input a sweep spec reads, written in the real formats with random content: its downstream datasets
(CIFAR-10/100, SVHN), its registry weights (random-init, published layout, converted as a user converts them) and
IMP's ImageNet folder. For tests, and for running `raydw sweep SPEC --dry-run` / `--preflight` on a machine
without the real downloads. Nothing here changes the spec: its relative roots are recreated under OUT.

Layout under OUT, for sweeps/paper.yaml (data.root ./data, tickets.imp.root ./data/imagenet):
  OUT/data/cifar-10-batches-py/...  OUT/data/cifar-100-python/...  OUT/data/{train,test}_32x32.mat
  OUT/data/imagenet/{train,val}/<wnid>/*.JPEG     OUT/models/<registry name>.pt (+ .json, as raydw fetch writes)
Run the spec from OUT with the model cache pointed there (`usage` prints the commands):
  cd OUT && RAYDW_MODEL_CACHE=$PWD/models raydw sweep paper --dry-run
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raydw.spec import SweepSpec

MODELS = "models"  # under OUT: the model cache RAYDW_MODEL_CACHE points at
PUBLISHED = "published"  # under OUT: the published-layout files, where kept


class InputsError(ValueError):
    """A spec whose inputs cannot be written here (an absolute root, a dataset without a writer)."""


@dataclass
class Sizes:
    """How much to write. The training sets are the real size by default: the paper's split takes all of them, and
    `sources.read` refuses fewer; fewer suit checks that only look for the files (the dry run's input check)."""

    test_images: int = 100  # per downstream test set (the real ones: 10,000 / 26,032)
    train_images: int | None = None  # per downstream training set; None: the real size (50,000 / 73,257)
    train_jpegs: int = 2  # per ImageNet class in train/
    val_jpegs: int = 1  # per ImageNet class in val/
    jpeg_sizes: tuple[int, int] = (32, 64)
    seed: int = 0
    keep_published: bool = False


@dataclass
class Written:
    data_root: Path | None = None
    imagenet_root: Path | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)


def _under(out: Path, root: str | None, what: str) -> Path:
    """`root` (relative to the working directory the sweep runs in) recreated under OUT."""
    if root is None:
        raise InputsError(f"{what} is not set; set it to a relative folder (e.g. ./data) so it can be written under OUT")
    if Path(root).expanduser().is_absolute():
        raise InputsError(f"{what} is {root}, an absolute path: the inputs are written under OUT only for relative roots "
                          "(the paper's ./data), which the sweep then finds when run from OUT")
    return out / root


def plan(spec: SweepSpec, out: Path) -> tuple[Path | None, list[str], Path | None, list[str]]:
    """(data root, datasets, ImageNet root, registry weights) this spec reads, under OUT; InputsError before any
    file is written where one cannot be."""
    from raydw.data.catalog import get as get_info
    from raydw.data.prepare import PACKAGED
    from raydw.models.catalog import PRETRAINED
    from raydw.spec import ImpSpec
    from raydw.testinputs.datasets import TRAIN_IMAGES

    recipes = [p.recipe.dataset for p in spec.pretrainings if p.recipe is not None]
    datasets = [d for d in dict.fromkeys([*spec.data.datasets, *recipes]) if d not in PACKAGED and get_info(d).needs_root]
    bad = [d for d in datasets if d not in TRAIN_IMAGES]
    if bad:
        raise InputsError(f"no test-input writer for dataset(s) {bad}; writers exist for {sorted(TRAIN_IMAGES)}")
    data_root = _under(out, spec.data.root, "data.root") if datasets else None
    imps = [t.imp or ImpSpec() for t in spec.tickets if t.method == "imp"]
    roots = {i.root for i in imps if i.dataset == "imagenet"}
    if len(roots) > 1:
        raise InputsError(f"tickets name several imp.root folders {sorted(map(str, roots))}; one ImageNet folder is written")
    imagenet = _under(out, roots.pop(), "tickets.imp.root") if roots else None
    weights = [p.weights for p in spec.pretrainings if p.weights is not None]
    local = [w for w in weights if w not in PRETRAINED]
    if local:
        raise InputsError(f"pretrainings name local weights files {local}; only registry entries are written "
                          f"(known: {sorted(PRETRAINED)})")
    return data_root, datasets, imagenet, weights


def write_inputs(spec: SweepSpec, out: str | Path, sizes: Sizes = Sizes(), log=print) -> Written:
    """Write every input `spec` reads under `out` (see the module doc); InputsError before writing anything where
    one cannot be written. Files already there are replaced."""
    from raydw.testinputs.checkpoints import write_weights
    from raydw.testinputs.datasets import write_dataset
    from raydw.testinputs.imagefolder import write_imagefolder

    out = Path(out).expanduser().resolve()
    data_root, datasets, imagenet, weights = plan(spec, out)
    done = Written(data_root, imagenet, datasets=datasets)
    for name in datasets:
        train = "real training size" if sizes.train_images is None else f"{sizes.train_images} training images"
        log(f"{name}: writing under {data_root} ({train}, {sizes.test_images} test images)")
        write_dataset(data_root, name, sizes.test_images, sizes.train_images, sizes.seed)
    if imagenet is not None:
        if imagenet.exists():
            import shutil

            shutil.rmtree(imagenet)  # a folder of fewer JPEGs per class would otherwise keep the old ones
        n = write_imagefolder(imagenet, sizes.train_jpegs, sizes.val_jpegs, sizes.jpeg_sizes, seed=sizes.seed)
        log(f"imagenet: {n} JPEGs in 1000 classes under {imagenet}")
    if weights:
        log(f"weights: {', '.join(weights)}: random init, published layout, converted into {out / MODELS}")
        done.weights = write_weights(weights, out / MODELS, out / PUBLISHED, sizes.seed, sizes.keep_published, log)
    return done


def usage(out: str | Path, spec_arg: str) -> str:
    """The commands that run `spec_arg` on the inputs under OUT."""
    out = Path(out).expanduser().resolve()
    return (f"cd {out} && export {_env()}={out / MODELS}\n"
            f"raydw sweep {spec_arg} --dry-run    # says 'inputs: all present'")


def _env() -> str:
    from raydw.models.catalog import MODEL_CACHE_ENV

    return MODEL_CACHE_ENV
