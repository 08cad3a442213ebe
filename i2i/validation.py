"""A validation split: training images held out so the test set is read once, at the end.

With ``train.validation`` > 0 (a count per domain, or below 1 a fraction), a seeded choice of
each domain's training images (``train.validation_seed``: the same for every ``train.seed``, so
the seeds of a configuration validate on one set) is left out of training. Every
``train.validation_every`` iterations, and at the last, the generators shown in the sample grids
(the moving average when there is one) translate them and are scored by
``train.validation_metric`` through the metric registry, as the evaluate stage scores the test
set. The curve goes to MLflow (``val/<metric>/<direction>`` and their mean ``val/<metric>``),
and the best iteration's generators travel in every checkpoint (so a resumed run, wherever its
checkpoint came from, knows its best so far) and are exported as ``models/generator_best.pt``.
Papers that report the best test score seen during training pick the model on the test set;
this picks it on data the test score never sees.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2i.config import Params
from i2i.data.loader import DomainImages
from i2i.errors import I2IError
from i2i.metrics.context import DirectionContext, MetricNetworks, Skip
from i2i.metrics.registry import METRICS, lower_is_better
from i2i.models import Networks


def split(n: int, size: float, seed: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices) of a part of ``n`` images, both sorted."""
    k = int(round(size * n)) if size < 1 else int(size)
    if not 1 <= k < n:
        raise I2IError(
            f"train.validation = {size:g} holds out {k} of domain {domain.upper()}'s {n} "
            f"training images; it must leave at least one for training and hold out at least "
            f"one (a count from 1 to {n - 1}, or a fraction)"
        )
    rng = np.random.default_rng([seed, ord(domain)])
    held = np.sort(rng.choice(n, k, replace=False))
    return np.setdiff1d(np.arange(n), held), held


class Validation:
    """The held-out images, their scores over training and the best iteration so far."""

    def __init__(self, params: Params, data: Path, device: torch.device):
        tp = params.train
        self.metric, self.every = tp.validation_metric, tp.validation_every
        self.lower_is_better = lower_is_better(self.metric)
        self.crop_size = params.data.crop_size
        # The metric protocol's counts are the evaluate section's; the seed (MUNIT's style codes)
        # is the split's, so the train stage depends on no evaluate key.
        self.cfg = dataclasses.replace(
            params.evaluate, seed=tp.validation_seed, batch_size=max(16, tp.batch_size)
        )
        self.networks = MetricNetworks(self.cfg, Path("/nonexistent"), device)
        self.train_indices: dict[str, np.ndarray] = {}
        self.held: dict[str, DomainImages] = {}
        for domain in "ab":
            images = DomainImages(data / f"train_{domain}")
            keep, held = split(len(images), tp.validation, tp.validation_seed, domain)
            self.train_indices[domain], self.held[domain] = keep, images.subset(held)
        # {"iteration": k, "score": v, "generators": their weights on the CPU}
        self.best: dict[str, Any] | None = None

    def due(self, done: int, last: bool) -> bool:
        return done % self.every == 0 or last

    def score(self, nets: Networks) -> dict[str, float]:
        """``val/<metric>/<direction>`` for both directions and their mean ``val/<metric>``,
        with the generators in eval mode (restored after); no global random state is drawn."""
        modes = [(m, m.training) for m in nets.G.modules()]
        nets.G.eval()
        try:
            values = {}
            for direction in nets.directions:
                source, target = self.held[direction[0]], self.held[direction[1]]
                ctx = DirectionContext(
                    nets, direction, source, target, self.crop_size, self.cfg, self.networks
                )
                try:
                    value = METRICS[self.metric].compute(ctx)[self.metric]
                except Skip as e:
                    raise I2IError(
                        f"train.validation_metric = {self.metric!r} cannot score the held-out "
                        f"images: {e}"
                    ) from None
                values[f"val/{self.metric}/{direction}"] = float(value)
        finally:
            for m, training in modes:
                m.train(training)
        values[f"val/{self.metric}"] = float(np.mean(list(values.values())))
        return values

    def update(self, iteration: int, values: dict[str, float], generators: torch.nn.Module) -> bool:
        """Record ``values`` of ``iteration`` and, when it is the best so far (ties: the
        earliest), a copy of the generators' weights; whether it was."""
        score = values[f"val/{self.metric}"]
        best = self.best["score"] if self.best else None
        better = best is None or (score < best if self.lower_is_better else score > best)
        if better:
            weights = {k: v.detach().cpu().clone() for k, v in generators.state_dict().items()}
            self.best = {"iteration": iteration, "score": score, "generators": weights}
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.best = (state or {}).get("best")
