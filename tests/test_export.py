"""`i2i export`: TorchScript and ONNX files of both models that run at sizes other than the one
they were traced at, match eager PyTorch, and are not written when they do not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from i2i.export import Translator, example_inputs, runner
from i2i.models import load_generators
from tests.test_translate import generator_file

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", ["cyclegan", "munit"])
def test_an_export_runs_at_any_size_and_matches_pytorch(name, fmt, tmp_path):
    model = generator_file(tmp_path, name)
    out = tmp_path / f"g.{fmt}"
    proc = subprocess.run(
        [
            str(BIN / "i2i"),
            "export",
            "--model",
            str(model),
            "--direction",
            "ba",
            "--format",
            fmt,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    figure = float(re.search(r"max \|difference\| from PyTorch (\S+) at two", proc.stdout)[1])
    assert 0 <= figure <= 1e-4
    nets = load_generators(model)
    eager = Translator(nets, "ba").eval()
    exported = runner(out.read_bytes(), fmt)
    args = example_inputs(nets, 3, 48, 80, seed=7)  # neither of the checked sizes
    with torch.no_grad():
        assert (exported(*args) - eager(*args)).abs().max().item() <= 1e-4
        assert exported(*args).shape == (3, 3, 48, 80)
    if name == "munit":  # the style is an input: another style, another image
        other = (args[0], torch.randn_like(args[1]))
        assert (exported(*other) - exported(*args)).abs().max().item() > 1e-3


def test_an_export_that_differs_from_pytorch_is_not_written(tmp_path, monkeypatch):
    from i2i import export
    from i2i.errors import I2IError

    nets = load_generators(generator_file(tmp_path, "cyclegan"))
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference is too much
    with pytest.raises(I2IError, match="export differs from PyTorch by"):
        export.export(nets, "ab", "torchscript", tmp_path / "g.pt")
    assert not (tmp_path / "g.pt").exists()


def test_one_pixel_off_is_enough_to_refuse_an_export(tmp_path, monkeypatch):
    """The check is the largest difference, not an average: one pixel off by 1e-3 in a batch of
    thousands of values (a mean of under 1e-7) is refused."""
    from i2i import export
    from i2i.errors import I2IError

    nets = load_generators(generator_file(tmp_path, "cyclegan"))
    real_runner = export.runner

    def one_pixel_off(data, fmt):
        run = real_runner(data, fmt)

        def planted(*args):
            y = run(*args).clone()
            y[0, 0, 0, 0] += 1e-3
            return y

        return planted

    monkeypatch.setattr(export, "runner", one_pixel_off)
    with pytest.raises(I2IError, match=r"differs from PyTorch by 1\.00e-03"):
        export.export(nets, "ab", "torchscript", tmp_path / "g.pt")
    assert not (tmp_path / "g.pt").exists()


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnx_without_the_export_extra_says_how_to_install_it(missing, tmp_path):
    """Run with the package made unimportable (a stub that raises ImportError first on the path),
    as on an install without the extra."""
    stub = tmp_path / "hide" / missing
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f'raise ImportError("No module named {missing}")\n')
    out = tmp_path / "g.onnx"
    proc = subprocess.run(
        [
            str(BIN / "i2i"),
            "export",
            "--model",
            str(generator_file(tmp_path, "cyclegan")),
            "--direction",
            "ab",
            "--format",
            "onnx",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "hide")},
    )
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "Error: ONNX export needs onnx and onnxruntime: pip install 'i2i[export]'"
    ]
