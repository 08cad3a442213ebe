"""Evaluation benchmark: LPIPS pairs/s, Inception images/s, and the wall time of the diversity
protocol (lpips_inputs x lpips_pairs LPIPS pairs plus cis_inputs x cis_samples CIS outputs) as
the evaluate stage runs it, through the metric registry, for an (untrained) MUNIT of the default
size: the time depends on the network sizes, not on the weights. Backbones are random
(as with ``backbones.policy: random``): the same layers and cost as the ImageNet ones, no download.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from i2i.config import params_from_dict


def _rate(fn, items: int, repeats: int, device: torch.device) -> float:
    from benchmarks.harness.training import sync

    fn()  # warm-up: allocations, kernel selection
    sync(device)
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return items * repeats / (time.perf_counter() - began)


def _setting(base: dict, classifier: str | None, tiny: bool) -> dict:
    """The params the benchmark scores: a MUNIT (many outputs per input) on the shapes data."""
    p = copy.deepcopy(base)
    p["model"]["name"] = "munit"
    p["backbones"]["policy"] = "random"
    if classifier:
        p["evaluate"]["classifier"] = classifier
    if tiny:
        p["data"].update(load_size=32, crop_size=32, num_workers=0)
        p["data"]["shapes"].update(image_size=32, num_train=16, num_test=4)
        p["model"]["munit"].update(dim=4, mlp_dim=8, n_res=1)
        p["evaluate"].update(
            lpips_inputs=2,
            lpips_pairs=2,
            cis_inputs=2,
            cis_samples=4,
            classifier_steps=5,
            batch_size=8,
        )
    else:
        p["data"]["shapes"]["image_size"] = p["data"]["load_size"]
    return p


def bench_evaluation(
    base: dict,
    device: str,
    cache: Path,
    classifier: str | None = None,
    tiny: bool = False,
    repeats: int = 3,
) -> dict[str, Any]:
    """Speeds of the metric networks and the protocol's wall time, on ``device``."""
    from benchmarks.harness.training import prepared_data
    from i2i.data.loader import TEST_PARTS, DomainImages
    from i2i.devices import pick_device
    from i2i.metrics.classifier import classify
    from i2i.metrics.context import DirectionContext, MetricNetworks
    from i2i.metrics.inception import InceptionV3
    from i2i.metrics.lpips_distance import LpipsDistance
    from i2i.metrics.registry import METRICS
    from i2i.models import build_networks

    params = params_from_dict(_setting(base, classifier, tiny), "evaluation benchmark")
    cfg, size = params.evaluate, params.data.crop_size
    dev = pick_device(device)
    data = prepared_data(params, cache)
    b = cfg.batch_size

    torch.manual_seed(0)
    lpips = LpipsDistance(cfg.lpips_net, pretrained=False).to(dev)
    x = torch.rand(2 * b, 3, size, size, device=dev) * 2 - 1
    lpips_rate = _rate(lambda: lpips(x[:b], x[b:]), b, repeats, dev)
    inception = InceptionV3(pretrained=False).to(dev)
    inception_rate = _rate(lambda: inception(x[:b]), b, repeats, dev)

    classifiers = cache / f"classifiers-{size}-{cfg.classifier_steps}"
    if cfg.classifier == "domain" and not classifiers.is_dir():
        classify(data, classifiers, size, cfg.classifier_steps, cfg.seed, dev)
    torch.manual_seed(params.train.seed)
    nets = build_networks(params.model, discriminators=False).to(dev).eval()
    source, target = TEST_PARTS["ab"]
    ctx = DirectionContext(
        nets,
        "ab",
        DomainImages(data / source),
        DomainImages(data / target),
        size,
        cfg,
        MetricNetworks(cfg, classifiers, dev),
    )
    _ = (
        ctx.networks.lpips
    )  # built outside the timed protocol (evaluate builds it once for all metrics)
    if cfg.classifier == "inception":
        _ = ctx.networks.inception
    began = time.perf_counter()
    scores = {**METRICS["lpips_diversity"].compute(ctx), **METRICS["cis"].compute(ctx)}
    protocol_s = time.perf_counter() - began
    return {
        "device": str(dev),
        "image_size": size,
        "batch_size": b,
        "lpips_net": cfg.lpips_net,
        "lpips_pairs_per_second": lpips_rate,
        "inception_images_per_second": inception_rate,
        "protocol": {
            "lpips_inputs": cfg.lpips_inputs,
            "lpips_pairs": cfg.lpips_pairs,
            "cis_inputs": cfg.cis_inputs,
            "cis_samples": cfg.cis_samples,
            "classifier": cfg.classifier,
        },
        "protocol_seconds": protocol_s,
        "scores": scores,
    }
