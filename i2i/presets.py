"""Presets: the keys of a published setting that differ from the repository's params.yaml.

``presets/cyclegan_horse2zebra.yaml`` holds only what makes the default params the paper's
setting (dataset, image size, widths, iterations, ...). :func:`apply` writes those keys into a
params file and keeps everything else there, its comments included, as ``dvc exp run -S`` does;
:func:`overlay` gives the merged params without writing (the benchmark settings use it).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from i2i import params_check
from i2i.config import ParamsError, params_from_dict
from i2i.configuration import flatten
from i2i.io import write_bytes
from i2i.model_registry import resolve


def read(path: Path) -> dict[str, Any]:
    """A preset file's keys; :class:`ParamsError` for a file that is not a mapping of them."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: preset not found (presets/ holds the published settings)"
        ) from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"{path}: a preset is a mapping of params sections, got {raw!r}")
    return raw


def overlay(base: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``preset``'s values: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    _set(merged, preset)
    return merged


def apply(preset_path: Path, params_path: Path) -> dict[str, tuple[Any, Any]]:
    """Set ``preset_path``'s keys in ``params_path``, keeping its other keys and its comments.

    The result is validated whole (as the ``params`` stage does) before anything is written,
    so a preset that names an unknown key leaves the file as it was. Returns
    ``{dotted key: (old value, new value)}`` for the keys whose value changed."""
    preset = read(preset_path)
    rt = YAML()  # round trip: comments and key order stay
    rt.width = 4096
    rt.preserve_quotes = True
    text = Path(params_path).read_text()
    document = rt.load(text)
    current = yaml.safe_load(text)
    before, merged = flatten(current), overlay(current, preset)
    where = f"{params_path} with {preset_path}"
    params_check.validate(resolve(params_from_dict(merged, source=where)), where)
    _set(document, preset)
    out = io.StringIO()
    rt.dump(document, out)
    write_bytes(params_path, out.getvalue().encode())
    after = flatten(merged)
    return {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}


def _set(node: Any, preset: dict[str, Any]) -> None:
    """Write ``preset``'s values into ``node`` in place (a dict, or ruamel's commented map)."""
    for key, value in preset.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            _set(node[key], value)
        else:
            node[key] = value
