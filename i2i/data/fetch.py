"""Streaming HTTP download that survives a dead connection and never leaves a half file in place.

The file grows in ``<dest>.part``; an interrupted download (a dropped connection here, or a killed
process earlier) continues from there with an HTTP Range request. Size and, when known, SHA-256
are checked before the part file is renamed onto ``dest``, so an existing ``dest`` is complete
and fetching it again is a no-op. Processes that fetch the same file at once (queued DVC
experiments) take turns through a lock file beside it; the later ones find it done.

:func:`pinned_sha256` guards a file in a cache shared by clones and users: the file's full
SHA-256 is recorded beside it at its first use (``<file>.sha256.json``), and a later use that
finds other bytes under the same name is refused, naming both digests.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock

from i2i.errors import I2IError
from i2i.progress import progress

CHUNK = 1 << 20


class DownloadError(I2IError, RuntimeError):
    """A file could not be fetched; the message says where to put it by hand."""


class HostUnreachable(DownloadError):
    """No connection to the host at all (no network, DNS failure, refused, timed out)."""


class _Interrupted(Exception):
    """The connection dropped mid-file; the part file is kept for a resume."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def pinned_sha256(path: Path, *, prefix: str = "", recheck: bool = True) -> str:
    """The SHA-256 of ``path``, which must equal the one recorded at its first use and start
    with ``prefix`` (a file is not recorded when it does not).

    The record is ``<path>.sha256.json`` (size, modification time, digest); it is written when
    missing. With ``recheck=False`` a file whose size and modification time match the record is
    not hashed again (seconds for a 500 MB file, for a check that runs on every ``dvc repro``).
    """
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    record = path.with_name(path.name + ".sha256.json")
    try:
        known = json.loads(record.read_text())
        pinned = str(known["sha256"])
    except FileNotFoundError:
        known, pinned = {}, ""
    except (OSError, ValueError, KeyError, TypeError):
        raise DownloadError(
            f"{record}: unreadable digest record of {path}; delete both to fetch it again"
        ) from None
    if pinned and not recheck and {k: known.get(k) for k in stamp} == stamp:
        return pinned
    got = sha256_of(path)
    if not got.startswith(prefix.lower()):
        raise DownloadError(
            f"{path}: SHA-256 {got} does not start with {prefix} as its name says; it is not the "
            f"file the name promises (a truncated copy, another version): delete it and fetch it "
            f"again"
        )
    if pinned and got != pinned:
        raise DownloadError(
            f"{path}: SHA-256 {got}, but {pinned} was recorded at its first use ({record}); "
            f"the file changed. Delete both files to fetch it again"
        )
    if known != {**stamp, "sha256": got}:
        from i2i.io import write_json

        try:
            write_json(record, {**stamp, "sha256": got})
        except OSError:
            pass  # a read-only shared cache: hashed again next time, checked all the same
    return got


def fetch(
    url: str, dest: str | Path, *, sha256: str = "", retries: int = 3, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` unless it is already there; return ``dest``.

    ``sha256`` may be a full hex digest or a prefix of one (torchvision's file names carry one).
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(dest.with_name(dest.name + ".lock")):
        if not dest.exists():
            _fetch(url, dest, sha256, retries, timeout)
    return dest


def _fetch(url: str, dest: Path, sha256: str, retries: int, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    by_hand = f"download {url} yourself and place it at {dest.resolve()}"
    for attempt in range(retries + 1):
        try:
            _stream(url, part, timeout, by_hand)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise DownloadError(
                    f"{url}: connection lost {retries + 1} times ({e}); the partial file "
                    f"{part} is kept and the next run resumes it, or {by_hand}"
                ) from None
    if sha256:
        got = sha256_of(part)
        if not got.startswith(sha256.lower()):
            part.unlink()
            raise DownloadError(
                f"{url}: SHA-256 mismatch, expected {sha256}..., got {got}; the corrupt file was "
                f"removed. Run again, set a different mirror, or {by_hand}"
            )
    os.replace(part, dest)


def _stream(url: str, part: Path, timeout: float, by_hand: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "i2i-downloader", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # The server cannot serve past our part file: it is stale or from another version.
            part.unlink()
            return _stream(url, part, timeout, by_hand)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; {by_hand}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise HostUnreachable(f"cannot reach {url} ({reason}); {by_hand}") from None
    with resp:
        status = getattr(resp, "status", None)
        total = _int(resp.headers.get("Content-Length"))
        if have and status == 206:
            start, full = _content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                raise _Interrupted(f"server resumed at byte {start}, expected {have}")
            mode, total = "ab", full
        else:
            mode, have = "wb", 0
        try:
            with (
                open(part, mode) as f,
                progress(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=part.name[: -len(".part")],
                ) as bar,
            ):
                while block := resp.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
            raise _Interrupted(str(e) or type(e).__name__) from None
    size = part.stat().st_size
    if total is not None and size != total:
        if size < total:
            raise _Interrupted(f"got {size} of {total} bytes")
        part.unlink()
        raise DownloadError(f"{url}: got {size} bytes, more than the announced {total}; {by_hand}")


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _content_range(value: str) -> tuple[int, int | None]:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    if not m:
        raise _Interrupted(f"unusable Content-Range {value!r}")
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))
