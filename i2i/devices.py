"""The one place a device is picked, for training and for the single-process stages.

Several jobs on one machine (``dvc queue start -j N``) each take a share of it: on a machine
with several GPUs, each process claims the lowest GPU no other i2i process holds; with
``I2I_JOBS=N`` on a CPU, each claims slot k of N and keeps to cores [k*C/N, (k+1)*C/N) with as
many threads. A claim is a lock file under ``$TMPDIR/i2i-devices-<uid>``, held until the process
ends, so a killed job frees its share at once. The folder is the user's own (mode 0700, checked
on use): in a folder other users can write, one of them could pre-create it, or plant a lock
file that is a link. So claims share a machine between one user's jobs; users who share GPUs
split them with ``CUDA_VISIBLE_DEVICES`` or a scheduler. A process started by torchrun, or with
``CUDA_VISIBLE_DEVICES`` set, uses what it was given.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from pathlib import Path

import torch

from i2i.errors import I2IError

_held: dict[str, tuple[int, object]] = {}  # kind -> (slot, open lock file): this process's claim


def claim(kind: str, slots: int) -> int:
    """The lowest of ``slots`` slots of ``kind`` that no other process holds, now held by this
    one (the same slot on every call); when every slot is held, slot 0 (shared)."""
    if kind in _held:
        return _held[kind][0]
    folder = lock_folder()
    for k in range(slots):
        fd = os.open(folder / f"{kind}-{k}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        f = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held[kind] = (k, f)
        return k
    return 0


def lock_folder() -> Path:
    """This user's folder of claims, created 0700; one that is a link, someone else's or open to
    others is refused, naming it."""
    default = Path(tempfile.gettempdir()) / f"i2i-devices-{os.geteuid()}"
    folder = Path(os.environ.get("I2I_DEVICE_LOCKS") or default)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise I2IError(
            f"{folder}: the device claims' folder must be a folder of this user's with mode 0700 "
            f"(it is {'a folder' if stat.S_ISDIR(st.st_mode) else 'not a folder'} of uid "
            f"{st.st_uid}, mode {stat.filemode(st.st_mode)}); remove it, or set I2I_DEVICE_LOCKS "
            f"to another folder"
        )
    return folder


def _cpu_share() -> None:
    """With ``I2I_JOBS=N``: keep to this job's 1/N of the cores, with as many threads."""
    jobs = int(os.environ.get("I2I_JOBS", "1") or 1)
    if jobs <= 1 or "cpu" in _held or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    k = claim("cpu", jobs)
    share = cores[k * len(cores) // jobs : (k + 1) * len(cores) // jobs] or cores[:1]
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))


def pick_device(kind: str, local_rank: int | None = None) -> torch.device:
    """``auto | cpu | cuda`` -> CUDA when asked for or available, else the CPU. ``cuda`` where
    there is none is an error, not a silent CPU run. Under torchrun (``local_rank``) the rank's
    GPU; otherwise this job's share of the machine (module docstring)."""
    if kind == "cuda" and not torch.cuda.is_available():
        raise I2IError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if kind != "cpu" and torch.cuda.is_available():
        if local_rank is not None:
            return torch.device("cuda", local_rank)
        n = torch.cuda.device_count()
        shared = n > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ
        return torch.device("cuda", claim("cuda", n) if shared else 0)
    if local_rank is None:
        _cpu_share()
    return torch.device("cpu")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def machine(device: torch.device) -> dict[str, object]:
    """What a timing, and bit equality between two runs, depends on: the processor (the GPU's
    name on CUDA), the threads and the torch build."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
