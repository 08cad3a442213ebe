"""VGG16 features for MUNIT's domain-invariant perceptual loss (Huang et al. 2018, Sec. 5.1).

The loss compares instance-normalised relu5_3 features (as MUNIT's Vgg16), so it keeps content
and discards the domain-specific feature statistics. The reference uses the Caffe VGG16 with BGR
inputs; this uses torchvision's ImageNet VGG16 with its own RGB normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from i2i import weights

RELU5_3 = 30  # torchvision vgg16.features[:30] ends with relu5_3


class PerceptualLoss(nn.Module):
    def __init__(self, pretrained: bool):
        super().__init__()
        from torchvision.models import vgg16

        vgg = vgg16(weights=None)
        if pretrained:  # else random, from the caller's seed (i2i.weights says so once)
            vgg.features.load_state_dict(weights.load("vgg16", "features."))
        self.features = vgg.features[:RELU5_3].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # a fixed feature extractor: never in training mode

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet-normalised RGB
        return F.instance_norm(self.features(x))

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.features_of(image), self.features_of(target))
