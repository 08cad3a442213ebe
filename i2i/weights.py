"""Pretrained backbone weights: which ones the params need, fetching them, finding them.

File names are torchvision's; the 8 hex digits in each name are the start of the file's
SHA-256, checked on download. Files live where torchvision looks (see ``i2i.cache``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from i2i.cache import weights_dir
from i2i.config import EvaluateConfig, Params
from i2i.data.fetch import fetch
from i2i.errors import I2IError

PYTORCH_HOST = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class WeightFile:
    name: str
    filename: str  # <stem>-<first 8 hex digits of the SHA-256>.pth

    @property
    def sha256_prefix(self) -> str:
        return self.filename.rsplit("-", 1)[1].split(".")[0]

    def url(self, mirror: str = "") -> str:
        return (mirror or PYTORCH_HOST).rstrip("/") + "/" + self.filename


WEIGHTS = {w.name: w for w in (
    WeightFile("vgg16", "vgg16-397923af.pth"),
    WeightFile("alexnet", "alexnet-owt-7be5be79.pth"),
    WeightFile("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
    WeightFile("inception_v3", "inception_v3_google-0cc3c7bd.pth"),
)}
LPIPS_BACKBONE = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


class MissingWeightsError(I2IError, FileNotFoundError):
    """Pretrained weights are needed but not in the cache."""


def required(params: Params) -> list[str]:
    """Names of the weight files the given params will load, in a stable order."""
    names = ["vgg16"] if params.loss.vgg_w > 0 and params.loss.vgg_pretrained else []
    return list(dict.fromkeys(names + required_for_evaluation(params.evaluate)))


def required_for_evaluation(ev: EvaluateConfig) -> list[str]:
    """The weight files the evaluate stage loads (none with ``evaluate.pretrained: false``)."""
    if not ev.pretrained:
        return []
    names = [LPIPS_BACKBONE[ev.lpips_net]] if "lpips_diversity" in ev.metrics else []
    uses_inception = {"fid", "kid"} | ({"inception_score", "cis"} if ev.classifier == "inception" else set())
    return names + (["inception_v3"] if uses_inception & set(ev.metrics) else [])


def ensure(names: list[str], mirror: str = "") -> dict[str, Path]:
    """Fetch each named file into the cache unless it is there; return their paths."""
    return {n: fetch(WEIGHTS[n].url(mirror), weights_dir() / WEIGHTS[n].filename,
                     sha256=WEIGHTS[n].sha256_prefix) for n in names}


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
