"""Atomic writes follow the umask like any Unix tool, and stay atomic."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from i2i.io import atomic_dir, atomic_path, temp_dir, write_bytes, write_json


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode",
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
)
def test_files_and_folders_get_the_umasks_mode(tmp_path: Path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_bytes(tmp_path / "report.txt", b"x")
    write_json(tmp_path / "scores.json", {"a": 1})
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("y")
    with temp_dir() as staging:
        assert mode(staging) == dir_mode
    assert mode(tmp_path / "report.txt") == file_mode
    assert mode(tmp_path / "scores.json") == file_mode
    assert mode(tmp_path / "folder") == dir_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "report.txt", "scores.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, umask):
    write_bytes(tmp_path / "kept.txt", b"old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "kept.txt.d"):
            raise RuntimeError
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "kept.txt") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError
    assert (tmp_path / "kept.txt").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
