"""What the metrics of one translation direction are computed from, each piece made once.

Metrics ask a :class:`DirectionContext` for translations, posteriors or features; the context
generates them on the device in batches, keeps them for the other metrics of the direction
(IS, CIS and mode coverage share one set of outputs; FID, KID and content IoU another), and
keeps images as uint8 on the host, so 100 x 100 outputs at 256 px still fit in memory.
Metric networks (LPIPS, Inception, domain classifiers) are built on first use and shared by
both directions through :class:`MetricNetworks`.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from i2i import weights
from i2i.config import EvaluateConfig
from i2i.data.loader import DomainImages, centre_crop, to_model_input
from i2i.grids import to_uint8

if TYPE_CHECKING:
    from i2i.models import Networks


class Skip(Exception):
    """A metric does not apply to this direction (the reason is recorded in the report)."""


@dataclass
class MetricNetworks:
    """The metric networks, built when a metric first needs one, and the real test images'
    Inception outputs, read from the real_features stage's folder when it holds them."""

    cfg: EvaluateConfig
    classifiers: Path  # the classify stage's output folder
    device: torch.device
    # What to load ({name: sha256 | "random"}, i2i.weights); a backbone it lacks is random.
    backbones: dict[str, str] = field(default_factory=dict)
    real_features: Path | None = None  # the real_features stage's output folder
    _domain: dict[str, object] = field(default_factory=dict)
    _real: dict[tuple[str, int], tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict)
    # Where each test part's real features came from: "real_features stage" or "computed".
    real_from: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def lpips(self) -> torch.nn.Module:
        from i2i.metrics.lpips_distance import LpipsDistance

        torch.manual_seed(self.cfg.seed)  # a random backbone is the same in every run
        name = weights.LPIPS_BACKBONE[self.cfg.lpips_net]
        pretrained = weights.pretrained(self.backbones, name)
        return LpipsDistance(self.cfg.lpips_net, pretrained).to(self.device)

    @functools.cached_property
    def inception(self) -> torch.nn.Module:
        from i2i.metrics.inception import InceptionV3

        torch.manual_seed(self.cfg.seed)  # a random network is the same in every run
        pretrained = weights.pretrained(self.backbones, weights.inception(self.cfg))
        return InceptionV3(pretrained, self.cfg.inception).to(self.device)

    def real_inception(self, part: DomainImages, crop_size: int) -> tuple[np.ndarray, torch.Tensor]:
        """Inception pool features [N, 2048] (float64) and posteriors [N, K] of a test part's
        centre-cropped images: from the real_features stage when it made them for this data,
        crop and Inception, otherwise computed here."""
        from i2i.metrics import real

        name = (part.folder.name, crop_size)
        if name not in self._real:
            found = None
            if self.real_features is not None:
                key = real.key(part.folder.parent, crop_size, self.backbones, self.cfg)
                found = real.read(self.real_features, part.folder.name, key)
            self.real_from[part.folder.name] = "real_features stage" if found else "computed"
            if found is None:
                images = test_images(part, crop_size)
                features, probs = batched(self.inception, images, self.cfg.batch_size, self.device)
                found = features.double().numpy(), probs
            self._real[name] = found
        return self._real[name]

    def domain_classifier(self, domain: str):
        """The classify stage's classifier of ``domain``'s classes, or Skip when it has none."""
        from i2i.metrics import classifier

        if domain not in self._domain:
            path = self.classifiers / f"{domain}.pt"
            self._domain[domain] = classifier.load(path, self.device) if path.is_file() else None
        found = self._domain[domain]
        if found is None:
            raise Skip(
                f"domain {domain.upper()} has no class labels (fewer than two class sub-folders), "
                f"so there is no domain classifier for it"
            )
        return found


