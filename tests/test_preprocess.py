"""Preprocessing: every image mode becomes RGB, bad files are skipped with a reason, output is
exact."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.config import params_from_dict
from i2i.data.loader import DomainImages
from i2i.data.preprocess import PreprocessError, preprocess
from tests.conftest import save_image, solid, tiny_params

CFG = params_from_dict(tiny_params(load_size=16, crop_size=16)).data


def make_raw(root: Path, layout: str = "unpaired") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(
        json.dumps({"name": "t", "layout": layout, "origin": "test"})
    )
    return root


def fill_plain(raw: Path, skip: tuple[str, ...] = ()) -> None:
    for folder in ("trainA", "trainB", "testA", "testB"):
        if folder not in skip:
            save_image(raw / folder / "plain.png", solid(20, 20, (10, 20, 30)))


def test_image_modes_are_converted_to_rgb_and_bad_files_skipped(tmp_path: Path, monkeypatch):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw, skip=("trainA",))
    a = raw / "trainA"
    save_image(a / "gray.png", np.full((20, 20), 77, np.uint8))
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 10, 20))
    pal.info["transparency"] = 0
    pal.save(a / "palette.png", transparency=0)  # left half red, right half transparent
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (0, 0, 255, 255)
    save_image(a / "rgba.png", rgba)  # right half fully transparent black
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(a / "cmyk.jpg")  # red in CMYK
    g16 = np.zeros((20, 20), np.uint16)
    g16[:, :10], g16[:, 10:] = 65535, 32896
    Image.fromarray(g16).save(a / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(solid(20, 40, 128)).save(
        a / "rotated.jpg", exif=exif
    )  # stored 40 wide, 20 high
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        png, "PNG"
    )
    (a / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    jpg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        jpg, "JPEG"
    )
    (a / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (a / "empty.png").write_bytes(b"")
    (a / "notes.png").write_text("not an image at all")
    (a / "readme.txt").write_text("hello")
    (a / ".DS_Store").write_bytes(b"\0\1")
    save_image(a / "bomb.png", np.zeros((200, 200), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # 200x200 = 40000 pixels is too many

    report = preprocess(raw, tmp_path / "out", CFG)

    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {
        "truncated.png",
        "truncated.jpg",
        "empty.png",
        "notes.png",
        "readme.txt",
        "bomb.png",
    }
    assert "empty file" in reasons["empty.png"]
    assert "not an image" in reasons["notes.png"]
    assert "truncated" in reasons["truncated.jpg"] or "unreadable" in reasons["truncated.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]
    assert "not an image file type (.txt)" in reasons["readme.txt"]
    assert report["counts"]["train_a"] == 6

    part = DomainImages(tmp_path / "out" / "train_a")
    got = {name: part.image(i) for i, name in enumerate(part.names)}
    assert set(got) == {
        "gray.png",
        "palette.png",
        "rgba.png",
        "cmyk.jpg",
        "gray16.png",
        "rotated.jpg",
    }
    assert all(im.dtype == np.uint8 and im.shape[2] == 3 for im in got.values())
    assert (got["gray.png"] == 77).all()
    np.testing.assert_array_equal(got["palette.png"][8, 2], [200, 0, 0])
    np.testing.assert_array_equal(
        got["palette.png"][8, 13], [255, 255, 255]
    )  # transparent -> white
    np.testing.assert_array_equal(got["rgba.png"][8, 2], [0, 0, 255])
    np.testing.assert_array_equal(got["rgba.png"][8, 13], [255, 255, 255])
    assert got["cmyk.jpg"][8, 8, 0] > 200 and got["cmyk.jpg"][8, 8, 1:].max() < 60
    assert (
        got["gray16.png"][8, 2, 0] == 255 and got["gray16.png"][8, 13, 0] == 128
    )  # scaled, not clipped
    assert got["rotated.jpg"].shape == (32, 16, 3)  # upright: 20 wide, 40 high -> shorter side 16


def test_shorter_side_is_resized_keeping_aspect(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw)
    save_image(raw / "trainB" / "wide.png", solid(40, 100, 50))
    preprocess(raw, tmp_path / "out", CFG)
    part = DomainImages(tmp_path / "out" / "train_b")
    assert part.image(part.names.index("wide.png")).shape == (16, 40, 3)
    assert part.image(part.names.index("plain.png")).shape == (16, 16, 3)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["parts"]["train_b"]["width"] == [16, 40]


def test_a_domain_left_without_images_is_an_error_naming_the_folder(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw, skip=("testB",))
    (raw / "testB").mkdir()
    (raw / "testB" / "broken.jpg").write_bytes(b"")
    with pytest.raises(PreprocessError) as e:
        preprocess(raw, tmp_path / "out", CFG)
    assert str(raw / "testB") in str(e.value) and "no usable images" in str(e.value)
    assert "broken.jpg: empty file" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_missing_folder_is_named(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw, skip=("trainB",))
    with pytest.raises(PreprocessError, match=r"trainB: folder missing"):
        preprocess(raw, tmp_path / "out", CFG)


def test_failed_run_keeps_the_previous_output(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw)
    out = tmp_path / "out"
    first = preprocess(raw, out, CFG)
    (raw / "testA" / "plain.png").write_bytes(b"")
    with pytest.raises(PreprocessError):
        preprocess(raw, out, CFG)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content_hash"] == first["content_hash"]
    assert DomainImages(out / "test_a").image(0).shape == (16, 16, 3)
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".")
    ] == []  # no temp folders left


def test_class_subfolders_become_labels_shared_across_splits(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw, skip=("trainB", "testB"))
    save_image(raw / "trainB" / "cat" / "1.png", solid(20, 20, 1))
    save_image(raw / "trainB" / "dog" / "2.png", solid(20, 20, 2))
    save_image(raw / "testB" / "dog" / "3.png", solid(20, 20, 3))
    preprocess(raw, tmp_path / "out", CFG)
    train, test = (
        DomainImages(tmp_path / "out" / "train_b"),
        DomainImages(tmp_path / "out" / "test_b"),
    )
    assert train.classes == test.classes == ["cat", "dog"]
    assert list(train.labels) == [0, 1] and list(test.labels) == [1]
    assert DomainImages(tmp_path / "out" / "train_a").classes == []
    assert list(DomainImages(tmp_path / "out" / "train_a").labels) == [-1]


def test_content_hash_is_stable_and_tracks_content(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw)
    h1 = preprocess(raw, tmp_path / "o1", CFG)["content_hash"]
    assert preprocess(raw, tmp_path / "o2", CFG)["content_hash"] == h1
    save_image(raw / "trainA" / "plain.png", solid(20, 20, (10, 20, 31)))
    assert preprocess(raw, tmp_path / "o3", CFG)["content_hash"] != h1


def test_paired_layout_is_split_into_halves_and_val_is_test(tmp_path: Path):
    raw = make_raw(tmp_path / "raw", layout="paired")
    pair = np.concatenate([solid(20, 20, 0), solid(20, 20, 255)], axis=1)  # [edges | photo]
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            save_image(raw / split / f"{i}_AB.jpg", pair)
    report = preprocess(raw, tmp_path / "out", CFG)
    assert report["counts"] == {"train_a": 3, "test_a": 2, "train_b": 3, "test_b": 2}
    a, b = DomainImages(tmp_path / "out" / "train_a"), DomainImages(tmp_path / "out" / "train_b")
    assert a.image(0).shape == b.image(0).shape == (16, 16, 3)
    assert a.image(0).max() < 30 and b.image(0).min() > 225


def test_worker_processes_give_the_same_cache(tmp_path: Path):
    raw = make_raw(tmp_path / "raw")
    fill_plain(raw)
    rng = np.random.default_rng(0)
    for i in range(40):
        save_image(
            raw / "trainA" / f"r{i:02d}.png", rng.integers(0, 255, (20 + i, 24, 3), np.uint8)
        )
    serial = preprocess(raw, tmp_path / "o0", CFG)
    parallel = preprocess(raw, tmp_path / "o2", dataclasses.replace(CFG, num_workers=2))
    assert parallel["content_hash"] == serial["content_hash"]
    assert parallel["counts"]["train_a"] == 41
