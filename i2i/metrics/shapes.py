"""Ground-truth scores on the synthetic ``shapes`` dataset (see ``i2i.data.shapes``).

Content preservation: a translation A->B should fill exactly the shapes the input outlines, so
the foreground of the output (pixels visibly off the white background) is compared with the
input's geometry mask by intersection over union. 1 is perfect; an output that paints
everything scores the mask's share of the image, a blank one 0.
"""
from __future__ import annotations

import numpy as np

from i2i.data.shapes import BACKGROUND

FOREGROUND_GAP = 40  # grey levels below white that count as painted


def foreground(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> bool [N, H, W]: pixels visibly darker than the white background."""
    return (images.astype(np.int16) < BACKGROUND - FOREGROUND_GAP).any(axis=-1)


def iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image intersection over union of bool masks [N, H, W] (1 where both are empty)."""
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def content_iou(outputs: np.ndarray, masks: np.ndarray) -> float:
    """Mean IoU between the outputs' foreground and the inputs' geometry masks."""
    return float(iou(foreground(outputs), masks).mean())
