"""`raydw bench`: images/s of the paper's reference recipe (a) beside raydw's engine (b), on one device.

Row (b) calls the sweep's own code (`fit`, `evaluate`); row (a) re-implements the reference scripts' recipe.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

# The reference recipe (row a) lives in raydw.reference; its names stay importable from here (bench.reference_pgd).
from raydw.reference import (EPS, PREFETCH, STEP, WORKERS, PilImages, RefNormalize, no_param_grad,  # noqa: F401
                             reference_eval_step, reference_loader, reference_model, reference_pgd,
                             reference_train_step, reference_transforms)

KINDS = ("standard", "pgd10_train", "pgd20_eval", "augment_224")
KIND_HELP = {
    "standard": "standard training step (clean CE)",
    "pgd10_train": "PGD-10 training step (eps 8/255, step 2/255, CE on the PGD examples)",
    "pgd20_eval": "PGD-20 evaluation (clean + attack + robust forward per batch)",
    "augment_224": "paper 224-px train augmentation only, no model (RandomResizedCrop(224)+flip)",
}
SYNTHETIC_NOTE = ("synthetic uint8 CIFAR-shaped images (random 32x32x3, random labels): "
                  "images/s does not depend on image content")
LR = 0.01  # both recipes; momentum 0.9 and weight decay 5e-4 as the paper's scripts
DATASET = "cifar10"  # its statistics and flip rule; the pixels are synthetic

# Dense bf16 peaks by device-name substring (first match wins; unknown devices get no fraction).
SPEC_PEAKS = [
    ("H100 PCIe", 756.0, "NVIDIA H100 PCIe datasheet, dense BF16"),
    ("H100 80GB HBM3", 989.0, "NVIDIA H100 SXM datasheet, dense BF16"),
    ("H200", 989.0, "NVIDIA H200 datasheet, dense BF16"),
    ("A100", 312.0, "NVIDIA A100 datasheet, dense BF16"),
]
MEASURED_PEAKS = [
    ("H100 80GB HBM3", 790.0, "achievable bf16 matmul measured at this workplace (shared/docs/offline-data.md)"),
    ("H200", 790.0, "achievable bf16 matmul measured at this workplace (shared/docs/offline-data.md)"),
]


@dataclass(frozen=True)
class Profile:
    arch: str
    protocol: str  # 'paper' (224 px) or 'native' (32 px)
    batch: int
    steps: int
    warmup: int
    sparsity: float  # a real (non-dense) mask, so both recipes pay their masking cost
    threads: int | None  # torch intra-op threads; None: torch's default


PROFILES = {
    # ResNet-18 at 32 px: the same kinds of layers and per-step overheads as ResNet-50, in minutes on 2 cores.
    # One thread, as a sweep's CPU worker (resources.torch_threads): on a shared machine two spinning
    # OpenMP threads ran the same step 13x slower (measured 2026-11-25).
    "cpu": Profile("resnet18", "native", 64, 6, 1, 0.8, 1),
    # The paper's setting: ResNet-50 at 224 px, the adversarial scripts' batch 128. Warm-up 5 > the
    # reference workers' 4 prefetched batches, so an augmentation-bound reference shows it in the timed steps.
    "gpu": Profile("resnet50", "paper", 128, 20, 5, 0.8, None),
}


# -- the reference recipe (Double-Win-LTH main_adv_eval.py / dataset.py / utils_pruning.py, re-implemented) --

def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mib(dev: torch.device) -> float:
    """GPU: max_memory_allocated since the row began. CPU: the process's peak RSS so far (cannot be reset)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@dataclass
class Row:
    kind: str
    recipe: str  # 'reference' or 'raydw'
    images: int
    seconds: float
    flops_per_image: float | None = None
    peak_mem_mib: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


# -- the reference rows --

def _ref_batches(loader, dev):
    for xb, yb in loader:
        yield xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)


