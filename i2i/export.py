"""`i2i export`: one direction of a trained generator as TorchScript or ONNX, checked against
eager PyTorch before it is kept.

The exported network takes images [N, 3, H, W] in [-1, 1] of any batch size and any H, W the
network accepts (multiples of its downsampling factor) and returns [N, 3, H, W]. MUNIT's also
takes the style code [N, style_dim, 1, 1] as a second input. Each export is run on random
inputs at two sizes beside the eager model; the largest absolute difference must be at most
``TOLERANCE``, or the file is not written. ONNX needs the ``export`` extra
(``pip install 'i2i[export]'``: onnx, onnxruntime).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from i2i.errors import I2IError
from i2i.io import write_bytes
from i2i.models import Networks

TOLERANCE = 1e-4
FORMATS = ("torchscript", "onnx")


class Translator(nn.Module):
    """One direction of a model as a plain module: forward(x) or, for MUNIT, forward(x, style)."""

    def __init__(self, nets: Networks, direction: str):
        super().__init__()
        self.style_dim = nets.style_dim
        if self.style_dim:
            self.content = nets.G[direction[0]].enc_content
            self.target = nets.G[direction[1]]
        else:
            self.net = nets.G[direction]

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if not self.style_dim:
            return self.net(x)
        return self.target.dec(self.content(x), self.target.mlp(style))


def example_inputs(nets: Networks, n: int, h: int, w: int, seed: int = 0) -> tuple:
    rng = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=rng) * 2 - 1
    if not nets.style_dim:
        return (x,)
    return x, torch.randn(n, nets.style_dim, 1, 1, generator=rng)


def _sizes(nets: Networks) -> list[tuple[int, int, int]]:
    """Two input shapes (batch, height, width) the network accepts, neither of them square."""
    m = nets.size_multiple
    base = max(nets.min_size, 16 * m)
    return [(1, base, base + 2 * m), (2, base + m, base)]


def to_bytes(model: Translator, fmt: str, example: tuple) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter notes on the input-size checks
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), buf)
        else:
            names = ["x", "style"][: len(example)]
            axes = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}
            if len(example) > 1:
                axes["style"] = {0: "n"}
            torch.onnx.export(
                model,
                example,
                buf,
                input_names=names,
                output_names=["y"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    return buf.getvalue()


def runner(data: bytes, fmt: str):
    """A function from input tensors to the output tensor, running the exported bytes."""
    if fmt == "torchscript":
        module = torch.jit.load(io.BytesIO(data))
        return lambda *args: module(*args)
    try:
        import onnxruntime as ort
    except ImportError:
        raise I2IError(
            "ONNX export needs onnx and onnxruntime: pip install 'i2i[export]'"
        ) from None
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*args: torch.Tensor) -> torch.Tensor:
        feeds = {n: a.numpy() for n, a in zip(names, args)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def export(nets: Networks, direction: str, fmt: str, out: Path) -> float:
    """Write ``nets``' ``direction`` as ``fmt`` to ``out``; return the largest absolute
    difference from eager PyTorch over the check inputs. Nothing is written when it is over
    ``TOLERANCE``."""
    if fmt not in FORMATS:
        raise I2IError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if direction not in nets.directions:
        raise I2IError(
            f"--direction {direction}: {nets.name} translates {' and '.join(nets.directions)} only"
        )
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401 - the legacy exporter needs it to serialise
        except ImportError:
            raise I2IError(
                "ONNX export needs onnx and onnxruntime: pip install 'i2i[export]'"
            ) from None
    model = Translator(nets.cpu().eval(), direction).eval()
    sizes = _sizes(nets)
    data = to_bytes(model, fmt, example_inputs(nets, *sizes[0]))
    run = runner(data, fmt)
    worst = 0.0
    with torch.no_grad():
        for i, size in enumerate(sizes):
            args = example_inputs(nets, *size, seed=i + 1)
            worst = max(worst, (run(*args) - model(*args)).abs().max().item())
    if worst > TOLERANCE:
        raise I2IError(f"the {fmt} export differs from PyTorch by {worst:.2e} (> {TOLERANCE})")
    write_bytes(out, data)
    return worst
