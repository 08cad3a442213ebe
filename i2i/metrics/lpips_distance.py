"""LPIPS distance (Zhang et al. 2018) through the ``lpips`` package, and MUNIT's diversity protocol.

The package ships its calibrated linear layers; the backbone (AlexNet, VGG16 or SqueezeNet 1.1)
is torchvision's ImageNet network, whose convolutions (``features``) this module loads from the
weights cache (``i2i.weights``) into the package's slices of them. ``pretrained=False`` keeps a
random backbone instead, from the caller's torch seed (offline, uncalibrated).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from i2i import weights


class LpipsDistance(nn.Module):
    def __init__(self, net: str = "alex", pretrained: bool = True):
        super().__init__()
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notes about lpips' calls
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if pretrained:
            # lpips splits torchvision's `features` into slices that keep the layer indices as
            # names: slice2.3.squeeze.weight is features.3.squeeze.weight.
            features = weights.load(weights.LPIPS_BACKBONE[net], "features.")
            backbone = self.model.net
            backbone.load_state_dict(
                {k: features[k.split(".", 1)[1]] for k in backbone.state_dict()}
            )
        self.model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LpipsDistance":
        return super().train(False)  # a fixed metric: never in training mode

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances [N] between image batches [N, 3, H, W] in [-1, 1]."""
        return self.model(x, y).flatten()


def pair_diversity(distance: LpipsDistance, outputs: torch.Tensor) -> float:
    """MUNIT's LPIPS diversity: ``outputs`` [N, 2P, 3, H, W] holds P pairs of outputs per input
    (outputs 2p and 2p+1 form pair p); the score is the mean distance over all N x P pairs."""
    n, k = outputs.shape[:2]
    if k % 2:
        raise ValueError(f"expected an even number of outputs per input (pairs), got {k}")
    pairs = outputs.view(n, k // 2, 2, *outputs.shape[2:])
    return float(distance(pairs[:, :, 0].flatten(0, 1), pairs[:, :, 1].flatten(0, 1)).mean())
