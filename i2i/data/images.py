"""Decode any image file a user may have into 8-bit RGB, or say exactly why it cannot be.

Handles EXIF orientation, greyscale, palette (with transparency), RGBA/LA (composited on white,
so transparent regions do not turn black), CMYK, and 16/32-bit greyscale (scaled, not clipped).
Decompression bombs (more than PIL's MAX_IMAGE_PIXELS) are refused before decoding.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


class BadImage(ValueError):
    """A file that cannot be used as a training image; the message is the reason."""


class TooManyPixels(BadImage):
    """An image larger than the caller allows (its header says so; nothing was decoded)."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        # 16-bit data spans 0..65535; PIL's own convert("L") would clip it to 0..255.
        scale = 1.0 if a.max(initial=0) <= 255 else 65535.0 / 255.0
        if im.mode == "F" and a.max(initial=0) <= 1.0:
            scale = 1.0 / 255.0
        im = Image.fromarray(np.clip(np.round(a / scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert("RGB") if im.mode != "RGB" else im


def load_rgb(
    path: str | Path | bytes,
    box: tuple[float, float, float, float] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Open ``path`` (or an image file's ``bytes``) as an RGB PIL image; ``box`` (fractions l,
    t, r, b) crops after orientation.

    Raises :class:`BadImage` for empty, truncated, non-image or oversized files: over PIL's
    bomb limit, or over ``max_pixels`` (read from the header, before any pixel is decoded).
    """
    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    if (len(path) if isinstance(path, bytes) else source.stat().st_size) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise TooManyPixels(
                        f"{im.width}x{im.height} = {im.width * im.height:,} pixels, more than the "
                        f"{max_pixels:,} allowed"
                    )
                im = ImageOps.exif_transpose(im)
                im.load()
                im = _to_rgb(im)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb refused ({e})") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"unreadable image ({e})") from None
    if box is not None:
        w, h = im.size
        left, t, r, b = box
        im = im.crop((round(left * w), round(t * h), round(r * w), round(b * h)))
    return im


def resize_shorter(im: Image.Image, size: int, resample: int = Image.BICUBIC) -> Image.Image:
    """Scale so the shorter side is ``size`` pixels, keeping the aspect ratio."""
    w, h = im.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return im if new == (w, h) else im.resize(new, resample)
