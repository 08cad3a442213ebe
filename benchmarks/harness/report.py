"""Benchmark results as JSON and as the Markdown table of ``reports/benchmarks.md``."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.training import MODES, TrainResult
from i2i.io import write_bytes, write_json


def environment() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import os

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_version": torch.version.cuda if torch.cuda.is_available() else None,
        "cpu_matmul_tflops": None if torch.cuda.is_available() else matmul_tflops(),
    }


def matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
    """The CPU's fp32 FLOP rate on a large matrix product (MKL, all of torch's threads): the
    practical peak that a CPU training step's FLOP rate is compared to."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * n**3 / best / 1e12


# Dense bf16 tensor-core peaks (FLOP/s), the denominator of the achieved fraction.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(env: dict[str, Any]) -> tuple[float | None, str]:
    """The FLOP rate a run's is compared to, and its name: a GPU's dense bf16 peak, or on a CPU
    the measured fp32 matrix-product rate."""
    if env.get("cuda"):
        return next((v for k, v in PEAK_BF16.items() if k in env["cuda"]), None), "bf16 peak"
    rate = env.get("cpu_matmul_tflops")
    return (rate * 1e12 if rate else None), "fp32 matmul rate"


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def training_table(
    results: list[TrainResult], peak: float | None = None, peak_name: str = "peak"
) -> str:
    columns = [
        "setting",
        "mode",
        "it/s",
        "images/s (best; every repeat)",
        "vs fp32",
        "paired vs fp32 (quartiles; pairs)",
        "step ms",
        "loader share",
        "peak RSS MB",
        "CUDA max MB",
        "losses vs fp32, max rel. diff: iteration 1 / warm-up",
        "steps (warm-up + timed)",
        "warm-up s",
        "TFLOP/s" + (f" (of {peak_name})" if peak else ""),
    ]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    base = {
        r.setting: r.result["images_per_second"]
        for r in results
        if r.mode == "fp32" and r.status == "ok"
    }
    for r in results:
        if r.status != "ok":
            rows.append(f"| {r.setting} | {r.mode} | {r.status}: {r.reason} ||||||||||||")
            continue
        x = r.result
        speedup = x["images_per_second"] / base[r.setting] if r.setting in base else None
        reps = x.get("repeats_images_per_second", [])
        spread = f" ({', '.join(f'{v:.1f}' for v in reps)})" if len(reps) > 1 else ""
        rows.append(
            f"| {r.setting} | {r.mode} | {x['iterations_per_second']:.2f} | "
            f"{x['images_per_second']:.1f}{spread} | "
            f"{_f(speedup, '.2f')}x | {_paired(r.paired)} | {x['step_ms']:.0f} | "
            f"{100 * x['loader_share']:.1f}% | "
            f"{_f(x['peak_rss_mb'], '.0f')} | {_f(x['cuda_max_allocated_mb'], '.0f')} | "
            f"{_f(r.step1_rel_diff, '.1e')} / {_f(r.loss_rel_diff, '.1e')} | "
            f"{x['warmup_steps']} + {x['timed_steps']} | {x['warmup_s']:.1f} | "
            f"{_tflops(x, peak)} |"
        )
    return "\n".join(rows) + "\n"


def _paired(p: dict[str, Any] | None) -> str:
    return "-" if not p else f"{p['speedup']:.2f}x ({p['q25']:.2f}-{p['q75']:.2f}; {p['pairs']})"


def _tflops(x: dict[str, Any], peak: float | None) -> str:
    t = x.get("achieved_tflops")
    if t is None:
        return "-"
    return f"{t:.3g}" + (f" ({100 * t * 1e12 / peak:.1f}%)" if peak else "")


def evaluation_table(ev: dict[str, Any]) -> str:
    pr = ev["protocol"]
    return (
        f"| LPIPS ({ev['lpips_net']}) pairs/s | Inception-v3 images/s | protocol wall time "
        f"| protocol |\n"
        f"|---|---|---|---|\n"
        f"| {ev['lpips_pairs_per_second']:.1f} | {ev['inception_images_per_second']:.1f} | "
        f"{ev['protocol_seconds']:.1f} s | "
        f"{pr['lpips_inputs']} x {pr['lpips_pairs']} LPIPS pairs + "
        f"{pr['cis_inputs']} x {pr['cis_samples']} CIS outputs, {pr['classifier']} classifier, "
        f"{ev['image_size']} px, batch {ev['batch_size']} |\n"
    )


def write_reports(
    out_json: Path,
    out_md: Path,
    command: str,
    env: dict[str, Any],
    training: list[TrainResult],
    evaluation: dict[str, Any] | None,
    profile: str | None = None,
) -> None:
    write_json(
        out_json,
        {
            "command": command,
            "environment": env,
            "training": [r.as_dict() for r in training],
            "evaluation": evaluation,
            "profile": profile,
        },
    )
    device = env["cuda"] or (
        f"{env['cpu']}, {env['cpu_count']} cores, {env['torch_threads']} threads; fp32 "
        f"2048x2048 matrix product {env.get('cpu_matmul_tflops', 0):.3f} TFLOP/s"
    )
    lines = [
        "# Benchmarks\n",
        f"Device: {device}. PyTorch {env['torch']}, Python {env['python']}.\n",
        f"Command: `{command}`\n",
    ]
    if training:
        used = sorted({r.mode for r in training}, key=list(MODES).index)
        lines += [
            "## Training step\n",
            training_table(training, *peak_flops(env)),
            "Modes: " + "; ".join(f"`{m}`: {MODES[m].doc}" for m in used) + ".\n",
            "Images/s counts both domains (2 x batch per iteration). The loader share is the time "
            "the loop waits for the next batch and its transfer, over the step time. The losses "
            "of the warm-up iterations (the same seed and data) are compared to the fp32 run's: "
            "iteration 1 runs on identical weights, so its difference is the mode's rounding "
            "alone; from iteration 2 on, Adam's first updates (about lr times the sign of each "
            "gradient) turn rounding-level gradients into lr-sized weight differences, so later "
            "losses drift further without a change in the math. Every run keeps its fastest "
            "repeat; the others are listed beside it. The paired column (`--paired`) comes from "
            "runs that train the mode and the fp32 baseline side by side in one process, "
            "alternating iterations on the same batches: it is the median, over all pairs of "
            "every repeat, of baseline step time / mode step time, with its quartiles. A slow "
            "spell of the machine slows both members of a pair, so it is the speedup to trust "
            "on a noisy machine. TFLOP/s counts the model's convolutions as such (torch's "
            "FlopCounterMode on an eager step; compiled runs are credited with the fp32 run's "
            "count).\n",
        ]
    if evaluation:
        lines += ["## Evaluation\n", evaluation_table(evaluation)]
    if profile:
        lines += ["## Where the time goes\n", "```", profile.rstrip(), "```\n"]
    write_bytes(out_md, "\n".join(lines).encode())
