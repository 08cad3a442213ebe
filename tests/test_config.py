"""params.yaml is loaded into typed, frozen dataclasses; bad params fail fast with a clear
message."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from i2i import params_check
from i2i.config import ParamsError, load_params, params_from_dict, to_dict
from i2i.model_registry import resolve
from tests.conftest import REPO, default_params, tiny_params, write_params


def test_default_params_load_and_round_trip():
    params = load_params(REPO / "params.yaml")
    assert params.data.dataset == "shapes"
    assert to_dict(params) == default_params()  # as loaded: every model's section as written
    resolved = resolve(params)
    raw = default_params()
    # resolved, the model section keeps the selected model's section; the others are checked only
    raw["model"] = {"name": "cyclegan", "cyclegan": raw["model"]["cyclegan"]}
    assert to_dict(resolved) == raw
    assert resolve(params_from_dict({**default_params(), "model": raw["model"]})) == resolved


def test_loading_params_imports_no_model_code():
    """Only a stage that uses a model imports the models' code (and re-runs when it changes)."""
    code = (
        "import sys; from i2i.config import load_params; load_params('params.yaml'); "
        "print(sorted(m for m in sys.modules if m.startswith('i2i')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "i2i.config" in out and "i2i.model" not in out and "torch" not in out


def test_params_are_frozen():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.data.load_size = 3  # type: ignore[misc]


def test_every_key_in_params_yaml_has_a_comment():
    for n, line in enumerate((REPO / "params.yaml").read_text().splitlines(), 1):
        if (
            line.strip()
            and not line.lstrip().startswith("#")
            and ":" in line
            and not line.endswith(":")
        ):
            assert "#" in line, f"params.yaml line {n} has no comment: {line!r}"


def _error(params: dict) -> str:
    """The error of loading ``params`` and validating it whole, as the params stage does."""
    with pytest.raises(ParamsError) as e:
        params_check.validate(params_from_dict(params, source="p.yaml"), "p.yaml")
    return str(e.value)


def test_unknown_key_is_named_with_a_suggestion():
    p = default_params()
    p["data"]["load_szie"] = 64
    msg = _error(p)
    assert "p.yaml" in msg and "'data.load_szie'" in msg and "did you mean 'data.load_size'" in msg


def test_unknown_section_is_named():
    p = default_params()
    p["trian"] = {}
    assert "unknown key 'trian'" in _error(p)


def test_missing_key_is_named():
    p = default_params()
    del p["train"]["seed"]
    assert "missing key 'train.seed'" in _error(p)


def test_a_params_file_from_before_the_per_stage_devices_says_what_to_add():
    p = default_params()
    p["train"]["winograd"] = False
    assert "unknown key 'train.winograd' (removed: speed comes from train.compile" in _error(p)
    del p["train"]["winograd"], p["sample"]["device"]
    assert "missing key 'sample.device' (add `device: auto`" in _error(p)


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("data", "load_size", "big", "data.load_size = 'big': expected an integer"),
        ("data", "load_size", True, "data.load_size = True: expected an integer"),
        ("data", "load_size", 3, "data.load_size = 3: must be >= 8"),
        ("data", "flip", "yes", "data.flip = 'yes': expected true or false"),
        ("data", "crop_size", 128, "data.crop_size = 128: must be <= data.load_size (64)"),
        ("data", "dataset", "imagenet", "data.dataset = 'imagenet': expected one of"),
        ("data", "mirror", "ftp://x", "data.mirror = 'ftp://x': expected an http://"),
        ("model", "name", "pix2pix", "model.name = 'pix2pix': expected one of cyclegan, munit"),
        ("loss", "vgg_w", -1, "loss.vgg_w = -1.0: must be >= 0"),
        ("evaluate", "metrics", ["fid", "psnr"], "evaluate.metrics = 'psnr': unknown metric"),
        ("evaluate", "metrics", "fid", "evaluate.metrics = 'fid': expected a list"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(section, key, value, expected):
    p = default_params()
    p[section][key] = value
    assert expected in _error(p)


def test_nested_section_errors_use_dotted_keys():
    p = default_params()
    p["data"]["shapes"]["num_modes"] = 9
    assert "data.shapes.num_modes = 9: must be <= 8" in _error(p)


def test_folder_dataset_needs_a_path():
    p = default_params()
    p["data"]["dataset"] = "folder"
    assert "data.path = ''" in _error(p)


def test_int_is_accepted_where_a_float_is_expected():
    p = default_params()
    p["loss"]["vgg_w"] = 1
    assert params_from_dict(p).loss.vgg_w == 1.0


@pytest.mark.parametrize(
    "text, value", [("1e-4", 1e-4), ("1e+30", 1e30), ("2.5E3", 2500.0), (".5e-2", 0.005)]
)
def test_exponent_floats_as_dvc_writes_them_are_numbers(tmp_path: Path, text: str, value: float):
    """`dvc exp run -S train.lr=1e30` writes `lr: 1e+30`, a string under PyYAML's YAML 1.1 rules."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(default_params()).replace("lr: 0.0002", f"lr: {text}"))
    assert load_params(path).train.lr == value
    path.write_text(yaml.safe_dump(default_params()).replace("lr: 0.0002", "lr: e5"))
    with pytest.raises(ParamsError, match="train.lr = 'e5': expected a number"):
        load_params(path)


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="must be a mapping"):
        load_params(bad)


def test_stage_with_bad_params_stops_before_any_work(tmp_path: Path):
    p = tiny_params()
    p["data"]["load_size"] = -3
    params = write_params(tmp_path / "bad.yaml", p)
    out = tmp_path / "raw"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages/download.py"),
            "--params",
            str(params),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "data.load_size = -3: must be >= 8" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_any_stage_can_read_another_params_file(tmp_path: Path):
    params = write_params(tmp_path / "other.yaml", tiny_params(seed=7))
    proc = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "params", "--params", str(params)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["data"]["seed"] == 7


@pytest.mark.parametrize(
    "section, key", [("tracking", "uri"), ("data", "mirror"), ("backbones", "mirror")]
)
def test_a_url_with_credentials_is_refused_without_repeating_them(section, key):
    """params.yaml and dvc.lock are committed and pushed: a password there travels."""
    p = default_params()
    p[section][key] = "https://alice:s3cret@mlflow.lab.example:5000/"
    with pytest.raises(ParamsError) as e:
        params_from_dict(p)
    message = str(e.value)
    assert f"{section}.{key}" in message and "MLFLOW_TRACKING_PASSWORD" in message
    assert "s3cret" not in message and "alice" not in message
    p[section][key] = "https://mlflow.lab.example:5000/"  # the same URL without them is fine
    params_from_dict(p)
