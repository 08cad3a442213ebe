"""Safe, all-or-nothing extraction of zip and tar archives.

An archive from a mirror, a cache or a man in the middle is hostile until it is on disk and
checked. Every entry is checked before anything is written, and the archive is refused whole,
with an error naming the archive and the entry, when it holds:

- a name with ``..``, an absolute name or a drive letter;
- a link of any kind (symbolic or hard). No dataset the project knows needs one, and a link
  checked as text can still lead out once an earlier entry has made a folder a link to itself;
- a device, a FIFO or anything else that is neither a regular file nor a folder;
- more than ``max_entries`` entries, or more than ``max_bytes`` once unpacked (a zip bomb), or more
  than the free space at the destination.

Only regular files and folders are written, by this module (not by ``zipfile`` or ``tarfile``),
each file opened with ``O_NOFOLLOW | O_EXCL`` under a folder this module created, with the
umask's permissions: no link, set-uid bit or odd mode in the archive reaches the disk, also on a
Python whose ``tarfile`` "data" filter has known bypasses. The size check adds up the entries'
size fields before anything is written; both readers stop at an entry's size field (a zip entry
whose data runs past it fails its CRC check), so a size field that lies cannot pass the cap.
Extraction happens in a temporary folder renamed into place at the end, so a refused or
failing archive leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from i2i.errors import I2IError
from i2i.io import atomic_dir

# The largest dataset the registry knows (edges2handbags) unpacks to about 9 GB in 138k files.
MAX_BYTES = 64 << 30
MAX_ENTRIES = 1_000_000
CHUNK = 1 << 20


class UnsafeArchiveError(I2IError, ValueError):
    """An archive entry would write outside the destination folder, or the archive is too big."""


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # "file", "dir", or what the entry is when it is refused
    size: int  # declared size in bytes
    open: Callable[[], IO[bytes]]


def extract(
    archive: str | Path,
    dest: str | Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> Path:
    """Extract ``archive`` (zip, tar, tar.gz, ...) so that ``dest`` holds exactly its entries."""
    archive, dest = Path(archive), Path(dest)
    if zipfile.is_zipfile(archive):
        reader = _zip_entries
    elif tarfile.is_tarfile(archive):
        reader = _tar_entries
    else:
        raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")
    with reader(archive) as entries, atomic_dir(dest) as tmp:
        _check(archive, entries, tmp, max_bytes, max_entries)
        for entry in entries:
            _write(archive, entry, tmp)
    return dest


def _check(
    archive: Path, entries: list[_Entry], root: Path, max_bytes: int, max_entries: int
) -> None:
    if len(entries) > max_entries:
        raise UnsafeArchiveError(
            f"{archive}: {len(entries):,} entries, more than the {max_entries:,} allowed; "
            f"refusing to extract"
        )
    seen: set[tuple[str, ...]] = set()
    for entry in entries:
        parts = _parts(entry.name, archive)
        if entry.kind not in ("file", "dir"):
            raise UnsafeArchiveError(
                f"{archive}: entry {entry.name!r} is a {entry.kind}; only regular files and "
                f"folders are extracted, refusing to extract"
            )
        if entry.kind == "file" and parts in seen:
            raise UnsafeArchiveError(
                f"{archive}: entry {entry.name!r} appears twice; refusing to extract"
            )
        seen.add(parts)
    total = sum(e.size for e in entries)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to {_gib(total)}, more than the {_gib(max_bytes)} allowed; "
            f"refusing to extract"
        )
    free = shutil.disk_usage(root).free
    if total > free:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to {_gib(total)}, more than the {_gib(free)} free at {root.parent}"
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n:,} bytes"


def _parts(name: str, archive: Path) -> tuple[str, ...]:
    """The path components ``name`` names under the destination, or an error if it would leave
    it."""
    clean = name.replace("\\", "/")
    pure = PurePosixPath(clean)
    if pure.is_absolute() or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive}: entry {name!r} has an absolute path; refusing to extract"
        )
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} contains '..'; refusing to extract")
    return tuple(p for p in pure.parts if p not in ("", "."))


def _folder(root: Path, parts: tuple[str, ...]) -> Path:
    """``root/parts...`` as real folders, none of them a link (nothing here writes links, so a
    link found is a race with another process) or a file an earlier entry wrote."""
    folder = root
    for part in parts:
        folder = folder / part
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise FileExistsError(folder) from None
    return folder


def _write(archive: Path, entry: _Entry, root: Path) -> None:
    parts = _parts(entry.name, archive)
    try:
        if entry.kind == "dir" or not parts:
            _folder(root, parts)
            return
        folder = _folder(root, parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
        fd = os.open(folder / parts[-1], flags, 0o666)  # the umask decides the mode
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        raise UnsafeArchiveError(
            f"{archive}: entry {entry.name!r} clashes with an earlier entry (a file where a "
            f"folder is, or the other way round); refusing to extract"
        ) from None
    with entry.open() as src, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


class _Entries(list):
    def __init__(self, handle, entries: list[_Entry]):
        super().__init__(entries)
        self.handle = handle

    def __enter__(self) -> "_Entries":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "dir"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return f"special entry (mode {stat.filemode(mode)})"
    return "file"


def _zip_entries(archive: Path) -> _Entries:
    zf = zipfile.ZipFile(archive)
    entries = [
        _Entry(i.filename, _zip_kind(i), i.file_size, lambda i=i: zf.open(i)) for i in zf.infolist()
    ]
    return _Entries(zf, entries)


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isfile():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symbolic link"
    if m.islnk():
        return "hard link"
    return "device, FIFO or other special entry"


def _tar_entries(archive: Path) -> _Entries:
    tf = tarfile.open(archive)
    entries = [
        _Entry(m.name, _tar_kind(m), m.size if m.isfile() else 0, lambda m=m: tf.extractfile(m))
        for m in tf.getmembers()
    ]
    return _Entries(tf, entries)
