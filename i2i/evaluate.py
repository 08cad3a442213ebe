"""The evaluate stage: every metric ``evaluate.metrics`` names, for A->B and B->A, into
``reports/metrics.json`` (DVC metrics) and the training's MLflow run.

Keys are ``metric/<name>/<direction>`` in both places. A score that depends on a pretrained
backbone which was random (``backbones.policy``, ``i2i.weights``) is stored as
``uncalibrated/<name>/<direction>`` instead: a different name in metrics.json, ``dvc exp show``,
MLflow and ``i2i compare``, so it is never ranked against a calibrated one. A metric that does
not apply to a direction (no class labels in the target, no geometry masks) is ``null`` with
the reason in ``reports/evaluate.json``, which also records the backbones used and, beside each
score that can be recomputed on resampled test sets, its 95 % bootstrap interval over the test
inputs (``intervals``: the run's own uncertainty; across seeds, ``i2i compare``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from i2i import weights
from i2i.backbones import for_evaluation, metric_backbones
from i2i.config import Params
from i2i.data.loader import TEST_PARTS, DomainImages
from i2i.errors import I2IError
from i2i.devices import machine, pick_device
from i2i.io import write_json
from i2i.metrics.context import DirectionContext, MetricNetworks, Skip
from i2i.metrics.registry import METRICS, Resampled, check_names, is_reference
from i2i.models import load_generators
from i2i.statistics import LEVEL, bootstrap_interval

# Resamples of the test sets behind each score's bootstrap interval (the 95 % interval's ends
# are the 5th and the 195th of the sorted resampled scores).
BOOTSTRAP_RESAMPLES = 200


@dataclass(frozen=True)
class EvaluatePaths:
    data: Path  # the preprocessed cache (data/prepared)
    models: Path  # the train stage's exported generators and run.json
    classifiers: Path  # the classify stage's domain classifiers
    metrics: Path  # reports/metrics.json
    details: Path  # reports/evaluate.json: skipped metrics and why, timings, protocol
    real_features: Path | None = None  # the real_features stage's output (None: computed here)
    raw: bool = False  # the trained weights, not their moving average (train.ema_images)
    model: Path | None = None  # another generator file (a reference's): scored in its own run

    @property
    def generator(self) -> Path:
        return self.model or self.models / "generator.pt"


def prefix(metric: str, params: Params, backbones: dict[str, str]) -> str:
    """``metric``, or ``uncalibrated`` when a backbone ``metric`` depends on was random."""
    needs = metric_backbones(metric, params.evaluate)
    return "metric" if all(weights.pretrained(backbones, n) for n in needs) else "uncalibrated"


def score(
    params: Params, paths: EvaluatePaths, device: torch.device, backbones: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute the metrics with the record's backbones; return (metrics.json content, details)."""
    cfg = params.evaluate
    check_names(cfg)
    nets = load_generators(paths.generator, device, raw=paths.raw)
    networks = MetricNetworks(cfg, paths.classifiers, device, backbones, paths.real_features)
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    for direction, (source, target) in TEST_PARTS.items():
        if direction not in nets.directions:  # one-way (CUT, a reference file of one generator)
            for name in cfg.metrics:
                skipped[f"{name}/{direction}"] = "the model has no generator for this direction"
                metrics[f"{prefix(name, params, backbones)}/{name}/{direction}"] = None
            continue
        ctx = DirectionContext(
            nets,
            direction,
            DomainImages(paths.data / source),
            DomainImages(paths.data / target),
            params.data.crop_size,
            cfg,
            networks,
        )
        for name in cfg.metrics:
            began = time.perf_counter()
            try:
                values = METRICS[name].compute(ctx)
            except Skip as e:
                skipped[f"{name}/{direction}"] = str(e)
                values = {name: None}
            kind = prefix(name, params, backbones)
            for k, v in values.items():
                if isinstance(v, Resampled):
                    low, high = bootstrap_interval(
                        v.statistic, v.sizes, BOOTSTRAP_RESAMPLES, cfg.seed
                    )
                    intervals[f"{kind}/{k}/{direction}"] = [low, high]
            seconds[f"{name}/{direction}"] = round(time.perf_counter() - began, 2)
            metrics |= {
                f"{kind}/{k}/{direction}": None if v is None else float(v)
                for k, v in values.items()
            }
    # The scores first, then what they are read by: `dvc exp show` lists the columns in this order.
    metrics = dict(sorted(metrics.items(), key=lambda kv: is_reference(kv[0].split("/")[1])))
    uncalibrated = [n for n in cfg.metrics if prefix(n, params, backbones) == "uncalibrated"]
    details = {
        "model": nets.name,
        "device": str(device),
        "skipped": skipped,
        "backbones": backbones,
        "uncalibrated": uncalibrated,
        "real_features": networks.real_from,
        "seconds": seconds,
        "intervals": {
            "level": LEVEL,
            "method": f"percentile bootstrap over the test inputs, {BOOTSTRAP_RESAMPLES} resamples",
            **intervals,
        },
        "machine": machine(device),
        "classifier": cfg.classifier,
        "lpips_net": cfg.lpips_net,
        "protocol": {
            k: getattr(cfg, k)
            for k in ("lpips_inputs", "lpips_pairs", "cis_inputs", "cis_samples", "seed")
        },
    }
    return metrics, details


