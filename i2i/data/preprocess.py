"""Preprocess stage: raw images of both domains and splits -> a compact cache that loads fast.

Each of ``train_a``, ``train_b``, ``test_a``, ``test_b`` becomes a folder holding every image,
decoded to RGB and resized (shorter side ``data.load_size``), as one flat uint8 file
(``images.u8``, memory-mapped at train time) with ``index.npy`` ([N, 3] int64: byte offset,
height, width), ``labels.npy`` (class index from the image's sub-folder, -1 when unlabelled),
``masks.u8`` when every image has a geometry mask, and ``names.json``. ``manifest.json`` records
counts, sizes, classes and a content hash. Unusable files are skipped and listed with a reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from i2i.config import DataConfig
from i2i.data.images import IMAGE_SUFFIXES, BadImage, load_rgb, resize_shorter
from i2i.errors import I2IError
from i2i.io import atomic_dir

FORMAT_VERSION = 1
PARTS = ("train_a", "train_b", "test_a", "test_b")
# The paired layout (edges2shoes): [A | B] side by side; MUNIT takes val as the test split.
_PAIRED_FOLDER = {"train": "train", "test": "val"}
_PAIRED_BOX = {"a": (0.0, 0.0, 0.5, 1.0), "b": (0.5, 0.0, 1.0, 1.0)}


class PreprocessError(I2IError, RuntimeError):
    """The raw data cannot make a usable dataset; the message names the folder."""


@dataclass(frozen=True)
class Item:
    path: Path
    name: str  # path relative to its domain folder, recorded in names.json
    label: str  # class sub-folder, "" when the image sits at the top of its folder
    box: tuple[float, float, float, float] | None = None
    mask: Path | None = None


def list_items(raw: Path, layout: str, part: str) -> tuple[Path, list[Item], list[dict[str, str]]]:
    """The candidate images of one part, plus the files skipped for their type."""
    split, domain = part.split("_")
    if layout == "paired":
        folder = raw / _PAIRED_FOLDER[split]
        box = _PAIRED_BOX[domain]
    else:
        folder = raw / f"{split}{domain.upper()}"
        box = None
    if not folder.is_dir():
        raise PreprocessError(f"{folder}: folder missing; the {layout} layout needs it")
    items, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(s.startswith(".") for s in rel.parts):
            continue  # .DS_Store, editor swap files: never data
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(
                {
                    "file": str(path),
                    "reason": f"not an image file type ({path.suffix or 'no suffix'})",
                }
            )
            continue
        mask = raw / "masks" / folder.name / rel.with_suffix(".png")
        label = "" if layout == "paired" or rel.parent == Path(".") else rel.parent.as_posix()
        items.append(Item(path, rel.as_posix(), label, box, mask if mask.is_file() else None))
    return folder, items, skipped


def _load(
    item: Item, load_size: int, with_mask: bool
) -> tuple[np.ndarray, np.ndarray | None] | str:
    """Decoded, resized image (and mask); or the reason the file is unusable."""
    try:
        im = load_rgb(item.path, item.box)
    except BadImage as e:
        return str(e)
    w, h = im.size
    if min(w, h) < 2:
        return f"too small ({w}x{h})"
    im = resize_shorter(im, load_size)
    mask = None
    if with_mask:
        try:
            m = Image.open(item.mask).convert("L")
        except OSError as e:
            return f"unreadable mask {item.mask} ({e})"
        mask = np.asarray(m.resize(im.size, Image.NEAREST)) >= 128
    return np.asarray(im, dtype=np.uint8), mask


def _write_part(
    folder: Path, items: list[Item], results: list, classes: list[str], with_mask: bool
) -> tuple[dict, list[dict]]:
    folder.mkdir(parents=True)
    index, labels, names, skipped = [], [], [], []
    digest = hashlib.sha256()
    offset = 0
    with open(folder / "images.u8", "wb") as fi, open(folder / "masks.u8", "wb") as fm:
        for item, result in zip(items, results):
            if isinstance(result, str):
                skipped.append({"file": str(item.path), "reason": result})
                continue
            image, mask = result
            h, w, _ = image.shape  # [H, W, 3]
            data = image.tobytes()
            fi.write(data)
            digest.update(data)
            if with_mask:
                fm.write(mask.astype(np.uint8).tobytes())
                digest.update(mask.tobytes())
            index.append((offset, h, w))
            labels.append(classes.index(item.label) if classes else -1)
            names.append(item.name)
            offset += len(data)
    if not with_mask:
        (folder / "masks.u8").unlink()
    index_arr = np.array(index, dtype=np.int64).reshape(-1, 3)
    labels_arr = np.array(labels, dtype=np.int32)
    np.save(folder / "index.npy", index_arr)
    np.save(folder / "labels.npy", labels_arr)
    (folder / "names.json").write_text(json.dumps(names))
    for blob in (index_arr.tobytes(), labels_arr.tobytes(), json.dumps(names).encode()):
        digest.update(blob)
    summary = {
        "count": len(names),
        "height": _span(index_arr[:, 1]),
        "width": _span(index_arr[:, 2]),
        "classes": classes,
        "has_masks": with_mask,
        "sha256": digest.hexdigest(),
    }
    return summary, skipped


def _span(values: np.ndarray) -> list[int]:
    return [int(values.min()), int(values.max())] if len(values) else [0, 0]


def preprocess(raw: str | Path, out: str | Path, cfg: DataConfig) -> dict:
    """Build the cache at ``out`` from ``raw`` (written by the download stage); return the
    report."""
    raw, out = Path(raw), Path(out)
    info_path = raw / "dataset.json"
    if not info_path.is_file():
        raise PreprocessError(f"{info_path}: missing; run the download stage first (i2i download)")
    info = json.loads(info_path.read_text())
    layout = info["layout"]
    listed = {part: list_items(raw, layout, part) for part in PARTS}
    report: dict = {
        "dataset": info["name"],
        "load_size": cfg.load_size,
        "counts": {},
        "skipped": [],
    }
    manifest: dict = {
        "format_version": FORMAT_VERSION,
        "dataset": info["name"],
        "load_size": cfg.load_size,
        "parts": {},
    }
    with atomic_dir(out) as tmp, _executor(cfg.num_workers) as pool:
        for domain in ("a", "b"):
            # One class list per domain, shared by its splits, so label k means the same class.
            found = sorted(
                {i.label for part in PARTS if part.endswith(domain) for i in listed[part][1]}
            )
            classes = info.get("classes", {}).get(domain) or ([] if found in ([], [""]) else found)
            if classes and not set(found) <= set(classes):
                raise PreprocessError(
                    f"{raw}: class folders {sorted(set(found) - set(classes))} of "
                    f"domain {domain.upper()} are not among the declared {classes}"
                )
            for part in (f"train_{domain}", f"test_{domain}"):
                folder, items, skipped = listed[part]
                with_mask = bool(items) and all(i.mask is not None for i in items)
                loads = (
                    pool.map(
                        _load,
                        items,
                        [cfg.load_size] * len(items),
                        [with_mask] * len(items),
                        chunksize=16,
                    )
                    if pool
                    else (_load(i, cfg.load_size, with_mask) for i in items)
                )
                summary, bad = _write_part(tmp / part, items, list(loads), classes, with_mask)
                skipped += bad
                report["skipped"] += skipped
                report["counts"][part] = summary["count"]
                manifest["parts"][part] = summary
                if summary["count"] == 0:
                    why = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in skipped[:3])
                    raise PreprocessError(
                        f"{folder}: no usable images ({len(skipped)} files skipped"
                        f"{': ' + why if why else ''})"
                    )
        content = hashlib.sha256("".join(manifest["parts"][p]["sha256"] for p in PARTS).encode())
        manifest["content_hash"] = report["content_hash"] = content.hexdigest()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _executor(workers: int) -> concurrent.futures.ProcessPoolExecutor | contextlib.nullcontext:
    return (
        concurrent.futures.ProcessPoolExecutor(workers) if workers > 0 else contextlib.nullcontext()
    )
