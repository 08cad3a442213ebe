"""Inception-v3 (Szegedy et al. 2016) as a metric network: 2048-d pool features for FID and KID,
classifier posteriors for IS and CIS, in one of two variants (``evaluate.inception``):

- ``fid``: the TensorFlow Inception graph that FID was defined with (Heusel et al. 2017,
  ``pt_inception-2015-12-05``, 1008 classes), as pytorch-fid, torch-fidelity and clean-fid
  port it. Its scores can stand beside published FIDs. It differs from torchvision's network in
  three pooling details: the average pools inside the Mixed_5*, Mixed_6* and Mixed_7b blocks
  leave the zero padding out of each average (TensorFlow's behaviour), and Mixed_7c pools its
  pool branch with a max instead of an average.
- ``torchvision``: torchvision's ImageNet Inception-v3 (``inception_v3_google``, 1000 classes);
  comparable between runs of this project, not digit for digit with papers.

Images in [-1, 1] are what both networks take (torchvision's ``transform_input`` only converts
ImageNet-normalised inputs to that range; the FID graph maps [0, 255] to it), resized
bilinearly to 299 x 299. ``pretrained=False`` builds a random network from the caller's seed
(offline; the scores are then uncalibrated).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.inception import InceptionA, InceptionC, InceptionE

from i2i import weights

SIZE = 299
WEIGHT_FILE = {"fid": "inception_fid", "torchvision": "inception_v3"}  # i2i.weights names


def _tf_average(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 average pool: the padding is not counted in the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _FidA(InceptionA):
    """torchvision's InceptionA (same parameters) with TensorFlow's average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_average(x))], 1)


class _FidC(InceptionC):
    """torchvision's InceptionC (same parameters) with TensorFlow's average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = x
        for conv in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            dbl = conv(dbl)
        return torch.cat([self.branch1x1(x), b7, dbl, self.branch_pool(_tf_average(x))], 1)


class _FidE(InceptionE):
    """torchvision's InceptionE (same parameters) whose pool branch pools with ``pool``."""

    def __init__(self, in_channels: int, pool):
        super().__init__(in_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        dbl = torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1)
        return torch.cat([self.branch1x1(x), b3, dbl, self.branch_pool(self.pool(x))], 1)


def _fid_blocks(net: nn.Module) -> None:
    """Swap torchvision's mixed blocks for the FID graph's (same names, same parameters)."""
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        setattr(net, name, _FidA(getattr(net, name).branch1x1.conv.in_channels, pool_features))
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(net, name, _FidC(768, c7))
    net.Mixed_7b = _FidE(1280, _tf_average)
    net.Mixed_7c = _FidE(2048, _max)


def _calibrate_batch_norms(net: nn.Module) -> None:
    """Give a random network the batch-norm statistics of a fixed noise batch: with the default
    (mean 0, variance 1) ones, activations grow layer by layer until features reach 1e20 and
    FID overflows. Seeded by the caller's torch seed, so the random metric is repeatable."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    net.train()
    with torch.no_grad():
        coarse = (
            torch.rand(8, 3, SIZE // 8, SIZE // 8) * 2 - 1
        )  # smooth noise, like upsampled small images
        net(F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False))
    net.eval()


class InceptionV3(nn.Module):
    def __init__(self, pretrained: bool = True, kind: str = "torchvision"):
        super().__init__()
        from torchvision.models import inception_v3

        if kind not in WEIGHT_FILE:
            raise ValueError(f"Inception kind: one of {', '.join(WEIGHT_FILE)}, not {kind!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's note on init_weights
            # No auxiliary classifier: eval mode never runs it, so its weights are not loaded.
            net = inception_v3(
                weights=None,
                aux_logits=False,
                init_weights=not pretrained,
                transform_input=False,
                num_classes=1008 if kind == "fid" else 1000,
            )
        if kind == "fid":
            _fid_blocks(net)
        if pretrained:
            state = weights.load(WEIGHT_FILE[kind])
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("AuxLogits.")})
        else:
            _calibrate_batch_norms(net)
        self.fc = net.fc
        net.fc = nn.Identity()
        self.trunk = net
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "InceptionV3":
        return super().train(False)  # a fixed metric: never in training mode

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 3, H, W] in [-1, 1] -> (pool features [N, 2048], posteriors [N, K]), K 1008
        for the FID graph, 1000 for torchvision's."""
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        features = self.trunk(x)
        return features.float(), F.softmax(self.fc(features).float(), dim=1)