def with_best(
    params: Params,
    paths: EvaluatePaths,
    device: torch.device,
    backbones: dict[str, str],
    metrics: dict[str, Any],
    details: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Add the scores of the best-on-validation generators (``models/generator_best.pt``) as
    ``<kind>/<name>/<direction>_best``, and their intervals and skips likewise."""
    best = paths.models / "generator_best.pt"
    if not best.is_file():
        raise I2IError(
            f"evaluate.best_on_validation is true but {best} does not exist: train with "
            f"train.validation > 0 (held-out images to pick the best iteration), or set it false"
        )
    extra, more = score(params, dataclasses.replace(paths, model=best), device, backbones)
    metrics = metrics | {f"{k}_best": v for k, v in extra.items()}
    metrics = dict(sorted(metrics.items(), key=lambda kv: is_reference(kv[0].split("/")[1])))
    for part in ("skipped", "seconds"):
        details[part] |= {f"{k}_best": v for k, v in more[part].items()}
    details["intervals"] |= {
        f"{k}_best": v for k, v in more["intervals"].items() if k.count("/") == 2
    }
    iteration = torch.load(best, map_location="cpu", weights_only=True)["iterations"]
    details["best_on_validation"] = {"file": str(best), "iteration": int(iteration)}
    return metrics, details


def evaluate(
    params: Params, paths: EvaluatePaths, fix: str = "i2i weights --params params.yaml"
) -> dict[str, Any]:
    """Score the trained model, write the reports, log to the training's MLflow run. ``fix``:
    the command the warning names when a backbone cannot be had."""
    from i2i.tracking import Tracker, run_tags

    backbones = weights.resolve(for_evaluation(params.evaluate), params.backbones, fix)
    device = pick_device(params.evaluate.device)
    began = time.perf_counter()
    metrics, details = score(params, paths, device, backbones)
    if params.evaluate.best_on_validation and paths.model is None:
        metrics, details = with_best(params, paths, device, backbones, metrics, details)
    details["seconds"]["total"] = round(time.perf_counter() - began, 2)
    write_json(paths.details, details)
    write_json(paths.metrics, metrics)

    tracker = Tracker(params.tracking)
    calibrated = str(not details["uncalibrated"]).lower()
    tags = (
        run_tags()
        | {"metrics_calibrated": calibrated}
        | {f"backbone/{n}": used for n, used in backbones.items()}
    )
    if paths.model is not None:  # not the train stage's: a run of its own, named for the file
        source = str(paths.model)
        tags |= {"model": details["model"], "model_source": source}
        tracker.start({"model_source": source}, tags, name=f"file:{paths.model.name}")
        step = 0
    else:
        tracker.attach(paths.models / "run.json", tags)
        step = int(json.loads((paths.models / "run.json").read_text()).get("iterations", 0))
    tracker.log_metrics([(step, {k: v for k, v in metrics.items() if v is not None})])
    tracker.log_artifact(paths.metrics, "evaluate")
    tracker.log_artifact(paths.details, "evaluate")
    if paths.model is not None:
        tracker.end()
    return metrics
