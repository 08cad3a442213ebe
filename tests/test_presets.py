"""Presets hold what differs from params.yaml; `i2i preset` writes them in, keeping the rest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from i2i.config import ParamsError, load_params
from i2i.model_registry import resolve
from i2i.presets import apply, overlay
from tests.conftest import REPO

BIN = Path(sys.executable).parent

# The published settings, from the papers and reference code (docs/references.md), written out
# here rather than read from the preset files.
CYCLEGAN = {
    ("data", "dataset"): "horse2zebra",
    ("data", "load_size"): 286,
    ("data", "crop_size"): 256,
    ("train", "iterations"): 266_800,  # 200 epochs of 1334 images at batch 1
    ("train", "batch_size"): 1,
    ("train", "lr"): 2e-4,
    ("train", "schedule"): "linear",
    ("train", "decay_start"): 0.5,
    ("loss", "gan_mode"): "lsgan",
    ("loss", "lambda_a"): 10.0,
    ("loss", "identity_w"): 0.5,
    ("loss", "pool_size"): 50,
}
CYCLEGAN_NETS = {"generator": "resnet", "n_blocks": 9, "ngf": 64, "ndf": 64}
MUNIT = {
    ("data", "dataset"): "edges2shoes",
    ("data", "crop_size"): 256,
    ("train", "iterations"): 1_000_000,
    ("train", "batch_size"): 1,
    ("train", "lr"): 1e-4,
    ("train", "weight_decay"): 1e-4,
    ("train", "schedule"): "step",
    ("train", "step_size"): 100_000,
    ("train", "gamma"): 0.5,
    ("loss", "recon_x_w"): 10.0,
}
MUNIT_NETS = {"dim": 64, "mlp_dim": 256, "style_dim": 8, "n_res": 4, "dis_dim": 64}


@pytest.mark.parametrize(
    "preset, model, expected, nets",
    [
        ("cyclegan_horse2zebra.yaml", "cyclegan", CYCLEGAN, CYCLEGAN_NETS),
        ("munit_edges2shoes.yaml", "munit", MUNIT, MUNIT_NETS),
    ],
)
def test_a_preset_on_the_default_params_is_the_published_setting(
    tmp_path: Path, preset: str, model: str, expected: dict, nets: dict
):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    out = subprocess.run(
        [str(BIN / "i2i"), "preset", str(REPO / "presets" / preset), "--params", str(params)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p = resolve(load_params(params))
    assert p.model.name == model
    for (section, key), value in expected.items():
        assert getattr(getattr(p, section), key) == value, (section, key)
    for key, value in nets.items():
        assert getattr(p.model.section, key) == value, key
    # Only the values changed: every other line, comments included, is as it was.
    before = (REPO / "params.yaml").read_text().splitlines()
    after = params.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and f"{len(changed)} values set" in out
    assert all(a.split("#", 1)[1] == b.split("#", 1)[1] for a, b in changed)  # comments kept


def test_a_preset_that_does_not_validate_writes_nothing(tmp_path: Path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    original = params.read_bytes()
    preset = tmp_path / "bad.yaml"
    preset.write_text("model:\n  cyclegan:\n    ngff: 64\n")
    with pytest.raises(ParamsError, match=r"bad.yaml.*'model.cyclegan.ngff'.*did you mean"):
        apply(preset, params)
    preset.write_text("- not a mapping\n")
    with pytest.raises(ParamsError, match="bad.yaml: a preset is a mapping"):
        apply(preset, params)
    assert params.read_bytes() == original


def test_overlay_merges_mappings_and_replaces_the_rest():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert overlay(base, {"a": {"y": [3]}, "c": {"z": 1}}) == {
        "a": {"x": 1, "y": [3]},
        "b": 2,
        "c": {"z": 1},
    }
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}  # not changed in place
