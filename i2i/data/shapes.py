"""The built-in synthetic dataset ``shapes``: an edges2shoes analogue that runs anywhere.

Domain A holds black outlines of 1..max_shapes random shapes on white (the "edges"); domain B
holds filled shapes rendered in one of K appearance modes, each a distinct colour family and
texture (the "photos", multimodal by construction). A and B are drawn independently, so the
data is unpaired. Every image comes with its geometry mask, and every B image with its mode, so
later stages can measure content preservation (does A->B keep the geometry?) and mode coverage
(does a multimodal model reach all K modes from one input?).

Written in the folder layout every other dataset uses, so nothing downstream special-cases it:
``trainA/00000.png``, ``trainB/<mode>/00000.png`` (a class sub-folder is the label), and the
geometry masks at the same relative paths under ``masks/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from i2i.config import ShapesConfig

SUPERSAMPLE = 4  # draw large and downsample, for anti-aliased edges
BACKGROUND = 255  # white, in both domains
SHAPE_KINDS = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon")


@dataclass(frozen=True)
class Mode:
    name: str
    color: tuple[int, int, int]
    texture: str  # solid | stripes | checker | dots


# Colour families and textures differ together, so modes are far apart in any feature space.
MODES = (
    Mode("0_red_solid", (200, 40, 40), "solid"),
    Mode("1_blue_stripes", (40, 70, 200), "stripes"),
    Mode("2_green_checker", (40, 160, 60), "checker"),
    Mode("3_orange_dots", (235, 140, 20), "dots"),
    Mode("4_purple_solid", (130, 50, 170), "solid"),
    Mode("5_teal_stripes", (20, 150, 150), "stripes"),
    Mode("6_brown_checker", (120, 80, 40), "checker"),
    Mode("7_pink_dots", (230, 90, 170), "dots"),
)

_SPLIT_ID = {"train": 0, "test": 1}
_DOMAIN_ID = {"a": 0, "b": 1}


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    sides = {"square": 4, "triangle": 3, "diamond": 4, "pentagon": 5, "hexagon": 6}[kind]
    if kind == "diamond":
        # A rhombus: a square squashed along one axis, then rotated.
        pts = [(r, 0), (0, 0.6 * r), (-r, 0), (0, -0.6 * r)]
    else:
        pts = [
            (r * math.cos(2 * math.pi * k / sides), r * math.sin(2 * math.pi * k / sides))
            for k in range(sides)
        ]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _draw_geometry(
    rng: np.random.Generator, size: int, max_shapes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (outline ink, fill coverage) as float arrays in [0, 1] of shape [size, size]."""
    big = size * SUPERSAMPLE
    ink = Image.new("L", (big, big), 0)
    fill = Image.new("L", (big, big), 0)
    draw_ink, draw_fill = ImageDraw.Draw(ink), ImageDraw.Draw(fill)
    width = max(1, round(size / 32)) * SUPERSAMPLE
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        r = float(rng.uniform(0.14, 0.3)) * big
        cx, cy = (float(rng.uniform(r + width, big - r - width)) for _ in range(2))
        if kind == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            draw_ink.ellipse(box, outline=255, width=width)
            draw_fill.ellipse(box, fill=255)
        else:
            pts = _polygon(kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
            draw_ink.polygon(pts, outline=255, width=width)
            draw_fill.polygon(pts, fill=255)

    def down(im: Image.Image) -> np.ndarray:
        return np.asarray(im.resize((size, size), Image.BOX), dtype=np.float32) / 255.0

    return down(ink), down(fill)


def _texture(rng: np.random.Generator, mode: Mode, size: int) -> np.ndarray:
    """An RGB float image [size, size, 3] in [0, 255] of the mode's family, jittered per image."""
    base = np.clip(np.array(mode.color, np.float32) + rng.uniform(-20, 20, 3), 0, 255)
    dark = base * 0.45
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / float(rng.uniform(6, 9))
    if mode.texture == "solid":
        on = np.ones((size, size), bool)
    elif mode.texture == "stripes":
        theta = math.radians(45 + float(rng.uniform(-15, 15)))
        u = xx * math.cos(theta) + yy * math.sin(theta)
        on = np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi)) > 0
    elif mode.texture == "checker":
        ox, oy = rng.uniform(0, period, 2)
        on = ((np.floor((xx + ox) / period) + np.floor((yy + oy) / period)) % 2) == 0
    else:  # dots
        ox, oy = rng.uniform(0, period, 2)
        dx = (xx + ox) % period - period / 2
        dy = (yy + oy) % period - period / 2
        on = np.hypot(dx, dy) > period * 0.28
    return np.where(on[..., None], base, dark)


def render(
    seed: int, split: str, domain: str, index: int, cfg: ShapesConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """One sample: (image uint8 [H, W, 3], geometry mask bool [H, W], mode index or -1 for A).

    Each image has its own random stream keyed by (seed, split, domain, index), so changing a
    count adds or removes images without changing the others.
    """
    rng = np.random.default_rng([seed, _SPLIT_ID[split], _DOMAIN_ID[domain], index])
    ink, fill = _draw_geometry(rng, cfg.image_size, cfg.max_shapes)
    mask = fill >= 0.5
    if domain == "a":
        gray = BACKGROUND * (1.0 - ink)
        image = np.repeat(gray[..., None], 3, axis=2)
        return np.round(image).astype(np.uint8), mask, -1
    mode_index = int(rng.integers(cfg.num_modes))
    tex = _texture(rng, MODES[mode_index], cfg.image_size)
    alpha = fill[..., None]
    image = BACKGROUND * (1.0 - alpha) + tex * alpha
    return np.round(image).astype(np.uint8), mask, mode_index


def generate(cfg: ShapesConfig, seed: int, root: str | Path) -> dict[str, int]:
    """Write the whole dataset under ``root``; return the image count per folder."""
    root = Path(root)
    counts = {}
    for split, n in (("train", cfg.num_train), ("test", cfg.num_test)):
        for domain in ("a", "b"):
            folder = f"{split}{domain.upper()}"
            for i in range(n):
                image, mask, mode = render(seed, split, domain, i, cfg)
                rel = Path(MODES[mode].name if mode >= 0 else "") / f"{i:05d}.png"
                for sub, array in (
                    (folder, image),
                    (f"masks/{folder}", mask.astype(np.uint8) * 255),
                ):
                    path = root / sub / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array).save(path)
            counts[folder] = n
    return counts
