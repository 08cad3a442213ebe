"""Inception-v3 (Szegedy et al. 2016) as a metric network: 2048-d pool features for FID and KID,
ImageNet posteriors for IS and CIS.

Uses torchvision's ImageNet weights (``inception_v3_google``) from the weights cache, so scores
are comparable between runs of this project but not digit for digit with papers that use the
TensorFlow FID Inception graph. Images in [-1, 1] are what this network was trained on (the
``transform_input`` step of torchvision only converts ImageNet-normalised inputs to that range),
and are resized bilinearly to 299 x 299. ``pretrained=False`` builds a random network
(offline; the scores are then uncalibrated).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from i2i import weights

SIZE = 299


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
        coarse = torch.rand(8, 3, SIZE // 8, SIZE // 8) * 2 - 1  # smooth noise, like upsampled small images
        net(F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False))
    net.eval()


class InceptionV3(nn.Module):
    def __init__(self, pretrained: bool = True):
        super().__init__()
        from torchvision.models import inception_v3

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's note on init_weights
            # No auxiliary classifier: eval mode never runs it, so its weights are not loaded.
            net = inception_v3(weights=None, aux_logits=False, init_weights=not pretrained,
                               transform_input=False)
        if pretrained:
            state = weights.load("inception_v3")
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
        """Images [N, 3, H, W] in [-1, 1] -> (pool features [N, 2048], posteriors [N, 1000])."""
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        features = self.trunk(x)
        return features.float(), F.softmax(self.fc(features).float(), dim=1)
