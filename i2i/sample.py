"""The sample stage: translate the whole test split both ways and build a browsable gallery.

Layout of the output folder (``reports/samples``), the same for every model:

    index.html                      the gallery: per direction, input | outputs, one row per input
    grid_ab.png, grid_ba.png        the gallery's rows as one image per direction
    ab/examples/example_00.png      MUNIT: the target images whose styles guide columns example_*
    ab/00000/input.png              test input 0 of domain A (centre crop)
    ab/00000/output.png             CycleGAN: its translation
    ab/00000/style_00.png ...       MUNIT: under style code k, the same codes for every input
    ab/00000/example_00.png ...     MUNIT: under the style encoded from example k

MUNIT's style codes are drawn once from the prior with ``sample.seed`` and shared by all inputs,
so column k of the gallery means one style everywhere (Huang et al. 2018, Fig. 1); example
guidance encodes the style of a chosen target image (Sec. 3.1, "example-guided translation").
The grids and the gallery are logged to the training's MLflow run under ``samples/``.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from i2i.config import Params
from i2i.data.loader import TEST_PARTS, DomainImages, centre_crop, to_model_input
from i2i.grids import tile, to_uint8
from i2i.io import atomic_dir, temp_dir
from i2i.devices import pick_device
from i2i.models import Networks, load_generators


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _crops(part: DomainImages, ids: list[int], size: int) -> np.ndarray:
    return np.stack([centre_crop(part.image(i), size) for i in ids])


@torch.no_grad()
def translate_direction(
    nets: Networks,
    source: DomainImages,
    target: DomainImages,
    direction: str,
    params: Params,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """(inputs [N, S, S, 3], outputs [N, C, S, S, 3], column names, example indices) as uint8."""
    sp, size, batch = params.sample, params.data.crop_size, params.sample.batch_size
    inputs = _crops(source, list(range(len(source))), size)
    examples: list[int] = []
    if not nets.style_dim:
        columns, styles = ["output"], None
    else:
        rng = torch.Generator().manual_seed(sp.seed)
        styles = torch.randn(sp.num_styles, nets.style_dim, 1, 1, generator=rng).to(
            device
        )  # [K, style_dim, 1, 1]
        examples = sorted(
            np.random.default_rng(sp.seed)
            .choice(len(target), min(sp.num_examples, len(target)), replace=False)
            .tolist()
        )
        columns = [f"style_{k:02d}" for k in range(sp.num_styles)]
        if examples:
            x_ex = to_model_input(torch.from_numpy(_crops(target, examples, size)), device)
            styles = torch.cat(
                [styles, nets.style_of(x_ex, direction[1])]
            )  # + [E, style_dim, 1, 1]
            columns += [f"example_{k:02d}" for k in range(len(examples))]
    outputs = []
    for s in range(0, len(inputs), max(1, batch // len(columns))):
        x = to_model_input(torch.from_numpy(inputs[s : s + max(1, batch // len(columns))]), device)
        out = nets.translate(x, direction, styles, batch)  # [k, C, 3, S, S]
        outputs.append(to_uint8(out.flatten(0, 1)).reshape(*out.shape[:2], size, size, 3))
    return inputs, np.concatenate(outputs), columns, examples


def _gallery(sections: list[dict[str, Any]], title: str) -> str:
    def img(src: str, alt: str) -> str:
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'

    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{padding:2px;text-align:center;font-size:11px}img{width:96px;image-rendering:pixelated}"
        "td.in{border-right:3px solid #888}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        d = sec["direction"]
        parts.append(f"<h2>{d[0].upper()} &rarr; {d[1].upper()}</h2><table><tr><th>input</th>")
        for c in sec["columns"]:
            if c.startswith("example_"):
                alt = f"style of this {d[1].upper()} image"
                parts.append(f"<th>{img(f'{d}/examples/{c}.png', alt)}<br>{c}</th>")
            else:
                parts.append(f"<th>{c}</th>")
        parts.append("</tr>")
        for i, name in sec["rows"]:
            parts.append(f"<tr><td class=in>{img(f'{d}/{i:05d}/input.png', name)}</td>")
            parts += [
                f"<td>{img(f'{d}/{i:05d}/{c}.png', f'{name} {c}')}</td>" for c in sec["columns"]
            ]
            parts.append("</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def sample(
    params: Params, data: Path, models: Path, out: Path, raw: bool = False
) -> dict[str, Any]:
    """Write every translation of the test split, the grids and the gallery under ``out``."""
    device = pick_device(params.sample.device)
    nets = load_generators(models / "generator.pt", device, raw=raw)
    sections, counts = [], {}
    with atomic_dir(out) as tmp:
        for direction, (src_part, tgt_part) in TEST_PARTS.items():
            if direction not in nets.directions:  # a one-way model (CUT): nothing to write
                continue
            source, target = DomainImages(data / src_part), DomainImages(data / tgt_part)
            inputs, outputs, columns, examples = translate_direction(
                nets, source, target, direction, params, device
            )
            for i in range(len(inputs)):
                _save(tmp / direction / f"{i:05d}" / "input.png", inputs[i])
                for c, name in enumerate(columns):
                    _save(tmp / direction / f"{i:05d}" / f"{name}.png", outputs[i, c])
            for k, j in enumerate(examples):
                _save(
                    tmp / direction / "examples" / f"example_{k:02d}.png",
                    _crops(target, [j], params.data.crop_size)[0],
                )
            shown = list(range(min(params.sample.gallery_inputs, len(inputs))))
            _save(tmp / f"grid_{direction}.png", tile([[inputs[i], *outputs[i]] for i in shown]))
            sections.append(
                {
                    "direction": direction,
                    "columns": columns,
                    "rows": [(i, source.names[i]) for i in shown],
                }
            )
            counts[direction] = {
                "inputs": len(inputs),
                "outputs_per_input": len(columns),
                "examples": len(examples),
            }
        (tmp / "index.html").write_text(_gallery(sections, f"i2i samples: {nets.name}"))
    _log_gallery(params, models, out, sections)
    return counts


def _log_gallery(params: Params, models: Path, out: Path, sections: list[dict[str, Any]]) -> None:
    """The grids, index.html and the images it shows, into the training's MLflow run."""
    from i2i.tracking import Tracker, run_tags

    tracker = Tracker(params.tracking)
    tracker.attach(models / "run.json", run_tags())
    with temp_dir("i2i-samples-") as staging:
        for name in ["index.html", *(f"grid_{s['direction']}.png" for s in sections)]:
            shutil.copy2(out / name, staging / name)
        for s in sections:
            d = s["direction"]
            if (out / d / "examples").is_dir():
                shutil.copytree(out / d / "examples", staging / d / "examples")
            for i, _ in s["rows"]:
                shutil.copytree(out / d / f"{i:05d}", staging / d / f"{i:05d}")
        tracker.log_artifacts(staging, "samples")
