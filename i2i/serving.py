"""The trained generators as an MLflow model (``pyfunc`` flavour), so that MLflow's own tools
serve and load them: ``mlflow models serve -m models:/<name>@champion``,
``mlflow.pyfunc.load_model``.

Input: a table with one column ``image``, each cell an image file (PNG, JPEG, ...) encoded in
base64. Params: ``direction`` (``ab`` or ``ba``, default ``ab``) and, for MUNIT, ``seed``: the
style code is drawn from it, one for the whole request. Output: a table with one column
``image``, each cell the translation as a base64 PNG, at the input's size. Images are read as
``preprocess`` reads them and translated as ``i2i translate`` translates them (padded to the
network's multiple, cropped back).

A request is outside input. Before any image is decoded, each is held to limits that
``mlflow models serve`` reads from the environment when the model loads:

- ``I2I_SERVE_MAX_ROWS`` (default 16): images per request;
- ``I2I_SERVE_MAX_BYTES`` (default 33554432, 32 MiB): base64 characters per request, all images
  together;
- ``I2I_SERVE_MAX_PIXELS`` (default 4194304, 2048 x 2048): pixels per image, read from the
  image's header.

A request over a limit, or a malformed one (bad base64, not an image, a bad direction), gets
HTTP 400 and one line of JSON naming the row and what would be accepted, never a traceback.
MLflow checks the request's shape first (JSON, the ``image`` column, the params' types) and
answers HTTP 400 in one line of JSON too, with its own message. MLflow's server reads the whole
body before the model sees it: a hard cap on the bytes read belongs in the proxy in front of it
(docs/security.md).

The model folder holds the generator file, a copy of the ``i2i`` package (so that it loads
where i2i is not installed), ``mlflow_model.py`` (MLflow's "models from code": the model is
built by code, not unpickled), a signature, an input example and the pip requirements: every
third-party package the serving code imports, pinned to the installed version.
"""

from __future__ import annotations

import ast
import base64
import binascii
import functools
import importlib.metadata
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
import numpy as np
import pandas as pd
import torch
from PIL import Image

from i2i import sources
from i2i.data.images import BadImage, TooManyPixels, load_rgb
from i2i.data.loader import prepare
from i2i.grids import to_uint8
from i2i.models import Networks

ARTIFACT = "generators"  # the generator file's name among the MLflow model's artifacts
LIMITS = {"rows": 16, "bytes": 32 << 20, "pixels": 2048 * 2048}  # defaults; I2I_SERVE_MAX_*


class RequestRefused(MlflowException):
    """A request the model will not run: HTTP 400 with one line of JSON.

    MLflow's scoring server rewrites a predict error's message to "Failed to predict data
    '<the whole request>'. Error: ..."; this message keeps its first value, so the reply stays one
    line and never echoes the request back.
    """

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_line"):
            self._line = value


def limits() -> dict[str, int]:
    """The serving limits: ``I2I_SERVE_MAX_ROWS``, ``_BYTES`` and ``_PIXELS``, else the defaults."""
    found = {}
    for key, default in LIMITS.items():
        variable = f"I2I_SERVE_MAX_{key.upper()}"
        raw = os.environ.get(variable, "")
        if raw and not (raw.isdigit() and int(raw) > 0):
            raise ValueError(f"{variable}={raw!r}: expected a positive whole number")
        found[key] = int(raw) if raw else default
    return found


