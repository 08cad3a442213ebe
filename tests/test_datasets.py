"""The download stage for every kind of source, end to end into the preprocessed cache."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.cache import datasets_dir
from i2i.config import ShapesConfig, params_from_dict
from i2i.data import shapes
from i2i.data.archive import UnsafeArchiveError
from i2i.data.download import DatasetLayoutError, download
from i2i.data.fetch import DownloadError
from i2i.data.loader import DomainImages
from i2i.data.preprocess import preprocess
from tests.conftest import save_image, solid, tiny_params


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def cfg(**overrides):
    return params_from_dict(tiny_params(**overrides)).data


def test_cyclegan_zip_is_downloaded_extracted_and_preprocessed(server, tmp_path: Path):
    counts = {"trainA": 3, "trainB": 2, "testA": 1, "testB": 2}
    with zipfile.ZipFile(server.root / "horse2zebra.zip", "w") as zf:
        for folder, n in counts.items():
            for i in range(n):
                zf.writestr(f"horse2zebra/{folder}/n{i}.jpg", png(solid(24, 24, 40 * i), "JPEG"))
    c = cfg(dataset="horse2zebra", mirror=server.url)
    info = download(c, tmp_path / "raw")
    assert info["origin"] == server.url + "horse2zebra.zip"
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "dataset.json",
        "testA",
        "testB",
        "trainA",
        "trainB",
    ]
    report = preprocess(tmp_path / "raw", tmp_path / "prepared", c)
    assert report["counts"] == {"train_a": 3, "test_a": 1, "train_b": 2, "test_b": 2}
    # The archive is cached: a second download stage run makes no request.
    download(c, tmp_path / "raw2")
    assert len(server.log) == 1


def test_edges2shoes_tar_is_split_into_edges_and_photos(server, tmp_path: Path):
    pair = np.concatenate([solid(16, 16, 0), solid(16, 16, 250)], axis=1)
    with tarfile.open(server.root / "edges2shoes.tar.gz", "w:gz") as tf:
        for split, n in (("train", 4), ("val", 2)):
            for i in range(n):
                data = png(pair, "JPEG")
                info = tarfile.TarInfo(f"edges2shoes/{split}/{i}_AB.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    c = cfg(dataset="edges2shoes", mirror=server.url, load_size=16, crop_size=16)
    assert download(c, tmp_path / "raw")["layout"] == "paired"
    report = preprocess(tmp_path / "raw", tmp_path / "prepared", c)
    assert report["counts"] == {"train_a": 4, "test_a": 2, "train_b": 4, "test_b": 2}
    assert DomainImages(tmp_path / "prepared" / "test_a").image(0).max() < 30
    assert DomainImages(tmp_path / "prepared" / "test_b").image(0).min() > 220


def test_archive_without_the_layout_is_a_clear_error(server, tmp_path: Path):
    with zipfile.ZipFile(server.root / "maps.zip", "w") as zf:
        zf.writestr("maps/train/1.jpg", png(solid(8, 8, 0)))
    with pytest.raises(DatasetLayoutError, match="no folder holding trainA, trainB, testA, testB"):
        download(cfg(dataset="maps", mirror=server.url), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_dead_host_error_says_where_to_place_the_archive(server, tmp_path: Path):
    with pytest.raises(DownloadError) as e:
        download(cfg(dataset="monet2photo", mirror=server.url), tmp_path / "raw")
    assert "monet2photo.zip" in str(e.value) and "i2i-cache/datasets/monet2photo.zip" in str(
        e.value
    )


def test_user_folder_is_copied_with_masks(tmp_path: Path):
    src = tmp_path / "mine"
    for folder in ("trainA", "trainB", "testA", "testB"):
        save_image(src / folder / "x.png", solid(10, 10, 9))
        save_image(src / "masks" / folder / "x.png", np.full((10, 10), 255, np.uint8))
    c = cfg(dataset="folder", path=str(src), load_size=8, crop_size=8)
    download(c, tmp_path / "raw")
    assert (tmp_path / "raw" / "masks" / "trainA" / "x.png").is_file()
    preprocess(tmp_path / "raw", tmp_path / "prepared", c)
    assert DomainImages(tmp_path / "prepared" / "train_a").mask(0).all()


def test_user_folder_with_missing_parts_names_them(tmp_path: Path):
    src = tmp_path / "mine"
    save_image(src / "trainA" / "x.png", solid(10, 10, 9))
    with pytest.raises(DatasetLayoutError, match="missing sub-folder\\(s\\) trainB, testA, testB"):
        download(cfg(dataset="folder", path=str(src)), tmp_path / "raw")


SHAPES = ShapesConfig(image_size=32, num_train=12, num_test=4, num_modes=4, max_shapes=3)


def test_shapes_are_deterministic_per_seed_and_stable_across_counts():
    first = shapes.render(0, "train", "b", 5, SHAPES)
    again = shapes.render(0, "train", "b", 5, SHAPES)
    assert all(np.array_equal(x, y) for x, y in zip(first[:2], again[:2])) and first[2] == again[2]
    other = shapes.render(1, "train", "b", 5, SHAPES)
    assert not np.array_equal(first[0], other[0])
    more = ShapesConfig(image_size=32, num_train=500, num_test=4, num_modes=4, max_shapes=3)
    assert np.array_equal(shapes.render(0, "train", "b", 5, more)[0], first[0])


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = np.zeros_like(mask)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_shapes_domains_follow_their_geometry_masks():
    for i in range(20):
        a, mask_a, label_a = shapes.render(0, "train", "a", i, SHAPES)
        b, mask_b, label_b = shapes.render(0, "train", "b", i, SHAPES)
        assert label_a == -1 and 0 <= label_b < SHAPES.num_modes
        assert mask_a.any() and mask_b.any()
        # B: filled (non-white) inside the mask, pure white background away from it; only the
        # anti-aliased rim (and the thin tips of sharp corners) may be in between.
        interior, exterior = ~dilate(~mask_b, 1), ~dilate(mask_b, 2)
        assert (b[interior] < 235).any(axis=1).all()
        assert (b[exterior] == 255).all()
        # A: black ink only along outlines, so far less ink than mask area, all near the mask.
        ink = a[..., 0] < 128
        assert 0 < ink.sum() < mask_a.sum()
        assert (ink & ~dilate(mask_a, 2)).sum() == 0
        assert (a == a[..., :1]).all()  # greyscale line drawing


def test_shapes_modes_are_distinct_colour_families():
    means = {}
    for i in range(200):
        b, mask, label = shapes.render(0, "train", "b", i, SHAPES)
        means.setdefault(label, []).append(b[mask].astype(float).mean(axis=0))
    assert sorted(means) == [0, 1, 2, 3]  # every mode occurs
    centres = {k: np.mean(v, axis=0) for k, v in means.items()}
    spread = max(np.std(v, axis=0).max() for v in means.values())
    gaps = [np.abs(centres[i] - centres[j]).max() for i in centres for j in centres if i < j]
    assert min(gaps) > 3 * spread  # modes are far apart relative to their own variation


def test_shapes_download_writes_labelled_layout(tmp_path: Path):
    c = cfg()
    download(c, tmp_path / "raw")
    b_files = sorted((tmp_path / "raw" / "trainB").rglob("*.png"))
    assert len(b_files) == 6 and all(f.parent.name.split("_")[0].isdigit() for f in b_files)
    assert len(list((tmp_path / "raw" / "masks" / "trainB").rglob("*.png"))) == 6
    preprocess(tmp_path / "raw", tmp_path / "prepared", c)
    b = DomainImages(tmp_path / "prepared" / "train_b")
    # All K modes are classes even when a tiny set misses some, so label k always means mode k.
    assert b.has_masks and b.classes == [m.name for m in shapes.MODES[:4]]
    for i in range(len(b)):
        _, mask, label = shapes.render(0, "train", "b", int(b.names[i].split("/")[1][:5]), c.shapes)
        assert (
            np.array_equal(b.mask(i), mask) and b.classes[b.labels[i]] == shapes.MODES[label].name
        )


def test_malicious_dataset_archive_from_the_server_is_refused(server, tmp_path: Path):
    with zipfile.ZipFile(server.root / "facades.zip", "w") as zf:
        for folder in ("trainA", "trainB", "testA", "testB"):
            zf.writestr(f"facades/{folder}/1.png", png(solid(8, 8, 0)))
        zf.writestr("facades/../../../escaped.txt", b"pwned")
    with pytest.raises(UnsafeArchiveError, match="'facades/../../../escaped.txt'"):
        download(cfg(dataset="facades", mirror=server.url), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_cached_archive_that_changed_since_its_first_download_is_refused(server, tmp_path: Path):
    def publish(pixel: int) -> None:
        with zipfile.ZipFile(server.root / "facades.zip", "w") as zf:
            for folder in ("trainA", "trainB", "testA", "testB"):
                zf.writestr(f"facades/{folder}/1.png", png(solid(8, 8, pixel)))

    publish(0)
    c = cfg(dataset="facades", mirror=server.url)
    download(c, tmp_path / "raw")
    cached = datasets_dir() / "facades.zip"
    first = hashlib.sha256(cached.read_bytes()).hexdigest()
    record = json.loads(cached.with_name("facades.zip.sha256.json").read_text())
    assert record["sha256"] == first
    # Another archive under the same name in the shared cache (another user, a mirror swap).
    publish(255)
    swapped = (server.root / "facades.zip").read_bytes()
    cached.write_bytes(swapped)
    with pytest.raises(DownloadError) as e:
        download(c, tmp_path / "raw")
    assert first in str(e.value) and hashlib.sha256(swapped).hexdigest() in str(e.value)
    assert str(cached) in str(e.value)
    # What the stage wrote before is untouched.
    assert (tmp_path / "raw" / "trainA" / "1.png").read_bytes() == png(solid(8, 8, 0))


def test_an_archive_that_unpacks_past_the_cap_is_refused_before_a_byte_is_written(
    server, tmp_path: Path
):
    """A zip bomb as the download stage meets it, under the default cap (64 GiB): 17 entries
    whose size fields say 4 GiB each, in a file of a few kilobytes."""
    archive = server.root / "facades.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in ("trainA", "trainB", "testA", "testB"):
            zf.writestr(f"facades/{folder}/1.png", png(solid(8, 8, 0)))
        for i in range(17):
            zf.writestr(f"facades/trainA/bomb{i}.bin", b"\0" * 1000)
    data = bytearray(archive.read_bytes())
    at = data.find(b"PK\x01\x02")  # the central directory: each entry's declared size
    while at != -1:
        name_len = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + name_len].startswith(b"facades/trainA/bomb"):
            data[at + 24 : at + 28] = (0xFFFFFFFE).to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 46)
    archive.write_bytes(bytes(data))
    assert archive.stat().st_size < 10_000
    with pytest.raises(UnsafeArchiveError, match=r"unpacks to 68\.00 GiB, more than the 64\.00"):
        download(cfg(dataset="facades", mirror=server.url), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".raw*"))
