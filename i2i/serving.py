"""The trained generators as an MLflow model (``pyfunc`` flavour), so that MLflow's own tools
serve and load them: ``mlflow models serve -m models:/<name>@champion``,
``mlflow.pyfunc.load_model``.

Input: a table with one column ``image``, each cell an image file (PNG, JPEG, ...) encoded in
base64. Params: ``direction`` (``ab`` or ``ba``, default ``ab``) and, for MUNIT, ``seed``: the
style code is drawn from it, one for the whole request. Output: a table with one column
``image``, each cell the translation as a base64 PNG, at the input's size. Images are read as
``preprocess`` reads them and translated as ``i2i translate`` translates them (padded to the
network's multiple, cropped back).

The model folder holds the generator file, a copy of the ``i2i`` package (so that it loads
where i2i is not installed), ``mlflow_model.py`` (MLflow's "models from code": the model is
built by code, not unpickled), a signature, an input example and the pip requirements: every
third-party package the serving code imports, pinned to the installed version.
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import io
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from PIL import Image

from i2i import sources
from i2i.data.images import load_rgb
from i2i.data.loader import prepare
from i2i.grids import to_uint8
from i2i.models import Networks

ARTIFACT = "generators"  # the generator file's name among the MLflow model's artifacts


def encode_png(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def translate_encoded(
    nets: Networks, images: list[str], direction: str, seed: int, device: torch.device | str
) -> list[str]:
    """Base64 image files translated along ``direction``: base64 PNGs, each at its input's size."""
    codes = None
    if nets.style_dim:
        rng = torch.Generator().manual_seed(seed)
        codes = torch.randn(1, nets.style_dim, 1, 1, generator=rng).to(device)
    out = []
    for cell in images:
        x, (h, w) = prepare(
            load_rgb(base64.b64decode(cell)), None, nets.size_multiple, nets.min_size
        )
        with torch.no_grad():
            y = nets.translate(x[None].to(device), direction, codes)[0, 0]  # [3, H', W']
        out.append(encode_png(to_uint8(y[None, :, :h, :w])[0]))
    return out


class ImageTranslator(mlflow.pyfunc.PythonModel):
    """The pyfunc: the generators loaded once, then a table of images per request."""

    def load_context(self, context) -> None:
        from i2i.devices import pick_device
        from i2i.models import load_generators

        self.device = pick_device("auto")
        self.nets = load_generators(context.artifacts[ARTIFACT], self.device)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        params = params or {}
        direction = params.get("direction", "ab")
        if direction not in self.nets.directions:
            raise ValueError(f"direction {direction!r}: expected one of {self.nets.directions}")
        seed = int(params.get("seed", 0))
        images = translate_encoded(self.nets, list(model_input["image"]), direction, seed,
                                   self.device)  # fmt: skip
        return pd.DataFrame({"image": images})


def requirements() -> list[str]:
    """``dist==version`` for every third-party package the serving code imports at any level."""
    modules = set()
    for path in sources.closure("i2i.serving"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    dists = importlib.metadata.packages_distributions()
    pins = set()
    for module in modules - set(sys.stdlib_module_names) - {"i2i"}:
        found = dists.get(module, [])
        # mlflow's module is in mlflow, mlflow-skinny and mlflow-tracing: the one of its name
        for dist in [d for d in found if d.lower() == module] or found:
            version = importlib.metadata.version(dist).split("+")[0]  # no local label (+cpu)
            pins.add(f"{dist.lower()}=={version}")
    return sorted(pins)


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
