"""`i2i translate`: any image size, the preprocess stage's reader, names that mirror the inputs,
MUNIT's shared styles and example styles, and one-line errors, through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from i2i import checkpoint
from i2i.config import params_from_dict, to_dict
from i2i.data.loader import to_model_input
from i2i.grids import to_uint8
from i2i.models import build_networks, load_generators
from tests.conftest import REPO, save_image
from tests.train_helpers import tiny_train_params

BIN = Path(sys.executable).parent


def generator_file(folder: Path, name: str) -> Path:
    """Seeded untrained generators of the tiny config, exported as the train stage does."""
    cfg = params_from_dict(tiny_train_params(name)).model
    torch.manual_seed(0)
    nets = build_networks(cfg, discriminators=False)
    path = folder / f"{name}.pt"
    checkpoint.export_generators(path, name, to_dict(cfg), nets.G, {"iterations": 0})
    return path


def i2i(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "i2i"), "translate", *args], cwd=cwd, capture_output=True, text=True
    )


def expected(model: Path, image: np.ndarray, direction: str, styles=None) -> list[np.ndarray]:
    """The translation worked out here: reflect-pad to a multiple of 4, run, crop back."""
    nets = load_generators(model)
    x = to_model_input(torch.from_numpy(image)[None], "cpu")
    h, w = image.shape[:2]
    x = F.pad(x, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
    with torch.no_grad():
        y = nets.translate(x, direction, styles)[0]
    return [to_uint8(o[None, :, :h, :w])[0] for o in y]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    save_image(folder / "odd.png", rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    save_image(folder / "sub" / "wide.jpg", rng.integers(0, 256, (24, 61, 3), dtype=np.uint8))
    grey16 = (rng.integers(0, 65536, (30, 30))).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")  # 16-bit: scaled, not clipped
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated
    return folder


def test_any_size_is_translated_at_its_own_size_and_bad_files_are_skipped(photos, tmp_path):
    model = generator_file(tmp_path, "cyclegan")
    proc = i2i(
        str(photos), "--model", str(model), "--direction", "ab", "--out", "out", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stderr and "broken.png" in proc.stderr
    out = tmp_path / "out"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["grey16.png", "odd.png", "sub/wide.png"]  # names mirror the inputs
    odd = np.asarray(Image.open(photos / "odd.png"))
    result = np.asarray(Image.open(out / "odd.png"))
    assert result.shape == odd.shape
    assert np.abs(result.astype(int) - expected(model, odd, "ab")[0].astype(int)).max() <= 1
    assert np.asarray(Image.open(out / "sub" / "wide.png")).shape == (24, 61, 3)


def test_size_resizes_the_shorter_side_first(photos, tmp_path):
    model = generator_file(tmp_path, "cyclegan")
    proc = i2i(
        str(photos / "odd.png"),
        "--model",
        str(model),
        "--direction",
        "ba",
        "--out",
        "o",
        "--size",
        "20",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "o" / "odd.png").size == (27, 20)  # 50 x 37 -> 27 x 20


def test_munit_styles_are_shared_by_every_input_and_examples_and_grids_work(photos, tmp_path):
    model = generator_file(tmp_path, "munit")
    args = ["--model", str(model), "--direction", "ab", "--styles", "3", "--seed", "5", "--grid"]
    proc = i2i(str(photos / "odd.png"), str(photos / "sub"), *args, "--out", "o", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "o"
    names = sorted(p.name for p in out.rglob("*.png"))
    assert names == [
        "grid.png",
        *[f"{n}_style_{k:02d}.png" for n in ("odd", "wide") for k in range(3)],
    ]
    styles = torch.randn(3, 8, 1, 1, generator=torch.Generator().manual_seed(5))
    # odd.png is 37 x 50: MUNIT pads to at least 16 and a multiple of 4, which 40 x 52 is.
    odd = np.asarray(Image.open(photos / "odd.png"))
    for k, image in enumerate(expected(model, odd, "ab", styles)):
        assert (
            np.abs(
                np.asarray(Image.open(out / f"odd_style_{k:02d}.png")).astype(int)
                - image.astype(int)
            ).max()
            <= 1
        )
    proc = i2i(
        str(photos / "odd.png"),
        "--model",
        str(model),
        "--direction",
        "ab",
        "--example",
        str(photos / "sub" / "wide.jpg"),
        "--out",
        "e",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "e").iterdir()] == ["odd_example.png"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing model", "no-such.pt: no such model file"),
        ("another tool's file", "of i2i train or of a reference: junyanz's CycleGAN"),
        ("empty folder", "no image files in"),
        ("over the inputs", "an input would be overwritten"),
        ("two inputs, one output", "would both be written to"),
        ("an input named like the sheet", "where --grid puts the contact sheet"),
        ("style on cyclegan", "--styles and --example need a model with style codes"),
        ("not a dvc experiment", "not a model file, an MLflow URI"),
    ],
)
def test_bad_requests_get_one_line_and_write_nothing(case, message, photos, tmp_path):
    model = str(generator_file(tmp_path, "cyclegan"))
    other = tmp_path / "net_G.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, other)
    (tmp_path / "empty").mkdir()
    before = sorted(photos.rglob("*"))
    inputs, out, extra = [str(photos)], "out", []
    if case == "missing model":
        model = "no-such.pt"
    elif case == "another tool's file":
        model = str(other)
    elif case == "empty folder":
        inputs = [str(tmp_path / "empty")]
    elif case == "over the inputs":
        inputs, out = [str(photos / "odd.png")], str(photos)
    elif case == "two inputs, one output":  # odd.png and odd.jpg both give odd.png
        save_image(photos / "odd.jpg", np.zeros((8, 8, 3), np.uint8))
        before = sorted(photos.rglob("*"))
    elif case == "an input named like the sheet":
        save_image(photos / "grid.png", np.zeros((8, 8, 3), np.uint8))
        before, extra = sorted(photos.rglob("*")), ["--grid"]
    elif case == "style on cyclegan":
        extra = ["--styles", "2"]
    elif case == "not a dvc experiment":
        model = "no-such-experiment"
    proc = i2i(*inputs, "--model", model, "--direction", "ab", "--out", out, *extra, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and sorted(photos.rglob("*")) == before


def test_a_wrong_direction_is_refused_by_the_command_line(photos, tmp_path):
    model = str(generator_file(tmp_path, "cyclegan"))
    proc = i2i(str(photos), "--model", model, "--direction", "aa", "--out", "o", cwd=REPO)
    assert proc.returncode == 2 and "'aa' is not one of 'ab', 'ba'" in proc.stderr


def test_raw_picks_the_trained_weights_over_their_moving_average(photos, tmp_path):
    cfg = params_from_dict(tiny_train_params("cyclegan")).model
    torch.manual_seed(0)
    average = build_networks(cfg, discriminators=False)
    torch.manual_seed(1)
    trained = build_networks(cfg, discriminators=False)
    model = tmp_path / "g.pt"
    checkpoint.export_generators(model, "cyclegan", to_dict(cfg), average.G, {}, raw=trained.G)
    odd = np.asarray(Image.open(photos / "odd.png"))
    for flag, out in (([], "avg"), (["--raw"], "raw")):
        args = [str(photos / "odd.png"), "--model", str(model), "--direction", "ab", *flag]
        assert i2i(*args, "--out", out, cwd=tmp_path).returncode == 0
    average_file = generator_file(tmp_path, "cyclegan")  # seeded 0, as the average above
    got = {o: np.asarray(Image.open(tmp_path / o / "odd.png")).astype(int) for o in ("avg", "raw")}
    assert np.abs(got["avg"] - expected(average_file, odd, "ab")[0]).max() <= 1
    assert np.abs(got["raw"] - got["avg"]).max() > 1
