"""`i2i translate`: a trained generator applied to any images, of any size.

Inputs are read as the preprocess stage reads them (EXIF orientation, palettes, alpha, 16-bit;
``i2i.data.images``); a file that cannot be read is reported and skipped. Each image is
translated at its own size: padded by reflection to the network's size multiple and cropped
back (or first resized, shorter side to ``size``). Consecutive images of one padded size go
through the network together, ``batch_size`` at a time, and are written before the next batch
is read. Output names mirror the input names under ``out``; none may be an input.

MUNIT: ``styles`` random style codes, drawn once from ``seed`` and shared by every input (file
``<name>_style_00.png`` ...), or the style of an ``example`` image; ``grid`` adds one contact
sheet (``grid.png``: inputs down, styles across).
"""

from __future__ import annotations

import glob
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.data.images import IMAGE_SUFFIXES, BadImage, load_rgb
from i2i.data.loader import prepare
from i2i.errors import I2IError
from i2i.grids import tile, to_uint8
from i2i.io import atomic_path
from i2i.models import Networks, load_generators
from i2i.progress import progress


@dataclass
class TranslateReport:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why


def model_file(source: str, root: Path, workdir: Path) -> Path:
    """The generator file ``source`` names: a path; an MLflow ``runs:/`` or ``models:/`` URI; or
    a DVC experiment (or any git revision) of the repository at ``root``, whose
    ``models/generator.pt`` is read from the DVC cache. Remote files land in ``workdir``."""
    if source.startswith(("runs:/", "models:/")):
        return _from_mlflow(source, _store(root), workdir)
    path = Path(source)
    if path.is_file():
        return path
    if path.suffix in (".pt", ".pth") or "/" in source:
        raise I2IError(f"{source}: no such model file")
    return _from_dvc(source, root, workdir)


def _store(root: Path) -> str:
    """The project's MLflow store (params.yaml's tracking.uri, else MLFLOW_TRACKING_URI, ...)."""
    from i2i.config import TrackingConfig, load_params
    from i2i.tracking import tracking_uri

    params = root / "params.yaml"
    cfg = load_params(params).tracking if params.is_file() else TrackingConfig("", "i2i")
    return tracking_uri(cfg, root)


def _from_mlflow(uri: str, store: str, workdir: Path) -> Path:
    """The generator file of an MLflow model: only that file is fetched when the URI names a
    model i2i logged (``runs:/<id>``, ``models:/...``), else whatever the URI names."""
    import os

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith("runs:/") and uri.rstrip("/").count("/") == 1:  # the run's MLflow model
        uri = uri.rstrip("/") + "/model"
    tries = (
        [uri]
        if uri.endswith((".pt", ".pth"))
        else [f"{uri.rstrip('/')}/artifacts/generator.pt", uri]
    )
    for i, candidate in enumerate(tries):
        try:
            local = mlflow.artifacts.download_artifacts(
                candidate, dst_path=str(workdir), tracking_uri=store
            )
            break
        except Exception as e:  # noqa: BLE001 - MLflow's own error types
            if i == len(tries) - 1:
                first = (str(e).strip().splitlines() or [""])[0][:200]
                raise I2IError(f"{uri}: cannot fetch the model from MLflow ({first})") from None
    local = Path(local)
    found = [local] if local.is_file() else sorted(local.rglob("generator.pt"))
    if not found:
        raise I2IError(f"{uri}: holds no generator.pt")
    return found[0]


def _from_dvc(rev: str, root: Path, workdir: Path) -> Path:
    import dvc.api

    target = workdir / f"{rev}.pt"
    try:
        with dvc.api.open("models/generator.pt", repo=str(root), rev=rev, mode="rb") as f:
            target.write_bytes(f.read())
    except Exception as e:  # noqa: BLE001 - DVC's and git's many kinds
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise I2IError(
            f"{rev}: not a model file, an MLflow URI (runs:/..., models:/...) or a DVC "
            f"experiment of {root} with models/generator.pt ({first}); `dvc exp list` names them"
        ) from None
    return target


