"""Every metric, registered by name: ``evaluate.metrics`` picks from :data:`METRICS`. A
metric's registration holds all that is known about it: its code, whether lower is better, the
values it reports beside its score (never ranked), and the pretrained backbones its value
depends on.

A metric maps one direction's :class:`~i2i.metrics.context.DirectionContext` to named values;
a score that can be computed again on resampled test sets is a :class:`Resampled`, and the
evaluate stage stores its bootstrap interval over the test inputs beside it;
the evaluate stage stores value ``v`` of metric key ``k`` for direction ``ab`` as
``metric/k/ab``, or as ``uncalibrated/k/ab`` when a backbone the metric depends on
(``i2i.backbones.metric_backbones``) was random. A metric that does not apply raises ``Skip``
with the reason. The protocols
follow MUNIT (Huang et al. 2018, Sec. 5.1) with the counts in ``evaluate.*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from i2i.config import EvaluateConfig, ParamsError

if TYPE_CHECKING:  # the metrics' code imports torch when it runs: listing and checking do not
    import torch

    from i2i.metrics.context import DirectionContext


class Resampled(float):
    """A score (a float, wherever a float is expected) that also knows how to compute itself on
    other draws of its test sets: ``statistic(*indices)`` takes one index array per set
    (``sizes``: the test inputs, and the real target images when the score compares with them),
    for the bootstrap interval the evaluate stage stores (``i2i.statistics``)."""

    statistic: Callable[..., float]
    sizes: tuple[int, ...]

    def __new__(cls, value: float, statistic: Callable[..., float], sizes: tuple[int, ...]):
        score = super().__new__(cls, value)
        score.statistic, score.sizes = statistic, tuple(sizes)
        return score


def _no_backbones(ev: EvaluateConfig) -> list[str]:
    return []


@dataclass(frozen=True)
class Metric:
    """``compute`` maps a direction's context to the metric's values by key: its score under
    the metric's name, and the ``references`` beside it (the real images' value, the
    classifier's accuracy, ...), which are read alongside the score and never ranked.
    ``backbones(evaluate)``: the weight files (:mod:`i2i.weights`) the score depends on."""

    name: str
    compute: Callable[[DirectionContext], dict[str, float]]
    lower_is_better: bool = False
    references: tuple[str, ...] = ()
    backbones: Callable[[EvaluateConfig], list[str]] = _no_backbones


METRICS: dict[str, Metric] = {}


def register(
    name: str,
    lower_is_better: bool = False,
    references: tuple[str, ...] = (),
    backbones: Callable[[EvaluateConfig], list[str]] = _no_backbones,
):
    def add(
        fn: Callable[[DirectionContext], dict[str, float]],
    ) -> Callable[[DirectionContext], dict[str, float]]:
        METRICS[name] = Metric(name, fn, lower_is_better, references, backbones)
        return fn

    return add


def lower_is_better(key: str) -> bool:
    """Whether a value key (``fid``, ``content_iou``) is a score where lower is better."""
    return key in METRICS and METRICS[key].lower_is_better


def is_reference(key: str) -> bool:
    """Whether a value key is reported beside a score to read it by (never ranked)."""
    return any(key in m.references for m in METRICS.values())


def check_names(ev: EvaluateConfig, source: str = "<params>") -> None:
    """Refuse an ``evaluate.metrics`` entry that names no registered metric."""
    for name in ev.metrics:
        if name not in METRICS:
            raise ParamsError(
                f"{source}: evaluate.metrics = {name!r}: unknown metric; expected any of "
                f"{', '.join(METRICS)}"
            )


def _lpips(ev: EvaluateConfig) -> list[str]:
    from i2i.weights import LPIPS_BACKBONE

    return [LPIPS_BACKBONE[ev.lpips_net]]


def _inception(ev: EvaluateConfig) -> list[str]:
    from i2i.weights import inception

    return [inception(ev)]


def _inception_classifier(ev: EvaluateConfig) -> list[str]:
    return _inception(ev) if ev.classifier == "inception" else []


def _classifier_accuracy(ctx: DirectionContext, kind: str) -> dict[str, float]:
    if kind != "domain":
        return {}
    return {"classifier_accuracy": ctx.networks.domain_classifier(ctx.direction[1]).accuracy}


@register("lpips_diversity", references=("lpips_diversity_real",), backbones=_lpips)
def lpips_diversity(ctx: DirectionContext) -> dict[str, float]:
    """Mean LPIPS between two outputs of one input under two random styles (lpips_inputs x
    lpips_pairs pairs), and the same over random pairs of distinct real target images."""
    import torch

    from i2i.metrics.context import Skip

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
    from i2i.metrics.lpips_distance import pair_diversity

    per = max(1, ctx.cfg.batch_size // x.shape[1])
    means = [
        pair_diversity(ctx.networks.lpips, x[i : i + per].to(ctx.device)) * len(x[i : i + per])
        for i in range(0, len(x), per)
    ]
    return float(sum(means) / len(x))


@register(
    "inception_score",
    references=("inception_score_real", "classifier_accuracy"),
    backbones=_inception_classifier,
)
def inception_score(ctx: DirectionContext) -> dict[str, float]:
    """IS of all cis_inputs x cis_samples outputs, and of the real target test images."""
    import torch

    from i2i.metrics import estimators

    kind = ctx.cfg.classifier
    probs = ctx.posteriors(kind, ctx.cfg.cis_inputs, ctx.cfg.cis_samples)
    real = ctx.classify_real_target(kind)

    def score(inputs: np.ndarray) -> float:
        return estimators.inception_score(probs[torch.from_numpy(inputs)].flatten(0, 1))

    return {
        "inception_score": Resampled(score(np.arange(len(probs))), score, (len(probs),)),
        "inception_score_real": estimators.inception_score(real),
        **_classifier_accuracy(ctx, kind),
    }


@register("cis", references=("classifier_accuracy",), backbones=_inception_classifier)
def cis(ctx: DirectionContext) -> dict[str, float]:
    """Conditional IS over cis_inputs inputs x cis_samples outputs each (1 for a deterministic
    model)."""
    import torch

    from i2i.metrics import estimators

    kind = ctx.cfg.classifier
    probs = ctx.posteriors(kind, ctx.cfg.cis_inputs, ctx.cfg.cis_samples)

    def score(inputs: np.ndarray) -> float:
        return estimators.conditional_inception_score(probs[torch.from_numpy(inputs)])

    value = Resampled(score(np.arange(len(probs))), score, (len(probs),))
    return {"cis": value, **_classifier_accuracy(ctx, kind)}


@register("mode_coverage", references=("num_modes", "classifier_accuracy"))
def mode_coverage(ctx: DirectionContext) -> dict[str, float]:
    """Mean number of the target's K classes that the cis_samples outputs of one input reach,
    by the domain classifier (whatever evaluate.classifier says: ImageNet classes are not modes)."""
    import torch

    from i2i.metrics import estimators

    probs = ctx.posteriors("domain", ctx.cfg.cis_inputs, ctx.cfg.cis_samples)

    def score(inputs: np.ndarray) -> float:
        return estimators.mode_coverage(probs[torch.from_numpy(inputs)])

    return {
        "mode_coverage": Resampled(score(np.arange(len(probs))), score, (len(probs),)),
        "num_modes": float(probs.shape[-1]),
        **_classifier_accuracy(ctx, "domain"),
    }


@register("fid", lower_is_better=True, backbones=_inception)
def fid(ctx: DirectionContext) -> dict[str, float]:
    """Frechet distance of Inception pool features: one output per source test image against
    the target's real test images (biased upwards for small sets; KID is not)."""
    from i2i.metrics import estimators

    fake, real = ctx.fid_features
    # No bootstrap interval: FID's bias grows as the number of distinct images falls, so every
    # draw with replacement (about 63 % distinct) scores far above the estimate itself. KID,
    # unbiased, carries the interval of the two feature sets.
    return {"fid": estimators.frechet_distance(fake, real)}


