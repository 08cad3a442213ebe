"""The one place a device is picked, for training and for the single-process stages."""

from __future__ import annotations

import torch

from i2i.errors import I2IError


def pick_device(kind: str, local_rank: int = 0) -> torch.device:
    """``auto | cpu | cuda`` -> CUDA (this process's GPU under torchrun) when asked for or
    available, else the CPU. ``cuda`` where there is none is an error, not a silent CPU run."""
    if kind == "cuda" and not torch.cuda.is_available():
        raise I2IError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if kind != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
