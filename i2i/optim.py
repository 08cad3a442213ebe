"""Adam for the generators and for the discriminators, and the learning-rate schedules.

Schedules are per iteration: ``linear`` holds the rate for ``decay_start`` of the run, then
decays it linearly to zero at the last iteration (CycleGAN's n_epochs / n_epochs_decay);
``step`` multiplies it by ``gamma`` every ``step_size`` iterations (MUNIT); ``cosine`` follows
a half cosine to zero; ``constant`` keeps it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from i2i.config import TrainConfig


def adam(module: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over ``module``'s parameters (PyTorch's default implementation)."""
    return torch.optim.Adam(
        module.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )


def lr_factor(cfg: TrainConfig, iteration: int) -> float:
    """The multiplier of ``train.lr`` at ``iteration`` (0-based)."""
    total = cfg.iterations
    if cfg.schedule == "linear":
        start = int(cfg.decay_start * total)
        return 1.0 if iteration < start else max(0.0, (total - iteration) / max(1, total - start))
    if cfg.schedule == "step":
        return cfg.gamma ** (iteration // cfg.step_size)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    return 1.0


def scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))