def encode_png(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_request(images: list, limit: dict[str, int]) -> list[Image.Image]:
    """The request's images, each checked against ``limit`` before any pixel is decoded."""
    if len(images) > limit["rows"]:
        raise RequestRefused(
            f"{len(images)} images in one request, more than the {limit['rows']} allowed "
            f"(I2I_SERVE_MAX_ROWS)"
        )
    if not all(isinstance(cell, str) for cell in images):
        raise RequestRefused("column 'image': expected base64 strings of image files")
    size = sum(len(cell) for cell in images)
    if size > limit["bytes"]:
        raise RequestRefused(
            f"{size:,} base64 characters in one request, more than the {limit['bytes']:,} "
            f"allowed (I2I_SERVE_MAX_BYTES)"
        )
    decoded = []
    for row, cell in enumerate(images):
        try:
            data = base64.b64decode(cell, validate=True)
        except (binascii.Error, ValueError):
            raise RequestRefused(f"row {row}: not valid base64") from None
        try:
            decoded.append(load_rgb(data, max_pixels=limit["pixels"]))
        except TooManyPixels as e:
            raise RequestRefused(f"row {row}: {e} (I2I_SERVE_MAX_PIXELS)") from None
        except BadImage as e:
            raise RequestRefused(f"row {row}: {e}") from None
    return decoded


def translate_images(
    nets: Networks, images: list[Image.Image], direction: str, seed: int, device: torch.device | str
) -> list[str]:
    """Images translated along ``direction``: base64 PNGs, each at its input's size."""
    codes = None
    if nets.style_dim:
        rng = torch.Generator().manual_seed(seed)
        codes = torch.randn(1, nets.style_dim, 1, 1, generator=rng).to(device)
    out = []
    for image in images:
        x, (h, w) = prepare(image, None, nets.size_multiple, nets.min_size)
        with torch.no_grad():
            y = nets.translate(x[None].to(device), direction, codes)[0, 0]  # [3, H', W']
        out.append(encode_png(to_uint8(y[None, :, :h, :w])[0]))
    return out


class ImageTranslator(mlflow.pyfunc.PythonModel):
    """The pyfunc: the generators loaded once, then a table of images per request."""

    def load_context(self, context) -> None:
        from i2i.devices import pick_device
        from i2i.models import load_generators

        self.limits = limits()
        self.device = pick_device("auto")
        self.nets = load_generators(context.artifacts[ARTIFACT], self.device)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        params = params or {}
        direction = params.get("direction", "ab")
        if direction not in self.nets.directions:
            raise RequestRefused(
                f"direction {direction!r}: expected one of {', '.join(self.nets.directions)}"
            )
        seed = int(params.get("seed", 0))  # MLflow has checked the column and the params' types
        images = decode_request(list(model_input["image"]), self.limits)
        return pd.DataFrame(
            {"image": translate_images(self.nets, images, direction, seed, self.device)}
        )


def requirements() -> list[str]:
    """``dist==version`` for every third-party package the serving code imports at any level."""
    return list(_requirements())


@functools.cache  # the installed packages do not change under a running process
def _requirements() -> tuple[str, ...]:
    modules = set()
    for path in sources.closure("i2i.serving"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    pins = set()
    for module in modules - set(sys.stdlib_module_names) - {"i2i"}:
        for dist in _distributions(module):
            version = importlib.metadata.version(dist).split("+")[0]  # no local label (+cpu)
            pins.add(f"{dist.lower()}=={version}")
    return tuple(sorted(pins))


def _distributions(module: str) -> list[str]:
    """The installed distributions that hold ``module``. Most are named after it or declare it in
    top_level.txt, which is fast to ask; a scan of every installed package's files takes seconds
    and is the last resort."""
    try:
        named = importlib.metadata.distribution(module)
        top = named.read_text("top_level.txt")
        if module in (top.split() if top else {f.parts[0] for f in named.files or ()}):
            return [named.name]
    except importlib.metadata.PackageNotFoundError:
        pass
    declared = [
        d.name
        for d in importlib.metadata.distributions()
        if module in (d.read_text("top_level.txt") or "").split()
    ]
    found = declared or importlib.metadata.packages_distributions().get(module, [])
    # mlflow's module is in mlflow, mlflow-skinny and mlflow-tracing: the one of its name
    return [d for d in found if d.lower() == module] or found


def save(generator_file: Path, out: Path, example: np.ndarray) -> None:
    """Write the MLflow model folder ``out`` for ``generator_file``; ``example``: one uint8
    image [H, W, 3] for the input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "image")]),
        params=ParamSchema([ParamSpec("direction", "string", "ab"), ParamSpec("seed", "long", 0)]),
    )
    with tempfile.TemporaryDirectory(prefix="i2i-code-") as tmp:
        # The package without caches: the model folder stays small and byte-stable.
        code = Path(tmp) / "i2i"
        shutil.copytree(sources.PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__"))
        mlflow.pyfunc.save_model(
            path=str(out),
            python_model=str(Path(__file__).with_name("mlflow_model.py")),  # models from code
            artifacts={ARTIFACT: str(generator_file)},
            code_paths=[str(code)],
            signature=signature,
            input_example=pd.DataFrame({"image": [encode_png(example)]}),
            pip_requirements=requirements(),
        )
