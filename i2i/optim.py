"""Adam for the generators and for the discriminators, the learning-rate schedules, and the
moving average of the generators' weights.

Schedules are per iteration: ``linear`` holds the rate for ``decay_start`` of the run, then
decays it linearly to zero at the last iteration (CycleGAN's n_epochs / n_epochs_decay);
``step`` multiplies it by ``gamma`` every ``step_size`` iterations (MUNIT); ``cosine`` follows
a half cosine to zero; ``constant`` keeps it.
"""

from __future__ import annotations

import copy
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


class WeightAverage:
    """An exponential moving average of a module's parameters (its buffers are copied), as
    StyleGAN keeps G_ema (Karras et al. 2020, training_loop.py): after each generator step,
    ema = beta * ema + (1 - beta) * weights, with beta = 0.5 ** (batch / half_life), so the
    weights of ``half_life`` images ago count half. During the first steps the half-life is at
    most ``rampup`` x the images seen so far, so the average does not drag the random
    initialisation along. Images count one domain's images per step, over every rank."""

    def __init__(self, module: nn.Module, half_life: float, rampup: float, batch: int):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.half_life, self.rampup, self.batch = half_life, rampup, batch

    def beta(self, images: int) -> float:
        """The decay after ``images`` images (per domain) have been trained on."""
        half_life = min(self.half_life, images * self.rampup) if self.rampup else self.half_life
        return 0.5 ** (self.batch / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, module: nn.Module, images: int) -> None:
        beta = self.beta(images)
        for average, p in zip(self.module.parameters(), module.parameters()):
            average.lerp_(p.detach(), 1 - beta)
        for average, b in zip(self.module.buffers(), module.buffers()):
            average.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
