"""Progress bars that stay out of CI logs: off when stderr is not a terminal or I2I_QUIET=1."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm


def quiet() -> bool:
    return os.environ.get("I2I_QUIET", "") not in ("", "0") or not sys.stderr.isatty()


def progress(**kwargs: Any) -> tqdm:
    return tqdm(disable=quiet(), dynamic_ncols=True, **kwargs)
