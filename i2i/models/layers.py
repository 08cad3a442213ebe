"""Building blocks shared by the CycleGAN and MUNIT networks: norms, activations, padding, init,
MUNIT's LayerNorm and adaptive instance norm, and the input-size check every network runs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from i2i.errors import I2IError


class InputSizeError(I2IError, ValueError):
    """A network was given an image size its architecture cannot process."""


def check_image(
    x: torch.Tensor, net: str, multiple: int = 1, minimum: int = 1, channels: int | None = None
) -> None:
    """Shape assertion at a network's boundary: [N, C, H, W] with H, W acceptable."""
    if x.dim() != 4:
        raise InputSizeError(
            f"{net}: expected a batch of images [N, C, H, W], got shape {tuple(x.shape)}"
        )
    _, c, h, w = x.shape
    if channels is not None and c != channels:
        raise InputSizeError(
            f"{net}: expected {channels} channels, got {c} (shape {tuple(x.shape)})"
        )
    if h % multiple or w % multiple or h < minimum or w < minimum:
        need = [f"multiples of {multiple}"] if multiple > 1 else []
        need += [f"at least {minimum}"] if minimum > 1 else []
        lo = max(multiple, minimum)
        lo += (-lo) % multiple
        raise InputSizeError(
            f"{net}: cannot process {h}x{w} images; height and width must be {' and '.join(need)} "
            f"(e.g. {lo}, {lo + multiple}, ...); set data.crop_size accordingly"
        )


def norm_2d(kind: str, channels: int) -> nn.Module:
    """CycleGAN's norms: instance (no affine, no running stats, as the reference), batch, none."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def activation(kind: str) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
        "tanh": nn.Tanh,
        "none": nn.Identity,
    }[kind]()


def pad_2d(kind: str, amount: int) -> nn.Module:
    return {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}[
        kind
    ](amount)


def init_weights(
    module: nn.Module, kind: str, gain: float = 0.02, matrix_gain: float | None = None
) -> None:
    """Initialise conv and linear weights (biases to zero) and batch-norm scales, as both
    references.

    normal: N(0, gain); xavier: xavier_normal(matrix_gain); kaiming: kaiming_normal(a=0, fan_in);
    orthogonal: orthogonal(matrix_gain). ``matrix_gain`` defaults to ``gain`` (CycleGAN's
    init_weights uses init_gain for all three); MUNIT's weights_init uses sqrt(2) for xavier and
    orthogonal. BatchNorm weights get N(1, gain), as in the CycleGAN code.
    """
    if next(module.parameters(), torch.empty(0)).is_meta:
        return  # shapes without storage (empty_generators): the weights come from a file
    matrix_gain = gain if matrix_gain is None else matrix_gain
    init: Callable[[torch.Tensor], object] = {
        "normal": lambda w: nn.init.normal_(w, 0.0, gain),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=matrix_gain),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=matrix_gain),
    }[kind]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class LayerNorm(nn.Module):
    """MUNIT's layer norm: statistics over (C, H, W) of each sample, a scale and shift per channel.

    Unlike nn.LayerNorm it divides by (std + eps) with the unbiased std, and its scale starts
    uniform in [0, 1), as in the reference.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(channels).uniform_())
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)  # [N, C*H*W]
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1).view(-1, 1, 1, 1)
        x = (x - mean) / (std + self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def adaptive_instance_norm(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """AdaIN (Huang & Belongie 2017; MUNIT eq. 7): instance-normalise, then scale and shift per
    sample and channel. ``mean``/``std`` are [N, C], produced by MUNIT's MLP from a style code.
    """
    x = F.instance_norm(x, eps=eps)
    return x * std[:, :, None, None] + mean[:, :, None, None]
