"""The device of the single-process stages (classify, sample, evaluate)."""
from __future__ import annotations

import torch


def inference_device(kind: str) -> torch.device:
    """``train.device`` (auto | cpu | cuda) -> CUDA when asked for or available, else the CPU."""
    return torch.device("cuda" if kind != "cpu" and torch.cuda.is_available() else "cpu")
