"""Safe, all-or-nothing extraction of zip and tar archives.

Every entry is checked before anything is written: a name with ``..``, an absolute name, a link
whose target leaves the destination, or a device/FIFO entry is refused with an error naming the
entry. Extraction happens in a temporary folder renamed into place at the end, so a refused or
failing archive leaves nothing behind.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from i2i.errors import I2IError
from i2i.io import atomic_dir


class UnsafeArchiveError(I2IError, ValueError):
    """An archive entry would write outside the destination folder."""


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` (zip, tar, tar.gz, ...) so that ``dest`` holds exactly its entries."""
    archive, dest = Path(archive), Path(dest)
    if zipfile.is_zipfile(archive):
        opener = _extract_zip
    elif tarfile.is_tarfile(archive):
        opener = _extract_tar
    else:
        raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")
    with atomic_dir(dest) as tmp:
        opener(archive, tmp)
    return dest


def _inside(root: Path, name: str, archive: Path) -> Path:
    """The path ``name`` names under ``root``, or an error if it would escape it."""
    clean = name.replace("\\", "/")
    pure = PurePosixPath(clean)
    if pure.is_absolute() or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive}: entry {name!r} has an absolute path; refusing to extract"
        )
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} contains '..'; refusing to extract")
    return root.joinpath(*pure.parts)


def _check_link(
    root: Path,
    member_path: Path,
    target: str,
    name: str,
    archive: Path,
    relative_to_member: bool = True,
) -> None:
    base = member_path.parent if relative_to_member else root
    if PurePosixPath(target).is_absolute():
        resolved = Path(os.path.normpath(target))
    else:
        resolved = Path(os.path.normpath(base / target))
    if not resolved.is_relative_to(root):
        raise UnsafeArchiveError(
            f"{archive}: entry {name!r} links to {target!r}, outside the destination; "
            f"refusing to extract"
        )


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        links = {}
        for info in zf.infolist():
            path = _inside(root, info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                target = zf.read(info).decode()
                _check_link(root, path, target, info.filename, archive)
                links[info.filename] = (path, target)
        for info in zf.infolist():
            if info.filename in links:
                path, target = links[info.filename]
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, path)
            else:
                zf.extract(info, root)


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            path = _inside(root, m.name, archive)
            if m.issym():
                _check_link(root, path, m.linkname, m.name, archive)
            elif m.islnk():
                _check_link(root, path, m.linkname, m.name, archive, relative_to_member=False)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(
                    f"{archive}: entry {m.name!r} is a device or FIFO; refusing to extract"
                )
        # The "data" filter re-checks what we checked and also drops set-uid bits and odd modes.
        tf.extractall(root, members=members, filter="data")
