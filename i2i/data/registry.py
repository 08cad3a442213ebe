"""Registry of the datasets ``data.dataset`` can name, and where each one comes from.

Hosted archives are where the reference repositories' download scripts fetch them: the
CycleGAN sets are zips under
``http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/<name>.zip``; edges2shoes and
edges2handbags are side-by-side pairs in ``<name>.tar.gz`` under the pix2pix host, which MUNIT
splits into an edges half (A) and a photo half (B), its ``val`` split becoming our test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CYCLEGAN_HOST = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"
PIX2PIX_HOST = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    source: Literal["synthetic", "folder", "archive"]
    # "unpaired": trainA/ trainB/ testA/ testB/; "paired": train/ val/ of [A | B] side by side
    layout: Literal["unpaired", "paired"] = "unpaired"
    host: str = ""
    archive: str = ""  # file name on the host

    def url(self, mirror: str = "") -> str:
        base = mirror or self.host
        return base.rstrip("/") + "/" + self.archive


def _cyclegan(name: str) -> DatasetSpec:
    return DatasetSpec(name, "archive", "unpaired", CYCLEGAN_HOST, f"{name}.zip")


def _pix2pix(name: str) -> DatasetSpec:
    return DatasetSpec(name, "archive", "paired", PIX2PIX_HOST, f"{name}.tar.gz")


DATASETS: dict[str, DatasetSpec] = {
    "shapes": DatasetSpec("shapes", "synthetic"),
    "folder": DatasetSpec("folder", "folder"),
    **{
        n: _cyclegan(n)
        for n in (
            "apple2orange",
            "summer2winter_yosemite",
            "horse2zebra",
            "monet2photo",
            "cezanne2photo",
            "ukiyoe2photo",
            "vangogh2photo",
            "maps",
            "facades",
            "iphone2dslr_flower",
            "ae_photos",
            "mini",
        )
    },
    **{n: _pix2pix(n) for n in ("edges2shoes", "edges2handbags")},
}