def _time_ref(kind: str, step, loader, prof: Profile, dev, warmup: int | None = None, steps: int | None = None) -> Row:
    """Warm-up steps (the first one counted by FlopCounterMode), then timed steps.

    The workers run ahead by up to PREFETCH batches, so a timed run of `steps` batches can be up to
    PREFETCH/steps optimistic for the reference when its augmentation, not the model, is the bottleneck.
    """
    warmup, steps = warmup or prof.warmup, steps or prof.steps
    it = _ref_batches(loader, dev)  # workers start here, before the clock
    flops = _flops(lambda: step(*next(it)))
    for _ in range(warmup - 1):
        step(*next(it))
    _sync(dev)
    _reset_peak(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(it))
    _sync(dev)
    return Row(kind, "reference", steps * prof.batch, time.perf_counter() - t0, flops / prof.batch, _peak_mib(dev))


def reference_rows(net, mask, x_hwc, y_np, prof: Profile, dev, mean, std) -> dict:
    """kind -> a thunk that measures that row of the reference recipe."""
    model = reference_model(net, mask, mean, std, dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, foreach=False)
    train_tf, eval_tf = reference_transforms(prof.protocol)
    mk = lambda tf, shuffle: reference_loader(x_hwc, y_np, tf, prof.batch, shuffle, dev)  # noqa: E731
    std_step = lambda x, y: reference_train_step(model, opt, x, y, 0)  # noqa: E731
    adv_step = lambda x, y: reference_train_step(model, opt, x, y, 10)  # noqa: E731
    eval_step = lambda x, y: reference_eval_step(model, x, y)  # noqa: E731
    return {
        "standard": lambda: _time_ref("standard", std_step, mk(train_tf, True), prof, dev),
        "pgd10_train": lambda: _time_ref("pgd10_train", adv_step, mk(train_tf, True), prof, dev),
        "pgd20_eval": lambda: _time_ref("pgd20_eval", eval_step, mk(eval_tf, False), prof, dev),
        "augment_224": lambda: _augment_ref(x_hwc, y_np, prof, dev),
    }


@contextlib.contextmanager
def _reference_cudnn():
    """setup_seed(1) in every reference script sets cudnn.deterministic; raydw keeps torch's default."""
    prev = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = prev


def _augment_steps(prof: Profile) -> tuple[int, int]:
    """(warm-up, timed) batches of the augmentation rows: with nothing to compute, the consumer drains the
    workers' prefetched batches in the warm-up, so the timed batches measure what the workers produce."""
    return PREFETCH + 1, max(prof.steps, 8)


def _augment_ref(x_hwc, y_np, prof: Profile, dev) -> Row:
    train_tf, _ = reference_transforms("paper")
    warm, timed = _augment_steps(prof)
    loader = reference_loader(x_hwc, y_np, train_tf, prof.batch, True, dev, length=(warm + timed) * prof.batch)
    row = _time_ref("augment_224", lambda x, y: None, loader, prof, dev, warm, timed)
    row.flops_per_image = None
    return row


# -- the raydw rows: the sweep's own fit / evaluate --

def _regimes(batch: int):
    """The bundled paper spec's regimes, cut to one epoch with no validation; its PGD-20 eval attack."""
    from raydw.spec import AttackSpec, load_spec

    spec = load_spec(Path(__file__).resolve().parent / "sweeps" / "paper.yaml")
    cut = {"epochs": 1, "batch_size": batch, "val_start_epoch": 1, "validate_ra": False, "per_dataset": {}}
    # lr 0.01 for both recipes: it changes no cost, and random labels at the paper's 0.1 could diverge.
    std, adv = (r.model_copy(update={**cut, "optimizer": r.optimizer.model_copy(update={"lr": LR})})
                for r in (spec.regimes["standard"], spec.regimes["adversarial"]))
    tail = AttackSpec(eps=EPS, step_size=STEP, steps=1)  # fit's closing test on one image: cheap, untimed
    return std, adv, spec.eval.attack, tail


