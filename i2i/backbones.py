"""Which pretrained weight files each stage loads, and the ``backbones`` DVC stage's records.

The ``backbones`` stage runs on every ``dvc repro`` (a stat per file once the files are cached)
and writes one record, ``{name: sha256 | "random"}``, per consumer
(``reports/backbones/{train,real_features,evaluate}.json``); the stages depend on theirs, so
when the files arrive ``dvc repro`` re-runs exactly the stages whose results they change. The
files themselves (fetching, checking, loading) are :mod:`i2i.weights`'.
"""

from __future__ import annotations

from pathlib import Path

from i2i.config import EvaluateConfig, LossConfig, Params
from i2i.io import write_json
from i2i.weights import inception, resolve


def for_training(loss: LossConfig) -> list[str]:
    """The weight files the train stage loads: VGG16 when the perceptual loss is on."""
    return ["vgg16"] if loss.vgg_w > 0 else []


def metric_backbones(metric: str, ev: EvaluateConfig) -> list[str]:
    """The weight files one metric's value depends on (its registration says)."""
    from i2i.metrics.registry import METRICS

    return METRICS[metric].backbones(ev)


def for_evaluation(ev: EvaluateConfig) -> list[str]:
    """The weight files the evaluate stage loads for ``evaluate.metrics``, in a stable order."""
    return list(dict.fromkeys(n for m in ev.metrics for n in metric_backbones(m, ev)))


def for_real_features(ev: EvaluateConfig) -> list[str]:
    """The weight files the real_features stage loads: the Inception, when a metric uses it."""
    return [n for n in for_evaluation(ev) if n == inception(ev)]


def required(params: Params) -> list[str]:
    """Every weight file the given params load (``i2i weights --params``)."""
    return list(dict.fromkeys(for_training(params.loss) + for_evaluation(params.evaluate)))


def write_records(params: Params, out: Path, fix: str) -> dict[str, dict[str, str]]:
    """The ``backbones`` stage: get what train, real_features and evaluate will load; write one
    record each (``<out>/<stage>.json``) for DVC to track, and at most one warning for all."""
    needed = {
        "train": for_training(params.loss),
        "real_features": for_real_features(params.evaluate),
        "evaluate": for_evaluation(params.evaluate),
    }
    everything = resolve(
        list(dict.fromkeys(n for names in needed.values() for n in names)), params.backbones, fix
    )
    records = {stage: {n: everything[n] for n in names} for stage, names in needed.items()}
    for stage, record in records.items():
        write_json(Path(out) / f"{stage}.json", record)
    return records