def input_files(inputs: list[str]) -> list[Path]:
    """Every image file the inputs name: files, folders (searched recursively) and globs."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise I2IError(f"{item}: no such file, folder or matching files")
            files += [m for m in matches if m.is_file()]
    if not files:
        raise I2IError(f"no image files in {', '.join(inputs)}")
    unique: dict[Path, Path] = {}
    for f in files:  # each file once, in the order first named
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def output_names(files: list[Path], out: Path) -> dict[Path, Path]:
    """Each input's output path without suffix under ``out``, mirroring the inputs' layout
    relative to their common folder."""
    resolved = [f.resolve() for f in files]
    common = resolved[0].parent
    for f in resolved[1:]:
        while common not in f.parents:
            common = common.parent
    return {f: out / r.relative_to(common).with_suffix("") for f, r in zip(files, resolved)}


def translate_files(
    source: Path,
    files: list[Path],
    direction: str,
    out: Path,
    size: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    styles: int = 1,
    seed: int = 0,
    example: Path | None = None,
    grid: bool = False,
    raw: bool = False,
) -> TranslateReport:
    """Translate ``files`` with the generators in ``source`` and write the outputs under ``out``."""
    if direction not in ("ab", "ba"):
        raise I2IError(f"--direction {direction!r}: expected ab or ba")
    nets = load_translator(source, device, raw)
    if direction not in nets.directions:
        raise I2IError(
            f"--direction {direction}: {source} ({nets.name}) translates "
            f"{' and '.join(nets.directions)} only"
        )
    codes = _style_codes(nets, direction, styles, seed, example, size, device)
    tags = ["_example"] if example is not None else [""]
    if codes is not None and example is None:
        tags = [f"_style_{k:02d}" for k in range(len(codes))]
    paths = {
        f: [b.parent / f"{b.name}{t}.png" for t in tags]
        for f, b in output_names(files, out).items()
    }
    _refuse_collisions(paths, out / "grid.png" if grid else None)
    report, sheet = TranslateReport(), []
    pending: list[tuple[Path, torch.Tensor, tuple]] = []  # one padded size, up to batch_size

    def flush() -> None:
        x = torch.stack([p[1] for p in pending]).to(device)
        with torch.no_grad():
            y = nets.translate(x, direction, codes)  # [k, M, 3, H', W']
        for (f, padded, (h, w)), outputs in zip(pending, y):
            images = [to_uint8(o[None, :, :h, :w])[0] for o in outputs]
            report.written += [_save(path, im) for path, im in zip(paths[f], images)]
            if grid:  # cells at the first input's size: the sheet stays small
                cells = [to_uint8(padded[None, :, :h, :w])[0], *images]
                size = sheet[0][0].shape[1::-1] if sheet else (w, h)
                sheet.append([np.asarray(Image.fromarray(c).resize(size)) for c in cells])
        bar.update(len(pending))
        pending.clear()

    # Images are read, translated and written a batch at a time, in input order: a folder of
    # any size needs the memory of one batch.
    bar = progress(total=len(files), desc=f"translate {direction}", unit="img")
    for f in files:
        try:
            x, crop = prepare(load_rgb(f), size, nets.size_multiple, nets.min_size)
        except (BadImage, OSError) as e:
            report.skipped[str(f)] = str(e)
            bar.update(1)
            continue
        if pending and (pending[0][1].shape != x.shape or len(pending) == batch_size):
            flush()
        pending.append((f, x, crop))
    if pending:
        flush()
    bar.close()
    if sheet:
        report.written.append(_save(out / "grid.png", tile(sheet)))
    return report


def _refuse_collisions(paths: dict[Path, list[Path]], grid: Path | None) -> None:
    """Refuse, before anything is written, outputs that would overwrite an input or each other
    (``a.png`` and ``a.jpg`` both give ``a.png``; an input named like the contact sheet)."""
    inputs = {f.resolve() for f in paths}
    owner: dict[Path, Path] = {}
    for f, outs in paths.items():
        for p in outs:
            key = p.resolve()
            if key in inputs:
                raise I2IError(f"{p}: an input would be overwritten; choose another --out")
            if key in owner:
                raise I2IError(
                    f"{owner[key]} and {f} would both be written to {p}; rename one, or translate "
                    f"them into different --out folders"
                )
            owner[key] = f
    if grid is not None and grid.resolve() in inputs:
        raise I2IError(f"{grid}: an input would be overwritten by --grid; choose another --out")
    if grid is not None and grid.resolve() in owner:
        raise I2IError(
            f"{owner[grid.resolve()]} would be written to {grid}, where --grid puts the contact "
            f"sheet; rename it or leave out --grid"
        )


def load_translator(source: Path, device: torch.device | str, raw: bool = False) -> Networks:
    """The generators in ``source``, or one line saying why the file is not one."""
    try:
        return load_generators(source, device, raw)
    except I2IError:
        raise
    except Exception as e:  # noqa: BLE001 - not a torch file, another tool's keys, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise I2IError(
            f"{source}: not a generator file written by i2i train ({type(e).__name__}: {first})"
        ) from None


def _style_codes(
    nets: Networks,
    direction: str,
    styles: int,
    seed: int,
    example: Path | None,
    size: int | None,
    device: torch.device | str,
) -> torch.Tensor | None:
    """[M, style_dim, 1, 1] codes shared by every input, or None (CycleGAN)."""
    if not nets.style_dim:
        if styles != 1 or example is not None:
            raise I2IError(f"--styles and --example need a model with style codes, not {nets.name}")
        return None
    if example is not None:
        x, (h, w) = prepare(load_rgb(example), size, nets.size_multiple, nets.min_size)
        return nets.style_of(x[None].to(device), direction[1])
    rng = torch.Generator().manual_seed(seed)
    return torch.randn(styles, nets.style_dim, 1, 1, generator=rng).to(device)


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def translate_cli(
    inputs: list[str], model: str, direction: str, out: Path, root: Path, **options
) -> TranslateReport:
    """What ``i2i translate`` runs: resolve the model and the inputs, then translate."""
    files = input_files(inputs)
    with tempfile.TemporaryDirectory(prefix="i2i-model-") as tmp:
        source = model_file(model, root, Path(tmp))
        return translate_files(source, files, direction, out, **options)
