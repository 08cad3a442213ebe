"""Pretrained backbones' weight files: getting them, loading them, and what a stage used
(which files each stage needs: :mod:`i2i.backbones`).

The perceptual loss (VGG16), LPIPS (AlexNet, VGG16 or SqueezeNet 1.1) and FID/KID (and IS/CIS
with ``evaluate.classifier: inception``: Inception-v3) load torchvision's ImageNet weights. File
names are torchvision's; the 8 hex digits in each name are the start of the file's SHA-256,
checked on download and on first use of a file placed by hand. Files live where torchvision
looks (``$TORCH_HOME/hub/checkpoints``), shared by every clone and experiment.

``backbones.policy`` says what a stage does with a file that is not cached:

- ``fallback`` (default): fetch it (checksummed, resumable, ``backbones.timeout`` per network
  operation); when that fails, go on with a seeded random network, print one warning naming
  what is missing and the command that fetches it, and record the network as ``random``;
- ``strict``: fetch it or stop with an error;
- ``random``: never fetch; every backbone is a seeded random network.

What a stage used is a *record*, ``{name: sha256 | "random"}`` (the ``backbones`` DVC stage
writes one per consumer: :mod:`i2i.backbones`). Scores computed on a random network are stored
under another name (``i2i.evaluate``), so they are never ranked against calibrated ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import TYPE_CHECKING

from i2i.cache import weights_dir
from i2i.config import BackbonesConfig, EvaluateConfig
from i2i.data.fetch import DownloadError, HostUnreachable, fetch, pinned_sha256
from i2i.errors import I2IError

if TYPE_CHECKING:
    import torch

PYTORCH_HOST = "https://download.pytorch.org/models/"
RANDOM = "random"  # the record of a backbone that was built with seeded random weights


@dataclass(frozen=True)
class WeightFile:
    name: str
    filename: str  # torch hub's: <stem>-<first 8 hex digits of the SHA-256>.pth
    sha256_prefix: str  # what the file's SHA-256 must start with
    host: str = PYTORCH_HOST

    def url(self, mirror: str = "") -> str:
        return (mirror or self.host).rstrip("/") + "/" + self.filename


WEIGHTS = {
    w.name: w
    for w in (
        WeightFile("vgg16", "vgg16-397923af.pth", "397923af"),
        WeightFile("alexnet", "alexnet-owt-7be5be79.pth", "7be5be79"),
        WeightFile("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth", "b8a52dc0"),
        WeightFile("inception_v3", "inception_v3_google-0cc3c7bd.pth", "0cc3c7bd"),
        # The TensorFlow FID Inception graph's weights, as pytorch-fid publishes them.
        WeightFile(
            "inception_fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "6726825d",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/",
        ),
    )
}
LPIPS_BACKBONE = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


class MissingWeightsError(I2IError, FileNotFoundError):
    """Pretrained weights are needed but cannot be had (``backbones.policy: strict``)."""


def inception(ev: EvaluateConfig) -> str:
    """The weight file of the Inception network ``evaluate.inception`` names."""
    return "inception_fid" if ev.inception == "fid" else "inception_v3"


def ensure(names: list[str], mirror: str = "", timeout: float = 60.0) -> dict[str, Path]:
    """Fetch each named file into the cache unless it is there; return their paths."""
    return {
        n: fetch(
            WEIGHTS[n].url(mirror),
            weights_dir() / WEIGHTS[n].filename,
            sha256=WEIGHTS[n].sha256_prefix,
            timeout=timeout,
        )
        for n in names
    }


def path(name: str) -> Path:
    """The cached file for ``name``, or an error saying how to get it."""
    w = WEIGHTS[name]
    p = weights_dir() / w.filename
    if not p.is_file():
        raise MissingWeightsError(
            f"pretrained weights '{name}' not found at {p}. Fetch them with `i2i weights {name}` "
            f"(or `i2i weights --params params.yaml` for all the params need), or download "
            f"{w.url()} yourself and place it at {p}"
        )
    return p


def load(name: str, prefix: str = "") -> dict[str, "torch.Tensor"]:
    """The cached state dict of ``name``, or only its entries under ``prefix`` with the prefix
    removed (``features.``: a backbone's convolutions without the classifier, which the
    perceptual loss and LPIPS never run). Memory-mapped: unused tensors are never read."""
    import torch

    digest(name)  # the bytes pinned at first use, not whatever sits under the name now
    state = torch.load(path(name), map_location="cpu", weights_only=True, mmap=True)
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def digest(name: str) -> str | None:
    """The SHA-256 of the cached file of ``name``, or None when it is not cached.

    Hashing a 500 MB file takes seconds, so the digest is kept beside the file
    (``<file>.sha256.json``) and reused while the file's size and modification time are unchanged.
    A file whose digest does not start with its name's prefix is refused: it is not the file the
    name promises (a truncated copy, another version). torchvision publishes only that prefix, so
    the full digest is pinned at the file's first use: other bytes under the same name later (a
    shared cache overwritten, a second download from another mirror) are refused.
    """
    w = WEIGHTS[name]
    p = weights_dir() / w.filename
    if not p.is_file():
        return None
    return pinned_sha256(p, prefix=w.sha256_prefix, recheck=False)


def host(name: str, mirror: str = "") -> str:
    """The scheme and host a weight file is fetched from."""
    parts = urlsplit(WEIGHTS[name].url(mirror))
    return f"{parts.scheme}://{parts.netloc}"


def resolve(
    names: list[str],
    cfg: BackbonesConfig,
    fix: str = "i2i weights --params params.yaml",
    announce: bool = True,
) -> dict[str, str]:
    """Get the named files as ``cfg.policy`` says; return the record ``{name: sha256 | "random"}``.

    With ``fallback``, a file that cannot be had is recorded as random and, when ``announce``, one
    warning on stderr names every such file, why, and ``fix``, the command that fetches them.
    Once a host is unreachable its other files are not tried, so a dead network costs one
    ``cfg.timeout`` per host at most.
    """
    record: dict[str, str] = {}
    problems: dict[str, str] = {}
    unreachable: dict[str, str] = {}  # host -> the file it failed for
    for name in names:
        if cfg.policy == "random":
            record[name] = RANDOM
            continue
        try:
            sha = digest(name)
            if sha is None:
                where = host(name, cfg.mirror)
                if where in unreachable:
                    raise HostUnreachable(
                        f"not tried, {where} did not answer for {unreachable[where]}: "
                        f"download {WEIGHTS[name].url(cfg.mirror)} yourself"
                    )
                ensure([name], cfg.mirror, cfg.timeout)
                sha = digest(name)
            record[name] = sha  # type: ignore[assignment]
        except HostUnreachable as e:
            unreachable.setdefault(host(name, cfg.mirror), name)
            problems[name] = str(e)
        except DownloadError as e:
            problems[name] = str(e)
        if name in problems:
            if cfg.policy == "strict":
                raise MissingWeightsError(
                    f"{problems[name]}. Fetch it with `{fix}`, or set backbones.mirror to a host "
                    f"that serves it; to go on with random networks instead, set "
                    f"backbones.policy: fallback"
                ) from None
            record[name] = RANDOM
    if problems and announce:
        warn_random(problems, fix)
    return record


def warn_random(problems: dict[str, str], fix: str) -> None:
    """The one warning of a stage that goes on with random networks."""
    rule = "=" * 78
    lines = [rule, f"WARNING: pretrained weights not available: {', '.join(problems)}"]
    lines += [f"  {name}: {why}" for name, why in problems.items()]
    lines += [
        "  Going on with seeded random networks (backbones.policy: fallback). Scores that depend",
        "  on them are stored as uncalibrated/<score>/<direction>, apart from calibrated ones.",
        f"  Fix: {fix}   (then `dvc repro` re-runs exactly what changes)",
        rule,
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def pretrained(record: dict[str, str], name: str) -> bool:
    """Whether a stage with this record loads ImageNet weights for ``name`` (not random ones)."""
    return record.get(name, RANDOM) != RANDOM