def _data(x, y, n: int, transform):
    from raydw.data.device import Split
    from raydw.data.device import Data

    one = Split(x[:1], y[:1])
    return Data(train=Split(x[:n], y[:n]), val=one, test=one, transform=transform, train_images=n)


def _time_fit(kind: str, model, bound, x, y, transform, regime, tail, prof: Profile, dev, autocast: bool) -> Row:
    """Warm-up `fit` under FlopCounterMode (less its closing one-image test), then a timed `fit`:
    the loop's own epoch_s is the time, host sync at the epoch's end included."""
    from raydw.train.loop import evaluate, fit

    warm = _data(x, y, prof.warmup * prof.batch, transform)
    total = _flops(lambda: fit(model, bound, warm, regime, tail, seed=0, autocast=autocast))
    tail_flops = _flops(lambda: evaluate(model, warm.test, transform, tail, autocast=autocast))
    _sync(dev)
    _reset_peak(dev)
    out = fit(model, bound, _data(x, y, prof.steps * prof.batch, transform), regime, tail, seed=0, autocast=autocast)
    return Row(kind, "raydw", prof.steps * prof.batch, out.history[0]["epoch_s"],
               (total - tail_flops) / (prof.warmup * prof.batch), _peak_mib(dev))


def _time_eval(model, x, y, transform, attack, prof: Profile, dev, autocast: bool) -> Row:
    from raydw.data.device import Split
    from raydw.train.loop import evaluate

    n_warm, n = prof.warmup * prof.batch, prof.steps * prof.batch
    flops = _flops(lambda: evaluate(model, Split(x[:n_warm], y[:n_warm]), transform, attack, prof.batch, autocast))
    _sync(dev)
    _reset_peak(dev)
    t0 = time.perf_counter()
    evaluate(model, Split(x[:n], y[:n]), transform, attack, prof.batch, autocast)  # ends on its one host sync
    return Row("pgd20_eval", "raydw", n, time.perf_counter() - t0, flops / n_warm, _peak_mib(dev))


def _augment_raydw(x, prof: Profile, dev) -> Row:
    from raydw.data.device import Transform

    tf, gen = Transform(DATASET, "paper", 32), torch.Generator(device="cpu").manual_seed(0)
    warm, timed = _augment_steps(prof)
    starts = [(i * prof.batch) % (len(x) - prof.batch + 1) for i in range(warm + timed)]
    batches = [x[s:s + prof.batch] for s in starts]
    for xb in batches[:warm]:
        tf.train(xb, gen)
    _sync(dev)
    _reset_peak(dev)
    t0 = time.perf_counter()
    for xb in batches[warm:]:
        tf.train(xb, gen)
    _sync(dev)
    return Row("augment_224", "raydw", timed * prof.batch, time.perf_counter() - t0, None, _peak_mib(dev))


def raydw_rows(net, mask, x, y, prof: Profile, dev, mean, std) -> dict:
    """kind -> a thunk measuring raydw's row. The model is built as cell_worker builds it: Normalized, on the
    device, channels_last, the mask bound; bf16 autocast only on CUDA."""
    from raydw.data.device import Transform
    from raydw.models.build import Normalized

    model = Normalized(copy.deepcopy(net), mean, std).to(dev).to(memory_format=torch.channels_last)
    bound = mask.bind(model.net) if mask is not None else None
    autocast = dev.type == "cuda"
    tf = Transform(DATASET, prof.protocol, 32)
    std_regime, adv_regime, eval_attack, tail = _regimes(prof.batch)
    return {
        "standard": lambda: _time_fit("standard", model, bound, x, y, tf, std_regime, tail, prof, dev, autocast),
        "pgd10_train": lambda: _time_fit("pgd10_train", model, bound, x, y, tf, adv_regime, tail, prof, dev, autocast),
        "pgd20_eval": lambda: _time_eval(model, x, y, tf, eval_attack, prof, dev, autocast),
        "augment_224": lambda: _augment_raydw(x, prof, dev),
    }


