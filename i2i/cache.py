"""Where downloads live outside the repository, shared by every clone and DVC experiment copy.

Dataset archives go to ``$I2I_CACHE`` (default ``~/.cache/i2i``). Pretrained weights go to the
folder torchvision itself reads (``$TORCH_HOME/hub/checkpoints``), so a file fetched or placed
there by hand is found by torchvision and lpips without any network.
"""

from __future__ import annotations

import os
from pathlib import Path


def datasets_dir() -> Path:
    return Path(os.environ.get("I2I_CACHE") or Path.home() / ".cache" / "i2i") / "datasets"


def weights_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, worked out as torch.hub does without importing torch
    (the ``backbones`` stage runs on every ``dvc repro`` and must take well under a second)."""
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(xdg, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"
