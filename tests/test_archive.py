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
        with pytest.raises(UnsafeArchiveError, match="link; only regular files") as e:
            extract(archive, tmp_path / "dest")
        assert "ds/" in str(e.value) and str(archive) in str(e.value)
        assert not (tmp_path / "dest").exists()


def test_a_link_chain_that_looks_inside_as_text_is_refused_and_nothing_leaves(tmp_path: Path):
    # `p -> .` makes p the folder itself, so `esc -> p/p/p/../../..` reads as inside the
    # destination but resolves to three folders up on disk; `esc/escaped.txt` would land there.
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    zipped = work / "chain.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for name, target in (("p", "."), ("esc", "p/p/p/../../..")):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        zf.writestr("esc/escaped.txt", b"pwned")
    tarred = work / "chain.tar"
    with tarfile.open(tarred, "w") as tf:
        for name, target in (("p", "."), ("esc", "p/p/p/../../..")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
        info = tarfile.TarInfo("esc/escaped.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"pwned"))
    for archive in (zipped, tarred):
        with pytest.raises(UnsafeArchiveError, match="'p' is a symbolic link"):
            extract(archive, work / "dest")
        assert not (work / "dest").exists()
        assert not list(tmp_path.rglob("escaped.txt"))


def test_zip_bomb_is_refused_before_a_byte_is_written(tmp_path: Path):
    # 40 MB of zeros deflate to about 40 KB: the cap is checked on the size fields, up front.
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ds/trainA/ok.png", b"a")
        zf.writestr("ds/zeros.bin", bytes(40 << 20))
    assert bomb.stat().st_size < 100_000
    refused = "unpacks to 41,943,041 bytes, more than the 10,485,760 bytes allowed"
    with pytest.raises(UnsafeArchiveError, match=refused) as e:
        extract(bomb, tmp_path / "dest", max_bytes=10 << 20)
    assert str(bomb) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]
    # The same archive under a cap it fits extracts whole.
    extract(bomb, tmp_path / "dest", max_bytes=64 << 20)
    assert (tmp_path / "dest/ds/zeros.bin").stat().st_size == 40 << 20


def test_too_many_entries_are_refused(tmp_path: Path):
    archive = make_tar(tmp_path / "many.tar.gz", {f"ds/{i}.png": b"x" for i in range(11)})
    with pytest.raises(UnsafeArchiveError, match="11 entries, more than the 10 allowed"):
        extract(archive, tmp_path / "dest", max_entries=10)
    assert not (tmp_path / "dest").exists()


def test_tar_modes_are_not_kept_files_follow_the_umask(tmp_path: Path):
    archive = tmp_path / "modes.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("ds/run.sh")
        info.size, info.mode = 2, 0o6777  # set-uid, set-gid, world-writable
        tf.addfile(info, io.BytesIO(b"hi"))
    old = os.umask(0o022)
    try:
        dest = extract(archive, tmp_path / "dest")
    finally:
        os.umask(old)
    assert stat.S_IMODE((dest / "ds/run.sh").stat().st_mode) == 0o644


def test_a_file_and_a_folder_of_one_name_are_refused(tmp_path: Path):
    for entries in ({"ds/a": b"file", "ds/a/b.png": b"x"}, {"ds/a/b.png": b"x", "ds/a": b"file"}):
        archive = make_zip(tmp_path / "clash.zip", entries)
        with pytest.raises(UnsafeArchiveError, match="clashes with an earlier entry"):
            extract(archive, tmp_path / "dest")
        assert not (tmp_path / "dest").exists()


def test_an_entry_written_twice_is_refused(tmp_path: Path):
    archive = tmp_path / "twice.tar"
    with tarfile.open(archive, "w") as tf:
        for data in (b"first", b"second"):
            info = tarfile.TarInfo("ds/a.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchiveError, match="'ds/a.png' appears twice"):
        extract(archive, tmp_path / "dest")


def test_device_entries_are_refused(tmp_path: Path):
    archive = make_tar(tmp_path / "d.tar.gz", GOOD, links={"ds/null": (tarfile.CHRTYPE, "")})
    with pytest.raises(UnsafeArchiveError, match="is a device, FIFO or other special entry"):
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
