"""Content preservation (A->B IoU with the input geometry) of the trained generator against the
same architecture untrained, on the synthetic test split, through the evaluate stage's own
metric. Reproduces the README's numbers:

    python benchmarks/trained_vs_untrained.py --params params.yaml --model models/generator.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2i.config import Params, load_params  # noqa: E402
from i2i.data.loader import DomainImages  # noqa: E402
from i2i.metrics.context import DirectionContext, MetricNetworks  # noqa: E402
from i2i.metrics.registry import METRICS  # noqa: E402
from i2i.models import Networks, build_networks, load_generators  # noqa: E402


def content_iou(nets: Networks, params: Params, data: Path) -> float:
    networks = MetricNetworks(params.evaluate, Path("classifiers"), torch.device("cpu"))
    ctx = DirectionContext(
        nets,
        "ab",
        DomainImages(data / "test_a"),
        DomainImages(data / "test_b"),
        params.data.crop_size,
        params.evaluate,
        networks,
    )
    return METRICS["content_iou"].compute(ctx)["content_iou"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="models/generator.pt")
    ap.add_argument("--data", default="data/prepared", type=Path)
    args = ap.parse_args()
    params = load_params(args.params)
    trained = load_generators(args.model)
    torch.manual_seed(params.train.seed)
    untrained = build_networks(params.model, discriminators=False).eval()
    result = {
        "model": trained.name,
        "test_images": len(DomainImages(args.data / "test_a")),
        "content_iou_untrained": round(content_iou(untrained, params, args.data), 4),
        "content_iou_trained": round(content_iou(trained, params, args.data), 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
