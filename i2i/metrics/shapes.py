"""Ground-truth scores on the synthetic ``shapes`` dataset (see ``i2i.data.shapes``).

Content preservation: a translation A->B should fill exactly the shapes the input outlines, so
the foreground of the output (pixels visibly off the white background) is compared with the
input's geometry mask by intersection over union. 1 is perfect; an output that paints
everything scores the mask's share of the image, a blank one 0. The foreground is *filled*
(every pixel the painted pixels enclose counts), so the same score applies to B->A, whose
outputs are outlines: an outline that closes around the right region scores high. Pixels
within one pixel of the mask's boundary are left out of both sets (a "void" band, as PASCAL VOC
does at object borders): anti-aliasing and outline strokes centred on the boundary make them
ambiguous, and with them the ground-truth rendering itself would score about 0.95, not 1.
"""

from __future__ import annotations

import numpy as np

from i2i.data.shapes import BACKGROUND

FOREGROUND_GAP = 40  # grey levels below white that count as painted


def foreground(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> bool [N, H, W]: pixels visibly darker than the white background."""
    return (images.astype(np.int16) < BACKGROUND - FOREGROUND_GAP).any(axis=-1)


def filled(painted: np.ndarray) -> np.ndarray:
    """bool [N, H, W] -> the painted pixels plus every pixel they enclose (holes filled): the
    complement of the background reachable from the image border (4-connected flood fill)."""
    free = ~painted
    outside = np.zeros_like(free)
    outside[:, 0, :], outside[:, -1, :] = free[:, 0, :], free[:, -1, :]
    outside[:, :, 0], outside[:, :, -1] = free[:, :, 0], free[:, :, -1]
    while True:
        grown = outside.copy()
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown[:, :, 1:] |= outside[:, :, :-1]
        grown[:, :, :-1] |= outside[:, :, 1:]
        grown &= free
        if (grown == outside).all():
            return ~outside
        outside = grown


def _dilate(m: np.ndarray) -> np.ndarray:
    """3 x 3 binary dilation of bool [N, H, W]."""
    out = m.copy()
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    vertical = out.copy()
    out[:, :, 1:] |= vertical[:, :, :-1]
    out[:, :, :-1] |= vertical[:, :, 1:]
    return out


def boundary_band(masks: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of a mask boundary: bool [N, H, W]."""
    return _dilate(masks) & _dilate(~masks)


def iou(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Per-image intersection over union of bool masks [N, H, W] (1 where both are empty),
    leaving out the ``ignore`` pixels."""
    if ignore is not None:
        pred, truth = pred & ~ignore, truth & ~ignore
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def content_ious(outputs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-input IoU [N] between the outputs' filled foreground and the inputs' geometry masks,
    outside the masks' boundary band."""
    return iou(filled(foreground(outputs)), masks, boundary_band(masks))


def content_iou(outputs: np.ndarray, masks: np.ndarray) -> float:
    """The mean of :func:`content_ious`."""
    return float(content_ious(outputs, masks).mean())
