"""LPIPS distance: zero on identical images, equal to the lpips package's, the pair protocol."""

from __future__ import annotations

import lpips
import pytest
import torch

from i2i.metrics.lpips_distance import LpipsDistance, pair_diversity
from i2i.weights import MissingWeightsError


@pytest.fixture(scope="module")
def distance() -> LpipsDistance:
    torch.manual_seed(0)
    return LpipsDistance("alex", pretrained=False)


def test_distance_of_an_image_to_itself_is_zero(distance):
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    assert torch.equal(distance(x, x), torch.zeros(3))


def test_distance_equals_the_lpips_package_on_the_same_backbone(distance):
    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    reference.net.load_state_dict(distance.model.net.state_dict())  # the same random backbone
    x, y = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = reference(x, y).flatten()
    assert torch.allclose(distance(x, y), expected, atol=1e-6)
    assert (distance(x, y) > 0).all()


def test_pair_diversity_averages_the_distance_of_each_pair(distance):
    torch.manual_seed(1)
    outputs = torch.rand(3, 4, 3, 32, 32) * 2 - 1  # 3 inputs x 2 pairs
    expected = torch.stack(
        [
            distance(outputs[i, 2 * p : 2 * p + 1], outputs[i, 2 * p + 1 : 2 * p + 2])
            for i in range(3)
            for p in range(2)
        ]
    ).mean()
    assert pair_diversity(distance, outputs) == pytest.approx(expected.item(), rel=1e-5)
    same = outputs[:, :1].expand(3, 4, 3, 32, 32)  # a deterministic model: no diversity
    assert pair_diversity(distance, same) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="even number"):
        pair_diversity(distance, outputs[:, :3])


def test_calibrated_backbone_missing_says_how_to_get_it():
    with pytest.raises(MissingWeightsError, match="i2i weights alexnet"):
        LpipsDistance("alex", pretrained=True)
