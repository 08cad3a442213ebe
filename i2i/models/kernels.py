"""i2i's C kernels (the Winograd transforms of winograd_kernels.c), compiled on first use.

The source is compiled once per source, compiler and CPU with the system C compiler (``$CC``,
else ``cc`` or ``gcc``; torch.compile on a CPU needs one too) into ``$I2I_CACHE/kernels`` and
loaded with ctypes. Its OpenMP loops run on the OpenMP runtime PyTorch has already loaded, so
``torch.set_num_threads`` and ``OMP_NUM_THREADS`` apply. Where no compiler works, or with
``I2I_C_KERNELS=0``, :func:`winograd` returns None and callers use their PyTorch formulation:
the same results, slower.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

from i2i.cache import kernels_dir
from i2i.io import atomic_path

SOURCE = Path(__file__).with_name("winograd_kernels.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu99"]
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {  # the exported functions and their C argument types
    "filter_transform": [_PTR, _PTR, _I64],
    "filter_adjoint": [_PTR, _PTR, _I64],
    "input_transform": [_PTR, _PTR, _I64, _I64, _I64, _I64],
    "input_adjoint": [_PTR, _PTR, _I64, _I64, _I64, _I64],
    "output_transform": [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64],
    "output_adjoint": [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64],
}


def _cpu() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        return "|".join(sorted({line for line in info if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def compile_source(source: Path, out: Path, compiler: str) -> None:
    """Compile ``source`` into the shared library ``out`` (atomically); raises RuntimeError with
    the compiler's message on failure."""
    with atomic_path(out) as tmp:
        proc = subprocess.run([compiler, *FLAGS, str(source), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} {' '.join(FLAGS)} {source} failed:\n{proc.stderr.strip()[-2000:]}")


@functools.lru_cache(maxsize=None)
def winograd() -> ctypes.CDLL | None:
    """The compiled winograd_kernels.c, or None (with one warning saying why) where it cannot be built."""
    if os.environ.get("I2I_C_KERNELS", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        warnings.warn("i2i: no C compiler ($CC, cc or gcc) for the Winograd transforms; using the slower "
                      "PyTorch ones", RuntimeWarning, stacklevel=2)
        return None
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join([compiler, *FLAGS]).encode(),
                                     platform.machine().encode(), _cpu().encode()])).hexdigest()[:16]
    path = kernels_dir() / f"winograd-{key}.so"
    try:
        if not path.is_file():
            compile_source(SOURCE, path, compiler)
        lib = ctypes.CDLL(str(path))
    except (RuntimeError, OSError) as e:
        warnings.warn(f"i2i: could not build the C Winograd transforms ({e}); using the slower PyTorch ones",
                      RuntimeWarning, stacklevel=2)
        return None
    for name, args in SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = None
    return lib
