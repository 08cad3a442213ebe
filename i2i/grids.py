"""Image grids of translations: inputs in the first column, outputs to the right."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from i2i.models import Networks


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8."""
    return (
        ((x.detach().float().clamp(-1, 1) + 1) * 127.5)
        .round()
        .byte()
        .permute(0, 2, 3, 1)
        .cpu()
        .numpy()
    )


def tile(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Rows of equally sized HWC images -> one image with ``pad`` white pixels between cells."""
    h, w, _ = rows[0][0].shape
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = img
    return out


@torch.no_grad()
def translation_grid(
    nets: Networks, inputs: torch.Tensor, direction: str, styles: torch.Tensor | None
) -> np.ndarray:
    """One row per input: the input, then its translation (CycleGAN) or one per style (MUNIT).

    ``styles`` [K, style_dim, 1, 1] are shared by all rows, so column k means the same style.
    """
    was_training = nets.training
    nets.eval()
    try:
        outputs = nets.translate(inputs, direction, styles)  # [N, K, 3, H, W]
    finally:
        nets.train(was_training)
    columns = [to_uint8(inputs)] + [to_uint8(outputs[:, k]) for k in range(outputs.shape[1])]
    return tile([[col[i] for col in columns] for i in range(inputs.shape[0])])
