"""Download stage: put the dataset named by ``data.dataset`` in the raw layout under ``out``.

The raw layout is either ``unpaired`` (``trainA/ trainB/ testA/ testB/``, optional class
sub-folders and ``masks/``) or ``paired`` (``train/ val/`` of side-by-side pairs, split in two by
the preprocess stage). ``dataset.json`` records which, where the data came from, and the
classes a domain declares (a generator knows all of them even if a small set misses one;
without a declaration the preprocess stage takes the class sub-folders it finds).

A hosted archive is cached outside the repository, its SHA-256 recorded beside it at its first
download and checked again at every later use; it is unpacked by :mod:`i2i.data.archive`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from i2i.cache import datasets_dir
from i2i.config import DataConfig
from i2i.data import shapes
from i2i.data.archive import extract
from i2i.data.fetch import fetch, pinned_sha256
from i2i.data.registry import DATASETS
from i2i.errors import I2IError
from i2i.io import atomic_dir, write_json

REQUIRED = {"unpaired": ("trainA", "trainB", "testA", "testB"), "paired": ("train", "val")}


class DatasetLayoutError(I2IError, RuntimeError):
    """The source folder or archive does not hold the expected sub-folders."""


def download(cfg: DataConfig, out: str | Path) -> dict:
    """Fetch or generate the dataset into ``out`` (replaced whole, atomically); return its info."""
    if cfg.dataset not in DATASETS:
        raise I2IError(
            f"data.dataset = {cfg.dataset!r}: expected one of {', '.join(sorted(DATASETS))}"
        )
    spec = DATASETS[cfg.dataset]
    with atomic_dir(out) as tmp:
        classes = {}
        if spec.source == "synthetic":
            shapes.generate(cfg.shapes, cfg.seed, tmp)
            origin = f"generated (data.seed={cfg.seed})"
            classes = {"b": [m.name for m in shapes.MODES[: cfg.shapes.num_modes]]}
        elif spec.source == "folder":
            src = Path(cfg.path).expanduser()
            _check_layout(src, spec.layout, f"data.path={cfg.path!r}")
            for name in REQUIRED[spec.layout] + ("masks",):
                if (src / name).is_dir():
                    shutil.copytree(src / name, tmp / name)
            origin = str(src.resolve())
        else:
            origin = spec.url(cfg.mirror)
            archive = fetch(origin, datasets_dir() / spec.archive)
            pinned_sha256(archive)  # a cached archive is the one first fetched, byte for byte
            extracted = extract(archive, tmp / ".extracted")
            top = _find_layout(extracted, spec.layout, str(archive))
            for name in REQUIRED[spec.layout]:
                (top / name).rename(tmp / name)
            shutil.rmtree(extracted)
        info = {"name": spec.name, "layout": spec.layout, "origin": origin, "classes": classes}
        write_json(tmp / "dataset.json", info)
    return info


def _check_layout(folder: Path, layout: str, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise DatasetLayoutError(
            f"{folder} ({what}): a file, not a folder; expected a folder "
            f"holding {' '.join(n + '/' for n in REQUIRED[layout])}"
        )
    missing = [n for n in REQUIRED[layout] if not (folder / n).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{folder} ({what}): missing sub-folder(s) {', '.join(missing)}; "
            f"expected {'/ '.join(REQUIRED[layout])}/"
        )


def _find_layout(root: Path, layout: str, what: str) -> Path:
    """The folder inside an extracted archive that holds the layout's sub-folders."""
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if len(candidate.relative_to(root).parts) <= 2 and all(
            (candidate / n).is_dir() for n in REQUIRED[layout]
        ):
            return candidate
    raise DatasetLayoutError(
        f"{what}: no folder holding {', '.join(REQUIRED[layout])} inside the archive"
    )
