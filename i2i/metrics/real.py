"""The real test images' Inception outputs, computed once and shared by every evaluation.

FID and KID compare the translations' Inception pool features with the real target test
images'; IS with ``evaluate.classifier: inception`` reads the real images' posteriors. Those
depend on the prepared data, the centre crop and the Inception weights, never on the model, so
the ``real_features`` DVC stage computes them once (``real_features/test_{a,b}.npz``) and the
evaluate stage of every experiment reads them. Each file carries the key it was made for; a file
made for other data, crop or weights is ignored and the features are computed afresh.

This module is the files' format (:func:`key`, :func:`read`); the stage that writes them is
:mod:`i2i.metrics.real_stage`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2i import weights
from i2i.config import EvaluateConfig

PARTS = ("test_a", "test_b")


def key(
    data: Path, crop_size: int, backbones: dict[str, str], cfg: EvaluateConfig
) -> dict[str, Any]:
    """What the real features of ``data`` depend on: the data, the crop, which Inception and its
    weights (a random one: its seed)."""
    name = weights.inception(cfg)
    used = backbones.get(name, weights.RANDOM)
    return {
        "data": json.loads((data / "manifest.json").read_text())["content_hash"],
        "crop_size": crop_size,
        name: used if used != weights.RANDOM else f"random, seed {cfg.seed}",
    }


def read(
    folder: Path, part: str, expected: dict[str, Any]
) -> tuple[np.ndarray, torch.Tensor] | None:
    """(features [N, 2048] float64, posteriors [N, 1000]) of ``part``, or None when ``folder``
    holds none made for ``expected``."""
    path = folder / f"{part}.npz"
    if not path.is_file():
        return None
    with np.load(path) as f:
        if json.loads(str(f["key"])) != expected:
            return None
        return f["features"].astype(np.float64), torch.from_numpy(f["posteriors"])
