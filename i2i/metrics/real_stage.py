"""The real_features stage: the real test images' Inception outputs, written once in the format
of :mod:`i2i.metrics.real` for every evaluation to read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2i.backbones import for_real_features
from i2i.config import EvaluateConfig
from i2i.data.loader import DomainImages
from i2i.io import atomic_dir, write_json
from i2i.metrics.context import MetricNetworks
from i2i.metrics.real import PARTS, key


def real_features(
    data: Path,
    out: Path,
    crop_size: int,
    cfg: EvaluateConfig,
    backbones: dict[str, str],
    device: torch.device,
) -> dict[str, Any]:
    """The stage: write ``out/test_{a,b}.npz`` (when evaluate.metrics use Inception) and
    ``out/info.json``; return the info."""
    needed = bool(for_real_features(cfg))
    expected = key(data, crop_size, backbones, cfg)
    networks = MetricNetworks(cfg, Path(), device, backbones)  # computes, reads nothing
    info: dict[str, Any] = {"key": expected, "images": {}}
    with atomic_dir(out) as tmp:
        for part in PARTS if needed else ():
            features, probs = networks.real_inception(DomainImages(data / part), crop_size)
            # Stored as the float32 the network gives: reading them back is exact.
            np.savez(
                tmp / f"{part}.npz",
                features=features.astype(np.float32),
                posteriors=probs.numpy(),
                key=json.dumps(expected),
            )
            info["images"][part] = len(features)
        write_json(tmp / "info.json", info)
    return info
