"""`raydw bench`: images/s of the paper's reference recipe (a) beside raydw's engine (b), on one device.

Row (b) calls the sweep's own code (`fit`, `evaluate`); row (a) re-implements the reference scripts' recipe.
The entry (`run`, `measure`); the profiles and shared measuring are in bench/profiles.py, row (a) in bench/refrows.py,
row (b) in bench/ours.py, the table and JSON in bench/output.py; their public names stay importable from here.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import asdict

import torch

from raydw.bench.ours import raydw_rows
from raydw.bench.output import MEASURED_PEAKS, SPEC_PEAKS, device_label, format_table, peak_for, row_dict, sig, write_json  # noqa: F401
from raydw.bench.profiles import DATASET, KIND_HELP, KINDS, LR, PROFILES, SYNTHETIC_NOTE, Profile, Row  # noqa: F401
from raydw.bench.refrows import reference_cudnn, reference_rows
# The reference recipe (row a) lives in raydw.reference; its names stay importable from here (bench.reference_pgd).
from raydw.reference import (EPS, PREFETCH, STEP, WORKERS, PilImages, RefNormalize, no_param_grad,  # noqa: F401
                             reference_eval_step, reference_loader, reference_model, reference_pgd,
                             reference_train_step, reference_transforms)


def measure(ref: dict, ours: dict) -> list[Row]:
    """Each kind's two rows back to back, so a machine shared with others loads both alike."""
    rows = []
    for kind in KINDS:
        with reference_cudnn():
            rows.append(ref[kind]())
        rows.append(ours[kind]())
    return rows


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
    spec_peak, measured_peak = peak_for(name, SPEC_PEAKS), peak_for(name, MEASURED_PEAKS)
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
        "rows": [row_dict(r, spec_peak, measured_peak) for r in rows],
        "ratio_raydw_over_reference": {k: sig(by[k, "raydw"].images_per_s / by[k, "reference"].images_per_s)
                                       for k in KINDS},
    }
