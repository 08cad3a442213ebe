"""Archives extract whole or not at all, and never write outside their destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from i2i.data.archive import UnsafeArchiveError, extract


def make_zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(
    path: Path, entries: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None
) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return path


GOOD = {"ds/trainA/1.png": b"a", "ds/testB/2.png": b"b"}


def test_zip_and_tar_extract_all_entries(tmp_path: Path):
    for archive in (make_zip(tmp_path / "x.zip", GOOD), make_tar(tmp_path / "x.tar.gz", GOOD)):
        dest = extract(archive, tmp_path / archive.name.replace(".", "_"))
        assert (dest / "ds/trainA/1.png").read_bytes() == b"a"
        assert (dest / "ds/testB/2.png").read_bytes() == b"b"


@pytest.mark.parametrize(
    "bad_name", ["../evil.txt", "ds/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"]
)
def test_path_traversal_entries_are_refused_and_nothing_is_written(tmp_path: Path, bad_name: str):
    for maker, suffix in ((make_zip, ".zip"), (make_tar, ".tar.gz")):
        archive = maker(tmp_path / f"evil{suffix}", {**GOOD, bad_name: b"pwned"})
        dest = tmp_path / "dest"
        with pytest.raises(UnsafeArchiveError) as e:
            extract(archive, dest)
        assert repr(bad_name) in str(e.value) and str(archive) in str(e.value)
        assert not dest.exists()
        assert not (tmp_path / "evil.txt").exists()
        assert [p.name for p in tmp_path.iterdir()] == [archive.name]
        archive.unlink()


def test_symlink_out_of_the_destination_is_refused(tmp_path: Path):
    archives = [
        make_zip(tmp_path / "l.zip", GOOD, links={"ds/passwd": "../../../etc/passwd"}),
        make_tar(
            tmp_path / "s.tar.gz", GOOD, links={"ds/passwd": (tarfile.SYMTYPE, "/etc/passwd")}
        ),
        make_tar(tmp_path / "h.tar.gz", GOOD, links={"ds/hard": (tarfile.LNKTYPE, "../outside")}),
    ]
    for archive in archives:
        with pytest.raises(UnsafeArchiveError, match="outside the destination") as e:
            extract(archive, tmp_path / "dest")
        assert "ds/" in str(e.value)
        assert not (tmp_path / "dest").exists()


def test_symlink_inside_the_destination_is_kept(tmp_path: Path):
    archive = make_tar(
        tmp_path / "ok.tar.gz", GOOD, links={"ds/alias.png": (tarfile.SYMTYPE, "trainA/1.png")}
    )
    dest = extract(archive, tmp_path / "dest")
    assert (dest / "ds/alias.png").read_bytes() == b"a"


def test_device_entries_are_refused(tmp_path: Path):
    archive = make_tar(tmp_path / "d.tar.gz", GOOD, links={"ds/null": (tarfile.CHRTYPE, "")})
    with pytest.raises(UnsafeArchiveError, match="device or FIFO"):
        extract(archive, tmp_path / "dest")


def test_corrupt_archive_keeps_the_previous_extraction(tmp_path: Path):
    dest = extract(make_zip(tmp_path / "x.zip", GOOD), tmp_path / "dest")
    data = make_zip(
        tmp_path / "big.zip", {f"f{i}": os.urandom(5000) for i in range(20)}
    ).read_bytes()
    corrupt = tmp_path / "corrupt.zip"
    # Keep the central directory (so it still looks like a zip) but scramble members' data: the
    # first entries extract fine, then a CRC check fails half way through.
    corrupt.write_bytes(data[:60_000] + bytes(20_000) + data[80_000:])
    with pytest.raises(zipfile.BadZipFile):
        extract(corrupt, dest)
    assert (dest / "ds/trainA/1.png").read_bytes() == b"a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.zip", "corrupt.zip", "dest", "x.zip"]


def test_not_an_archive_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "x.zip"
    f.write_text("<html>404</html>")
    with pytest.raises(UnsafeArchiveError, match="not a zip or tar archive"):
        extract(f, tmp_path / "dest")
