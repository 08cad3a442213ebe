"""Content preservation (A->B IoU with the input geometry) of the trained generator against the
same architecture untrained, on the synthetic test split. Reproduces the README's numbers:

    python benchmarks/trained_vs_untrained.py --params params.yaml --model models/generator.pt
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2i.config import load_params  # noqa: E402
from i2i.data.loader import DomainImages, EvalImages, crop_flip, to_model_input  # noqa: E402
from i2i.grids import to_uint8  # noqa: E402
from i2i.metrics.shapes import content_iou  # noqa: E402
from i2i.models import build_networks, load_generators, translate  # noqa: E402


def score(nets, images: EvalImages, masks: np.ndarray, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), 50):
            batch = torch.stack([images[i]["x"] for i in range(start, min(start + 50, len(images)))])
            x = to_model_input(batch, "cpu")
            style = None
            if nets.name == "munit":
                style = torch.randn(x.shape[0], nets.G["b"].style_dim, 1, 1, generator=g)
            outputs.append(to_uint8(translate(nets, x, "ab", style)))
    return content_iou(np.concatenate(outputs), masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="models/generator.pt")
    ap.add_argument("--data", default="data/prepared")
    args = ap.parse_args()
    params = load_params(args.params)
    part = DomainImages(Path(args.data) / "test_a")
    images = EvalImages(part, params.data.crop_size)
    c = params.data.crop_size
    # The same centre crop EvalImages applies to the images.
    masks = np.stack([crop_flip(part.mask(i)[..., None], c, None, False)[..., 0] for i in range(len(part))])
    trained = load_generators(args.model)
    torch.manual_seed(params.train.seed)
    untrained = build_networks(params.model, discriminators=False).eval()
    result = {"model": trained.name, "test_images": len(images),
              "content_iou_untrained": round(score(untrained, images, masks, 0), 4),
              "content_iou_trained": round(score(trained, images, masks, 0), 4)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
