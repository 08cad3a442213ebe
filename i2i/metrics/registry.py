"""Every metric, registered by name: ``evaluate.metrics`` picks from :data:`METRICS`.

A metric maps one direction's :class:`~i2i.metrics.context.DirectionContext` to named values;
the evaluate stage stores value ``v`` of metric key ``k`` for direction ``ab`` as
``metric/k/ab``, or as ``uncalibrated/k/ab`` when a backbone the metric depends on
(``i2i.weights.metric_backbones``) was random. A metric that does not apply raises ``Skip``
with the reason. The protocols
follow MUNIT (Huang et al. 2018, Sec. 5.1) with the counts in ``evaluate.*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from i2i.config import METRIC_NAMES
from i2i.metrics import estimators
from i2i.metrics.context import DirectionContext, Skip
from i2i.metrics.lpips_distance import pair_diversity
from i2i.metrics.shapes import content_iou as shapes_content_iou


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[DirectionContext], dict[str, float]]


METRICS: dict[str, Metric] = {}


def register(name: str):
    def add(
        fn: Callable[[DirectionContext], dict[str, float]],
    ) -> Callable[[DirectionContext], dict[str, float]]:
        METRICS[name] = Metric(name, fn)
        return fn

    return add


def _classifier_accuracy(ctx: DirectionContext, kind: str) -> dict[str, float]:
    if kind != "domain":
        return {}
    return {"classifier_accuracy": ctx.networks.domain_classifier(ctx.direction[1]).accuracy}


@register("lpips_diversity")
def lpips_diversity(ctx: DirectionContext) -> dict[str, float]:
    """Mean LPIPS between two outputs of one input under two random styles (lpips_inputs x
    lpips_pairs pairs), and the same over random pairs of distinct real target images."""
    cfg = ctx.cfg
    outputs = ctx.outputs(cfg.lpips_inputs, 2 * cfg.lpips_pairs)  # [N, 2P or 1, S, S, 3]
    if outputs.shape[1] == 1:
        fake = 0.0  # one output per input: every pair is an image with itself, LPIPS(x, x) = 0
    else:
        x = torch.from_numpy(outputs).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1)
        fake = _pairs_in_batches(ctx, x)
    real = ctx.images(ctx.target)
    n_pairs = min(cfg.lpips_inputs, len(ctx.source)) * cfg.lpips_pairs
    if len(real) < 2:
        raise Skip(f"{ctx.target.folder}: LPIPS of real pairs needs at least two images")
    g = ctx.rng("lpips_real")
    first = torch.randint(len(real), (n_pairs,), generator=g)
    second = (first + torch.randint(1, len(real), (n_pairs,), generator=g)) % len(
        real
    )  # never the same image
    pairs = np.stack([real[first.numpy()], real[second.numpy()]], axis=1)  # [n_pairs, 2, S, S, 3]
    x = torch.from_numpy(pairs).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1)
    return {
        "lpips_diversity": fake,
        "lpips_diversity_real": _pairs_in_batches(ctx, x[:, None].flatten(1, 2)),
    }


def _pairs_in_batches(ctx: DirectionContext, x: torch.Tensor) -> float:
    """Mean pair distance of ``x`` [N, 2P, 3, S, S] (pairs 2p, 2p + 1), in device batches."""
    per = max(1, ctx.cfg.batch_size // x.shape[1])
    means = [
        pair_diversity(ctx.networks.lpips, x[i : i + per].to(ctx.device)) * len(x[i : i + per])
        for i in range(0, len(x), per)
    ]
    return float(sum(means) / len(x))


@register("inception_score")
def inception_score(ctx: DirectionContext) -> dict[str, float]:
    """IS of all cis_inputs x cis_samples outputs, and of the real target test images."""
    kind = ctx.cfg.classifier
    probs = ctx.posteriors(kind, ctx.cfg.cis_inputs, ctx.cfg.cis_samples)
    real = ctx.classify_real_target(kind)
    return {
        "inception_score": estimators.inception_score(probs.flatten(0, 1)),
        "inception_score_real": estimators.inception_score(real),
        **_classifier_accuracy(ctx, kind),
    }


@register("cis")
def cis(ctx: DirectionContext) -> dict[str, float]:
    """Conditional IS over cis_inputs inputs x cis_samples outputs each (1 for a deterministic
    model)."""
    kind = ctx.cfg.classifier
    probs = ctx.posteriors(kind, ctx.cfg.cis_inputs, ctx.cfg.cis_samples)
    return {"cis": estimators.conditional_inception_score(probs), **_classifier_accuracy(ctx, kind)}


@register("mode_coverage")
def mode_coverage(ctx: DirectionContext) -> dict[str, float]:
    """Mean number of the target's K classes that the cis_samples outputs of one input reach,
    by the domain classifier (whatever evaluate.classifier says: ImageNet classes are not modes)."""
    probs = ctx.posteriors("domain", ctx.cfg.cis_inputs, ctx.cfg.cis_samples)
    return {
        "mode_coverage": estimators.mode_coverage(probs),
        "num_modes": float(probs.shape[-1]),
        **_classifier_accuracy(ctx, "domain"),
    }


@register("fid")
def fid(ctx: DirectionContext) -> dict[str, float]:
    """Frechet distance of Inception pool features: one output per source test image against
    the target's real test images (biased upwards for small sets; KID is not)."""
    fake, real = ctx.fid_features
    return {"fid": estimators.frechet_distance(fake, real)}


@register("kid")
def kid(ctx: DirectionContext) -> dict[str, float]:
    """Unbiased KID on the same features as FID (mean and standard deviation over 100 subsets)."""
    fake, real = ctx.fid_features
    if min(len(fake), len(real)) < 2:
        raise Skip("KID needs at least two images per set")
    mean, std = estimators.kernel_distance(
        fake, real, subsets=100, subset_size=1000, seed=ctx.cfg.seed
    )
    return {"kid": mean, "kid_std": std}


@register("content_iou")
def content_iou(ctx: DirectionContext) -> dict[str, float]:
    """IoU of each output's filled foreground with its input's geometry mask (synthetic data)."""
    masks = ctx.masks()
    return {"content_iou": shapes_content_iou(ctx.outputs(len(masks), 1)[:, 0], masks)}


if set(METRICS) != set(METRIC_NAMES):
    raise RuntimeError(
        f"metric registry {sorted(METRICS)} and config.METRIC_NAMES {sorted(METRIC_NAMES)} differ"
    )