def measure(ref: dict, ours: dict) -> list[Row]:
    """Each kind's two rows back to back, so a machine shared with others loads both alike."""
    rows = []
    for kind in KINDS:
        with _reference_cudnn():
            rows.append(ref[kind]())
        rows.append(ours[kind]())
    return rows


# -- putting it together --

def _peak_for(name: str, table) -> tuple[float, str] | None:
    return next(((p, src) for sub, p, src in table if sub in name), None)


def device_label(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    return f"CPU: {model} ({os.cpu_count()} cores)"


def _sig(v: float, digits: int = 5) -> float:
    """Significant digits, not decimals: a CPU smoke test measures fractions of an image per second."""
    return float(f"{v:.{digits}g}")


def _row_dict(r: Row, spec_peak, measured_peak) -> dict:
    tflops = r.flops_per_image * r.images_per_s / 1e12 if r.flops_per_image is not None else None
    return {"kind": r.kind, "recipe": r.recipe, "images": r.images, "seconds": round(r.seconds, 4),
            "images_per_s": _sig(r.images_per_s),
            "gflop_per_image": None if r.flops_per_image is None else round(r.flops_per_image / 1e9, 4),
            "achieved_tflops": None if tflops is None else _sig(tflops),
            "frac_of_spec_bf16_peak": None if tflops is None or spec_peak is None else round(tflops / spec_peak[0], 4),
            "frac_of_measured_bf16_peak": None if tflops is None or measured_peak is None else round(tflops / measured_peak[0], 4),
            "peak_mem_mib": round(r.peak_mem_mib, 1)}


def run(profile: str = "cpu", steps: int | None = None, batch: int | None = None, device: str | None = None,
        warmup: int | None = None, threads: int | None = None, seed: int = 0) -> dict:
    """Measure every kind for both recipes; return the result as a JSON-ready dict."""
    import torchvision

    from raydw.data import catalog
    from raydw.models.build import build_net
    from raydw.pruning.magnitude import one_shot

    base = PROFILES[profile]
    prof = Profile(base.arch, base.protocol, batch or base.batch, steps or base.steps,
                   max(1, warmup if warmup is not None else base.warmup), base.sparsity, threads or base.threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if prof.threads:
        torch.set_num_threads(prof.threads)
    info = catalog.get(DATASET)
    torch.manual_seed(seed)
    net = build_net(prof.arch, info.num_classes)
    mask = one_shot(net, prof.sparsity)  # magnitude mask of the (random-init) weights: its cost is what matters
    g = torch.Generator().manual_seed(seed)
    n = (prof.warmup + prof.steps) * prof.batch
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    x_hwc, y_np = x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy()

    load_before = os.getloadavg()
    rows = measure(reference_rows(net, mask, x_hwc, y_np, prof, dev, info.mean, info.std),
                   raydw_rows(net, mask, x.to(dev), y.to(dev), prof, dev, info.mean, info.std))
    load_after = os.getloadavg()

    name = device_label(dev)
    spec_peak, measured_peak = _peak_for(name, SPEC_PEAKS), _peak_for(name, MEASURED_PEAKS)
    by = {(r.kind, r.recipe): r for r in rows}
    return {
        "profile": profile, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": name, "torch": torch.__version__, "torchvision": torchvision.__version__, "data": SYNTHETIC_NOTE,
        "settings": {**asdict(prof), "dataset_stats": DATASET, "threads": torch.get_num_threads(),
                     "dataloader_workers_reference": 2,
                     "amp": {"reference": "fp32", "raydw": "bf16 autocast" if dev.type == "cuda" else "fp32 (bf16 autocast is CUDA-only)"},
                     "channels_last": {"reference": False, "raydw": True},
                     "sgd_foreach": {"reference": False, "raydw": True},
                     "mask": {"reference": "torch.nn.utils.prune CustomFromMask hooks", "raydw": "BoundMask foreach ops"},
                     "cudnn_deterministic": {"reference": True, "raydw": bool(torch.backends.cudnn.deterministic)},
                     # torch defaults, both recipes: the reference's "fp32" convs run as TF32 on Ampere and later.
                     "tf32": {"cudnn": bool(torch.backends.cudnn.allow_tf32), "matmul": bool(torch.backends.cuda.matmul.allow_tf32)},
                     "load_average_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2),
                                           "cores": os.cpu_count()},
                     "peak_memory": "torch.cuda.max_memory_allocated per row" if dev.type == "cuda"
                     else "process peak RSS so far (ru_maxrss, a high-water mark that never goes down)"},
        "bf16_peak_tflops": {"spec": None if spec_peak is None else {"tflops": spec_peak[0], "source": spec_peak[1]},
                             "measured": None if measured_peak is None else {"tflops": measured_peak[0], "source": measured_peak[1]}},
        "kinds": KIND_HELP,
        "rows": [_row_dict(r, spec_peak, measured_peak) for r in rows],
        "ratio_raydw_over_reference": {k: _sig(by[k, "raydw"].images_per_s / by[k, "reference"].images_per_s)
                                       for k in KINDS},
    }


def format_table(res: dict) -> str:
    """The result as a fixed-width text table (also what docs/performance.md quotes)."""
    s = res["settings"]
    lines = [f"raydw bench --profile {res['profile']}  |  {res['device']}  |  torch {res['torch']}  |  {res['date']}",
             f"{s['arch']}, protocol {s['protocol']}, batch {s['batch']}, {s['steps']} timed steps after {s['warmup']} warm-up, "
             f"mask sparsity {s['sparsity']}, threads {s['threads']}",
             f"amp: reference {s['amp']['reference']}, raydw {s['amp']['raydw']}; channels_last: raydw only; "
             f"reference: 2 DataLoader workers, prune hooks, SGD foreach=False",
             f"data: {res['data']}",
             f"1-min load average {s['load_average_1min']['before']} before, {s['load_average_1min']['after']} after, "
             f"on {s['load_average_1min']['cores']} cores (above the core count: others shared the cores)",
             "",
             f"{'kind':<12} {'recipe':<10} {'images/s':>10} {'ratio b/a':>9} {'GFLOP/img':>10} {'TFLOP/s':>8} "
             f"{'of peak':>8} {'peak MiB':>9}"]
    ratio = res["ratio_raydw_over_reference"]
    for r in res["rows"]:
        rt = f"{ratio[r['kind']]:.2f}x" if r["recipe"] == "raydw" else ""
        gf = "-" if r["gflop_per_image"] is None else f"{r['gflop_per_image']:.3f}"
        tf = "-" if r["achieved_tflops"] is None else f"{r['achieved_tflops']:.3f}"
        fr = "-" if r["frac_of_spec_bf16_peak"] is None else f"{100 * r['frac_of_spec_bf16_peak']:.1f}%"
        lines.append(f"{r['kind']:<12} {('(a) ref' if r['recipe'] == 'reference' else '(b) raydw'):<10} "
                     f"{r['images_per_s']:>10.1f} {rt:>9} {gf:>10} {tf:>8} {fr:>8} {r['peak_mem_mib']:>9.0f}")
    pk = res["bf16_peak_tflops"]
    lines.append("")
    lines.append("of peak: achieved / dense bf16 spec peak, " + (f"{pk['spec']['tflops']:.0f} TFLOP/s ({pk['spec']['source']})"
                 if pk["spec"] else "unknown for this device") + (f"; measured achievable {pk['measured']['tflops']:.0f} "
                 f"({pk['measured']['source']})" if pk["measured"] else ""))
    lines.append("peak MiB: " + s["peak_memory"])
    return "\n".join(lines)


def write_json(res: dict, path: str | Path) -> Path:
    p = Path(path)
    p.write_text(json.dumps(res, indent=2) + "\n")
    return p
