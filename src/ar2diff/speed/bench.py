"""Benchmarks: decoding and training speed against transformers and this machine's limits.

Each case runs in a fresh child process so that its peak resident memory is its own. Results
are printed as a table and written as JSON with the machine's description and the matmul peaks
measured in the same run. Compare ratios within one run: timings on a shared CPU are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DEFAULT_STEPS
from ar2diff.devices import resolve_device, synchronize


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5,
                device: torch.device | None = None) -> float:
    """Measured matrix-multiply throughput in FLOP/s on ``device`` (best of ``repeats``)."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        n *= 4  # a GPU needs a larger product to reach its peak
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _peaks(device: torch.device) -> dict:
    return {"device": str(device), "bf16_flops": matmul_peak(torch.bfloat16, device=device),
            "fp32_flops": matmul_peak(torch.float32, device=device)}


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}


def run_case(case: dict) -> dict:
    """Run one case in a child process; returns its JSON result plus its peak RSS (MB)."""
    proc = subprocess.Popen([sys.executable, "-m", "ar2diff.speed.cases", json.dumps(case)],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {**case, "error": f"exit status {status}"}
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "peak_rss_mb": usage.ru_maxrss / 1024}


DECODE_METHODS = ("hf_generate", "ar_greedy", "diffusion_n1", "diffusion_n8", "forward_floor")


def decode_bench(models: list[str], lengths: list[int], out: Path, prompt_tokens: int = 64,
                 dtype: str = "bfloat16", device: str = "auto") -> dict:
    """ar2diff AR greedy vs transformers generate vs ar2diff diffusion (T=10, N=1 and 8), and
    the floor of diffusion: 10 bare forward passes over prompt + output, measured alike."""
    where = resolve_device(device)
    peaks = _peaks(where)
    rows = []
    for model in models:
        for length in lengths:
            for method in DECODE_METHODS:
                case = {"kind": "decode", "model": model, "method": method, "length": length,
                        "prompt_tokens": prompt_tokens, "dtype": dtype, "device": str(where)}
                row = run_case(case)
                if method.startswith("diffusion") and "params" in row:
                    flops = DEFAULT_STEPS * 2 * row["params"] * (prompt_tokens + length)
                    row["compute_limit_s"] = flops / peaks["bf16_flops"]
                    row["vs_compute_limit"] = row["seconds"] / row["compute_limit_s"]
                rows.append(row)
                print(_fmt(row), flush=True)
    _floor_ratios(rows)
    _ratios(rows)
    result = {"benchmark": "decode", "machine": machine_info(), "peaks": peaks, "results": rows}
    write_json_atomic(out, result)
    plot_decode(out, out.with_suffix(".png"))
    return result


def plot_decode(json_path: Path, png_path: Path) -> None:
    """Decode time against output length per model and method (the paper's Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in json.loads(Path(json_path).read_text())["results"] if "seconds" in r]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["length"], r["seconds"]) for r in rows
                         if r["model"] == model and r["method"] == method)
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set_title(model)
        ax.set_xlabel("output tokens (prompt 64)")
        ax.set_ylabel("seconds")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def _floor_ratios(rows: list[dict]) -> None:
    """Diffusion time over the bare-forward floor measured at the same model and length."""
    floor = {(r["model"], r["length"]): r for r in rows
             if r.get("method") == "forward_floor" and "seconds" in r}
    for r in rows:
        ref = floor.get((r["model"], r["length"]))
        if ref and r.get("method", "").startswith("diffusion") and "seconds" in r:
            r["vs_forward_floor"] = r["seconds"] / ref["seconds"]


def _ratios(rows: list[dict]) -> None:
    """Speed of each method relative to transformers' generate at the same model and length."""
    base = {(r["model"], r["length"]): r for r in rows if r.get("method") == "hf_generate"}
    for r in rows:
        ref = base.get((r["model"], r["length"]))
        if ref and "seconds" in r and "seconds" in ref:
            r["speedup_vs_hf_generate"] = ref["seconds"] / r["seconds"]
            if r["method"] == "ar_greedy":
                r["same_tokens_as_hf"] = r.get("tokens_digest") == ref.get("tokens_digest")


def _fmt(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:14} {row['method']:12} {row['length']:5}  ERROR {row['error']}"
    return (f"{row['model']:14} {row['method']:12} {row['length']:5}  {row['seconds']:8.2f} s  "
            f"{row['tokens_per_s']:8.1f} tok/s  peak {row['peak_rss_mb']:7.0f} MB")


def train_bench(models: list[str], out: Path, seq_len: int = 512, batch: int = 8,
                steps: int = 3, micro: int = 2, device: str = "auto") -> dict:
    """Training tokens/s, model-FLOPs utilisation and peak memory: ar2diff vs plain HF eager.

    The HF baseline runs the whole batch at once; ar2diff accumulates gradients over micro
    batches of ``micro`` examples (the same update, less memory).
    """
    where = resolve_device(device)
    peaks = _peaks(where)
    rows = []
    for model in models:
        for method in ("hf_eager_ar", "ar2diff_ar", "ar2diff_diffusion_l12"):
            row = run_case({"kind": "train", "model": model, "method": method, "device": str(where),
                            "seq_len": seq_len, "batch": batch, "steps": steps,
                            "micro": None if method.startswith("hf") else micro})
            if "flops_per_step" in row:
                achieved = row["flops_per_step"] / row["seconds_per_step"]
                row["mfu_bf16"] = achieved / peaks["bf16_flops"]
                row["mfu_fp32"] = achieved / peaks["fp32_flops"]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
    result = {"benchmark": "train", "machine": machine_info(), "peaks": peaks, "results": rows}
    write_json_atomic(out, result)
    return result
