"""The metric registry on a direction context: oracle translators with known scores, the MUNIT
protocol's sample counts, skipping what does not apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from i2i.config import params_from_dict
from i2i.data.loader import DomainImages
from i2i.metrics import classifier
from i2i.metrics.context import DirectionContext, MetricNetworks, Skip
from i2i.metrics.registry import METRICS
from i2i.models import Networks, build_networks
from tests.conftest import default_params, tiny_params
from tests.train_helpers import prepare, tiny_train_params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    params = tiny_params()
    params["data"]["shapes"].update(num_train=48, num_test=12)
    root = tmp_path_factory.mktemp("evaluate")
    data = prepare(root, params)
    classifier.classify(
        data, root / "classifiers", 32, steps=40, seed=0, device=torch.device("cpu")
    )
    return data


def _cfg(**evaluate):
    p = tiny_train_params()
    p["evaluate"].update(evaluate)
    return params_from_dict(p).evaluate


def _context(
    nets: Networks, prepared: Path, direction: str, source: str, target: str, **evaluate
) -> DirectionContext:
    cfg = _cfg(**evaluate)
    networks = MetricNetworks(cfg, prepared.parent.parent / "classifiers", torch.device("cpu"))
    return DirectionContext(
        nets,
        direction,
        DomainImages(prepared / source),
        DomainImages(prepared / target),
        32,
        cfg,
        networks,
    )


def identity() -> Networks:
    return Networks("cyclegan", {"ab": nn.Identity(), "ba": nn.Identity()}, {})


def test_the_default_params_score_every_registered_metric_and_only_fid_and_kid_fall():
    assert set(METRICS) == set(default_params()["evaluate"]["metrics"])
    assert [n for n, m in METRICS.items() if m.lower_is_better] == ["fid", "kid"]


def test_translator_that_returns_real_target_images_scores_like_the_real_data(prepared: Path):
    """Identity on B->B: the outputs are the real test images, so FID is 0, IS equals the real
    IS, and a deterministic model has no diversity and CIS 1. (KID's unbiased estimate is not 0
    for a set against itself, only for independent samples: see test_estimators.)"""
    ctx = _context(identity(), prepared, "ab", "test_b", "test_b", cis_inputs=12, cis_samples=5)
    assert METRICS["fid"].compute(ctx)["fid"] == pytest.approx(0.0, abs=1e-6)
    blank = _context(
        Networks("cyclegan", {"ab": _Constant(1.0)}, {}), prepared, "ab", "test_b", "test_b"
    )
    assert METRICS["fid"].compute(blank)["fid"] > 1.0
    assert METRICS["kid"].compute(ctx)["kid"] < METRICS["kid"].compute(blank)["kid"]
    is_ = METRICS["inception_score"].compute(ctx)
    assert (
        is_["inception_score"] == pytest.approx(is_["inception_score_real"], rel=1e-9)
        and is_["inception_score"] > 1.5
    )
    assert METRICS["cis"].compute(ctx)["cis"] == pytest.approx(1.0)
    assert METRICS["mode_coverage"].compute(ctx)["mode_coverage"] == 1.0
    lp = METRICS["lpips_diversity"].compute(ctx)
    assert lp["lpips_diversity"] == 0.0 and lp["lpips_diversity_real"] > 0
    assert ctx.outputs(12, 5).shape == (12, 1, 32, 32, 3)  # deterministic: one output per input


def test_content_iou_of_a_translator_that_keeps_the_geometry_is_one_and_of_a_blank_one_zero(
    prepared: Path,
):
    ctx = _context(identity(), prepared, "ab", "test_a", "test_b")
    assert METRICS["content_iou"].compute(ctx)["content_iou"] == pytest.approx(1.0)
    blank = Networks("cyclegan", {"ab": _Constant(1.0), "ba": _Constant(1.0)}, {})
    assert (
        METRICS["content_iou"].compute(_context(blank, prepared, "ab", "test_a", "test_b"))[
            "content_iou"
        ]
        == 0.0
    )


class _Constant(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


class _StyleBlind(nn.Module):
    """A MUNIT generator whose decoder ignores the style code (``tint`` > 0: it does not; the
    style's mean shifts the colours), so the protocol's general path, several outputs per input
    with their distances really computed, must find no diversity."""

    style_dim = 8

    def __init__(self, tint: float = 0.0):
        super().__init__()
        self.tint = tint

    def encode(self, x: torch.Tensor):
        return x, None

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return (content + self.tint * style.mean(1, keepdim=True)).clamp(-1, 1)

    def random_style(self, n: int, device=None, generator=None) -> torch.Tensor:
        return torch.randn(n, self.style_dim, 1, 1, generator=generator).to(device or "cpu")


def test_a_generator_that_ignores_its_style_measures_no_diversity_through_the_general_path(
    prepared: Path,
):
    """B -> B, each input's outputs under 5 styles: all equal, so LPIPS diversity is exactly 0,
    CIS 1 and one mode per input, measured, not assumed from the model's name."""
    protocol = dict(lpips_inputs=6, lpips_pairs=3, cis_inputs=6, cis_samples=5)
    blind = Networks("munit", {"a": _StyleBlind(), "b": _StyleBlind()}, {})
    ctx = _context(blind, prepared, "ab", "test_b", "test_b", **protocol)
    assert ctx.outputs(6, 5).shape == (6, 5, 32, 32, 3)  # several outputs per input
    assert METRICS["lpips_diversity"].compute(ctx)["lpips_diversity"] == 0.0
    assert METRICS["cis"].compute(ctx)["cis"] == pytest.approx(1.0, abs=1e-9)
    assert METRICS["mode_coverage"].compute(ctx)["mode_coverage"] == 1.0
    tinted = Networks("munit", {"a": _StyleBlind(), "b": _StyleBlind(tint=0.5)}, {})
    ctx = _context(tinted, prepared, "ab", "test_b", "test_b", **protocol)
    assert METRICS["lpips_diversity"].compute(ctx)["lpips_diversity"] > 0
    assert METRICS["cis"].compute(ctx)["cis"] > 1.0


def test_munit_outputs_follow_the_protocol_counts_and_are_repeatable(prepared: Path):
    torch.manual_seed(0)
    nets = build_networks(
        params_from_dict(tiny_train_params("munit")).model, discriminators=False
    ).eval()
    ctx = _context(
        nets,
        prepared,
        "ab",
        "test_a",
        "test_b",
        lpips_inputs=3,
        lpips_pairs=2,
        cis_inputs=4,
        cis_samples=6,
    )
    assert ctx.outputs(3, 4).shape == (3, 4, 32, 32, 3)
    assert ctx.posteriors("domain", 4, 6).shape == (4, 6, 4)
    again = _context(nets, prepared, "ab", "test_a", "test_b")
    assert np.array_equal(ctx.outputs(3, 4), again.outputs(3, 4))
    assert (
        METRICS["lpips_diversity"].compute(ctx)["lpips_diversity"] > 0
    )  # styles change the output
    # Coverage, counted here by hand: the distinct classes among each input's outputs.
    labels = ctx.posteriors("domain", 4, 6).argmax(-1).tolist()
    expected = sum(len(set(row)) for row in labels) / len(labels)
    assert METRICS["mode_coverage"].compute(ctx)["mode_coverage"] == pytest.approx(expected)


def test_metrics_needing_target_classes_or_masks_skip_with_the_reason(prepared: Path):
    ctx = _context(identity(), prepared, "ba", "test_b", "test_a")
    for name in ("inception_score", "cis", "mode_coverage"):
        with pytest.raises(Skip, match="domain A has no class labels"):
            METRICS[name].compute(ctx)
    assert not ctx._outputs  # skipped before generating 100 x 100 translations for nothing
    # With the ImageNet classifier IS and CIS apply to any target domain.
    inception = _context(
        identity(),
        prepared,
        "ba",
        "test_b",
        "test_a",
        classifier="inception",
        cis_inputs=2,
        cis_samples=2,
    )
    assert METRICS["cis"].compute(inception)["cis"] == pytest.approx(1.0)


def test_translating_under_many_styles_in_batches_matches_translating_style_by_style():
    torch.manual_seed(0)
    nets = build_networks(
        params_from_dict(tiny_train_params("munit")).model, discriminators=False
    ).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    styles = torch.randn(3, 5, nets.G["b"].style_dim, 1, 1)
    with torch.no_grad():
        out = nets.translate(x, "ab", styles, batch_size=4)
        expected = torch.cat([nets.translate(x, "ab", styles[:, k : k + 1]) for k in range(5)], 1)
        shared = nets.translate(x, "ab", styles[0])  # [M, ...]: the same codes for every input
    assert torch.allclose(shared[0], expected[0], atol=1e-5) and shared.shape == out.shape
    assert out.shape == (3, 5, 3, 32, 32)
    assert torch.allclose(out, expected, atol=1e-5)


def test_scores_are_the_same_in_every_run_also_with_random_backbones(prepared: Path):
    """Each evaluation builds its metric networks afresh; pretrained=false must still give every
    run the same random backbones, or runs could not be compared."""
    blank = Networks("cyclegan", {"ab": _Constant(0.5)}, {})
    first = _context(blank, prepared, "ab", "test_a", "test_b")
    second = _context(blank, prepared, "ab", "test_a", "test_b")
    assert METRICS["lpips_diversity"].compute(first) == METRICS["lpips_diversity"].compute(second)
    assert METRICS["fid"].compute(first) == METRICS["fid"].compute(second)
