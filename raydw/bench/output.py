"""`raydw bench`'s output: the device's name and bf16 peaks, each row's derived columns, the text table, the JSON."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from raydw.bench.profiles import Row

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


def peak_for(name: str, table) -> tuple[float, str] | None:
    return next(((p, src) for sub, p, src in table if sub in name), None)


def device_label(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    return f"CPU: {model} ({os.cpu_count()} cores)"


def sig(v: float, digits: int = 5) -> float:
    """Significant digits, not decimals: a CPU smoke test measures fractions of an image per second."""
    return float(f"{v:.{digits}g}")


def row_dict(r: Row, spec_peak, measured_peak) -> dict:
    tflops = r.flops_per_image * r.images_per_s / 1e12 if r.flops_per_image is not None else None
    return {"kind": r.kind, "recipe": r.recipe, "images": r.images, "seconds": round(r.seconds, 4),
            "images_per_s": sig(r.images_per_s),
            "gflop_per_image": None if r.flops_per_image is None else round(r.flops_per_image / 1e9, 4),
            "achieved_tflops": None if tflops is None else sig(tflops),
            "frac_of_spec_bf16_peak": None if tflops is None or spec_peak is None else round(tflops / spec_peak[0], 4),
            "frac_of_measured_bf16_peak": None if tflops is None or measured_peak is None else round(tflops / measured_peak[0], 4),
            "peak_mem_mib": round(r.peak_mem_mib, 1)}


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
    from raydw.store.atomic import write_whole

    p = Path(path)
    write_whole(p, lambda f: Path(f).write_text(json.dumps(res, indent=2) + "\n"))  # whole or not at all
    return p
