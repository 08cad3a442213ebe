"""Where a Winograd convolution's time goes: each step of i2i.models.winograd (the C transforms,
the three batched products) and the whole conv, forward + backward, against PyTorch's direct
conv, on CPU fp32. Each figure is the median of --repeats timings of --iterations calls.

    python benchmarks/winograd_steps.py                      # the default config's and 256 px shapes
    python benchmarks/winograd_steps.py --shape 8x64x16x16   # N x C x H x W (output size, C in = C out)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2i.models import kernels, winograd as W  # noqa: E402


def median_ms(fn: Callable[[], object], iterations: int, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        times.append((time.perf_counter() - t0) / iterations * 1e3)
    return statistics.median(times)


def steps(n: int, c: int, h: int, w: int) -> dict[str, Callable[[], object]]:
    """The calls to time for a 3x3 conv of c -> c channels on [n, c, h + 2, w + 2] (padded) inputs."""
    g = torch.Generator().manual_seed(0)
    x, k, b = torch.randn(n, c, h + 2, w + 2, generator=g), torch.randn(c, c, 3, 3, generator=g), torch.randn(c)
    dy = torch.randn(n, c, h, w, generator=g)
    u, v = W.filter_transform(k), W._input_transform(x)
    m = torch.bmm(u, v)
    dm, _ = W._output_adjoint(dy)
    ut, vt = u.transpose(1, 2), v.transpose(1, 2)
    dv, du = torch.bmm(ut, dm), torch.bmm(dm, vt)
    leaves = [t.clone().requires_grad_() for t in (x, k, b)]

    def conv(fn: Callable) -> Callable[[], object]:
        return lambda: torch.autograd.grad(fn(*leaves), leaves, dy)

    return {
        "filter transform": lambda: W.filter_transform(k),
        "input transform": lambda: W._input_transform(x),
        "product U V": lambda: torch.bmm(u, v),
        "output transform": lambda: W._output_transform(m, b, n, h // 4, w // 4),
        "output adjoint (+ bias grad)": lambda: W._output_adjoint(dy),
        "product U^T dM": lambda: torch.bmm(ut, dm),
        "input adjoint": lambda: W._input_adjoint(dv, n, h + 2, w + 2),
        "product dM V^T": lambda: torch.bmm(dm, vt),
        "filter adjoint": lambda: W._filter_adjoint(du),
        "Winograd conv, fwd + bwd": conv(W.winograd_conv3x3),
        "PyTorch conv, fwd + bwd": conv(F.conv2d),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", action="append", help="NxCxHxW of the conv's output (repeatable)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    shapes = args.shape or ["8x64x16x16", "1x256x64x64"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"C transforms: {'yes' if kernels.winograd() else 'no (PyTorch formulations)'}")
    for shape in shapes:
        n, c, h, w = (int(s) for s in shape.split("x"))
        if h % 4 or w % 4:
            raise SystemExit(f"--shape {shape}: H and W must be multiples of 4")
        print(f"\n{shape} (median ms)")
        for name, fn in steps(n, c, h, w).items():
            print(f"  {name:30s} {median_ms(fn, args.iterations, args.repeats):8.3f}")


if __name__ == "__main__":
    main()