@register("kid", lower_is_better=True, backbones=_inception)
def kid(ctx: DirectionContext) -> dict[str, float]:
    """Unbiased KID on the same features as FID: the mean over 100 subsets of 1000, or of the
    whole sets when they are smaller (then every subset is the whole set, and the spread over
    subsets says nothing: the bootstrap interval is the uncertainty)."""
    from i2i.metrics import estimators
    from i2i.metrics.context import Skip

    fake, real = ctx.fid_features
    if min(len(fake), len(real)) < 2:
        raise Skip("KID needs at least two images per set")

    mean, _ = estimators.kernel_distance(
        fake, real, subsets=100, subset_size=1000, seed=ctx.cfg.seed
    )
    score = estimators.ResampledKernelDistance(fake, real)
    return {"kid": Resampled(mean, score, (len(fake), len(real)))}


@register("content_iou")
def content_iou(ctx: DirectionContext) -> dict[str, float]:
    """IoU of each output's filled foreground with its input's geometry mask (synthetic data)."""
    from i2i.metrics.shapes import content_ious

    masks = ctx.masks()
    ious = content_ious(ctx.outputs(len(masks), 1)[:, 0], masks)
    return {"content_iou": Resampled(float(ious.mean()), lambda i: ious[i].mean(), (len(ious),))}
