"""Latency of one 256 px translation on the CPU: eager PyTorch, TorchScript and ONNX Runtime,
for the generators of the reference presets (CycleGAN ResNet-9, MUNIT edges2shoes), A->B,
batch 1. Weights are seeded random: latency does not depend on them. Writes a Markdown table:

    python benchmarks/export_latency.py --out reports/export-latency.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from i2i import presets  # noqa: E402
from i2i.config import params_from_dict  # noqa: E402
from i2i.export import Translator, example_inputs, runner, to_bytes  # noqa: E402
from i2i.io import write_bytes  # noqa: E402
from i2i.models import build_networks  # noqa: E402

PRESETS = {"CycleGAN ResNet-9": "cyclegan_horse2zebra.yaml", "MUNIT": "munit_edges2shoes.yaml"}


def median_ms(fn, args: tuple, repeats: int) -> float:
    with torch.no_grad():
        fn(*args)  # warm-up: allocations, ONNX Runtime's and TorchScript's first-run work
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("reports/export-latency.md"))
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    rows = []
    for label, preset in PRESETS.items():
        torch.manual_seed(0)
        base = yaml.safe_load((root / "params.yaml").read_text())
        raw = presets.overlay(base, presets.read(root / "presets" / preset))
        nets = build_networks(params_from_dict(raw, preset).model, discriminators=False)
        model = Translator(nets.eval(), "ab").eval()
        inputs = example_inputs(nets, 1, args.size, args.size)
        cells = [median_ms(model, inputs, args.repeats)]
        for fmt in ("torchscript", "onnx"):
            cells.append(median_ms(runner(to_bytes(model, fmt, inputs), fmt), inputs, args.repeats))
        rows.append(f"| {label} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
        print(rows[-1], flush=True)
    lines = [
        "# Export latency",
        "",
        f"One {args.size} px image, batch 1, A->B, median of {args.repeats} runs after one "
        f"warm-up; {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, PyTorch {torch.__version__}.",
        "",
        f"Command: `python benchmarks/export_latency.py --repeats {args.repeats} --size "
        f"{args.size}`",
        "",
        "| generator | eager PyTorch ms | TorchScript ms | ONNX Runtime ms |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    write_bytes(args.out, "\n".join(lines).encode())


if __name__ == "__main__":
    main()