class DirectionContext:
    """Translations of the ``source`` test images into the ``target`` domain, and their
    scores' inputs."""

    def __init__(
        self,
        nets: Networks,
        direction: str,
        source: DomainImages,
        target: DomainImages,
        crop_size: int,
        cfg: EvaluateConfig,
        networks: MetricNetworks,
    ):
        self.nets, self.direction, self.source, self.target = nets, direction, source, target
        self.crop_size, self.cfg, self.networks = crop_size, cfg, networks
        self.device = networks.device
        self._outputs: dict[tuple[int, int], np.ndarray] = {}
        self._posteriors: dict[tuple[str, int, int], torch.Tensor] = {}

    def rng(self, purpose: str) -> torch.Generator:
        """A generator for one purpose, the same on every run with this seed."""
        return torch.Generator().manual_seed(
            zlib.crc32(f"{self.cfg.seed}/{self.direction}/{purpose}".encode())
        )

    def images(self, part: DomainImages, n: int | None = None) -> np.ndarray:
        """The first n (default all) images of a test part, centre-cropped: uint8 [n, S, S, 3]."""
        return test_images(part, self.crop_size, n)

    def masks(self, n: int | None = None) -> np.ndarray:
        """The source images' geometry masks, cropped like the images: bool [n, S, S]."""
        if not self.source.has_masks:
            raise Skip(
                f"{self.source.folder} has no geometry masks (only the synthetic dataset has them)"
            )
        n = len(self.source) if n is None else min(n, len(self.source))
        return np.stack(
            [centre_crop(self.source.mask(i)[..., None], self.crop_size)[..., 0] for i in range(n)]
        )

    def outputs(self, n: int, m: int) -> np.ndarray:
        """Translations of the first n inputs, m per input under random styles (one for a
        deterministic model): uint8 [n, m', S, S, 3] with m' = m, or 1 for CycleGAN."""
        n = min(n, len(self.source))
        m = m if self.nets.style_dim else 1
        if (n, m) not in self._outputs:
            inputs = self.images(self.source, n)
            b = self.cfg.batch_size
            rng = self.rng(f"styles/{n}x{m}")
            chunks = []
            with torch.no_grad():
                for s in range(0, n, max(1, b // m)):
                    x = to_model_input(
                        torch.from_numpy(inputs[s : s + max(1, b // m)]), self.device
                    )
                    styles = None
                    if self.nets.style_dim:
                        styles = torch.randn(
                            x.shape[0], m, self.nets.style_dim, 1, 1, generator=rng
                        )
                        styles = styles.to(self.device)
                    out = self.nets.translate(x, self.direction, styles, b)  # [k, m, 3, S, S]
                    chunks.append(
                        to_uint8(out.flatten(0, 1)).reshape(*out.shape[:2], *out.shape[3:], 3)
                    )
            self._outputs[(n, m)] = np.concatenate(chunks)
        return self._outputs[(n, m)]

    def _classifier(self, kind: str):
        """The posterior function of ``kind`` (inception | domain); Skip when there is none."""
        if kind == "inception":
            return lambda x: self.networks.inception(x)[1]
        return self.networks.domain_classifier(self.direction[1]).model.posteriors

    def classify(self, kind: str, images: np.ndarray) -> torch.Tensor:
        """Posteriors [N, K] of uint8 images [N, S, S, 3] by ``kind``: inception | domain."""
        return self._batched(self._classifier(kind), images)

    def classify_real_target(self, kind: str) -> torch.Tensor:
        """Posteriors [N, K] of the real target test images by ``kind``."""
        if kind == "inception":
            return self.networks.real_inception(self.target, self.crop_size)[1]
        return self.classify(kind, self.images(self.target))

    def posteriors(self, kind: str, n: int, m: int) -> torch.Tensor:
        """Posteriors [n, m', K] of ``outputs(n, m)``."""
        key = (kind, n, m)
        if key not in self._posteriors:
            net = self._classifier(
                kind
            )  # before generating: a direction without one skips at no cost
            out = self.outputs(n, m)
            self._posteriors[key] = self._batched(net, out.reshape(-1, *out.shape[2:])).view(
                *out.shape[:2], -1
            )
        return self._posteriors[key]

    def features(self, images: np.ndarray) -> np.ndarray:
        """Inception pool features [N, 2048] of uint8 images."""
        return self._batched(lambda x: self.networks.inception(x)[0], images).double().numpy()

    @functools.cached_property
    def fid_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Inception features of one output per source test image, and of the real target
        test images."""
        fake = self.features(self.outputs(len(self.source), 1)[:, 0])
        return fake, self.networks.real_inception(self.target, self.crop_size)[0]

    def _batched(self, net, images: np.ndarray) -> torch.Tensor:
        return batched(net, images, self.cfg.batch_size, self.device)


def test_images(part: DomainImages, crop_size: int, n: int | None = None) -> np.ndarray:
    """The first n (default all) images of a test part, centre-cropped: uint8 [n, S, S, 3]."""
    n = len(part) if n is None else min(n, len(part))
    return np.stack([centre_crop(part.image(i), crop_size) for i in range(n)])


def batched(net, images: np.ndarray, batch_size: int, device: torch.device):
    """``net`` on uint8 images [N, S, S, 3] in batches; its output (a tensor, or a tuple of
    them) concatenated over the batches, as float on the CPU."""
    with torch.no_grad():
        outs = [
            net(to_model_input(torch.from_numpy(images[i : i + batch_size]), device))
            for i in range(0, len(images), batch_size)
        ]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat([o[k].float().cpu() for o in outs]) for k in range(len(outs[0])))
    return torch.cat([o.float().cpu() for o in outs])
