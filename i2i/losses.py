"""GAN losses, regularisers, and what every model's objective shares.

One contract for both models, in the spirit of StyleGAN's ``Loss.accumulate_gradients``: an
objective has a generator phase and a discriminator phase; each takes a batch of real images
(``{"a": [N, 3, H, W], "b": ...}`` in [-1, 1]) and returns a :class:`PhaseOutput` with the
phase's total loss, its named terms (``loss/G/cycle_a``, ``loss/D/b``, ...; weighted, so they
sum to the total) and, from the generator phase, the detached translations the discriminator
phase judges. Objectives never step optimisers, log or touch files. During the generator phase
the discriminators are frozen, so they get no gradient from it; the discriminator phase only
sees detached fakes, so the generators get none from it.

Adversarial losses (``loss.gan_mode``), for discriminator logits r (real) and f (fake):
- lsgan (Mao et al. 2017): D: (r - 1)^2 + f^2; G: (f - 1)^2.
- vanilla (Goodfellow et al. 2014): binary cross-entropy on logits; G non-saturating.
- wgangp (Gulrajani et al. 2017): D: f - r + gp_w * (|grad D(x_hat)| - 1)^2 with x_hat on lines
  between real and fake samples; G: -f. (The CycleGAN reference never applies its penalty.)
- hinge (Lim & Ye 2017): D: relu(1 - r) + relu(1 + f); G: -f.
- logistic (StyleGAN): D: softplus(f) + softplus(-r) + r1_gamma / 2 * |grad D(real)|^2,
  the R1 term computed lazily every r1_every steps and scaled by r1_every; G: softplus(-f).
Means are over all patch logits; a multi-scale discriminator's scales are summed, as in MUNIT.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from i2i.config import LossConfig
from i2i.models import Networks
from i2i.models.perceptual import PerceptualLoss

Logits = torch.Tensor | Sequence[torch.Tensor]


def _scales(logits: Logits) -> Sequence[torch.Tensor]:
    return [logits] if isinstance(logits, torch.Tensor) else logits


class GANLoss:
    """The adversarial loss of ``mode`` for the generator and the discriminator (penalties
    apart)."""

    def __init__(self, mode: str):
        if mode not in ("lsgan", "vanilla", "wgangp", "hinge", "logistic"):
            raise ValueError(f"unknown gan mode {mode!r}")
        self.mode = mode

    def generator(self, fake: Logits) -> torch.Tensor:
        return sum(self._g(f.float()) for f in _scales(fake))  # type: ignore[return-value]

    def discriminator(self, real: Logits, fake: Logits) -> torch.Tensor:
        return sum(self._d(r.float(), f.float()) for r, f in zip(_scales(real), _scales(fake)))  # type: ignore[return-value]

    def _g(self, f: torch.Tensor) -> torch.Tensor:
        if self.mode == "lsgan":
            return (f - 1).square().mean()
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
        if self.mode == "logistic":
            return F.softplus(-f).mean()
        return -f.mean()  # wgangp, hinge

    def _d(self, r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if self.mode == "lsgan":
            return (r - 1).square().mean() + f.square().mean()
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(
                r, torch.ones_like(r)
            ) + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
        if self.mode == "logistic":
            return F.softplus(f).mean() + F.softplus(-r).mean()
        if self.mode == "hinge":
            return F.relu(1 - r).mean() + F.relu(1 + f).mean()
        return f.mean() - r.mean()  # wgangp


def _input_gradient(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d(sum of D's logits)/dx per sample, [N, C*H*W], kept in the graph for a penalty."""
    x = x.detach().requires_grad_(True)
    out = sum(o.float().sum() for o in _scales(D(x)))
    (grad,) = torch.autograd.grad(out, x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(
    D: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator | None = None
) -> torch.Tensor:
    """WGAN-GP: mean over samples of (||grad_x D(x_hat)||_2 - 1)^2,
    x_hat = e real + (1 - e) fake."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=rng, dtype=real.dtype)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    grad = _input_gradient(D, x_hat)
    return (grad.norm(2, dim=1) - 1).square().mean()


def r1_penalty(D: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over samples of ||grad_x D(x)||^2 on real images."""
    return _input_gradient(D, real).square().sum(1).mean()


class ImagePool:
    """A buffer of past fakes (Shrivastava et al. 2017), as the CycleGAN reference keeps it.

    Until ``size`` images are stored, each query image is stored and returned. After that, each
    image is, with probability 1/2, swapped with a random stored image (the stored one is
    returned), or otherwise returned as is. ``size`` 0 returns the query unchanged.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.rng) < 0.5:
                i = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": [i.cpu() for i in self.images], "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.images = [i.to(device) for i in state["images"]]
        self.rng.set_state(state["rng"])


@dataclass
class PhaseOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # detached scalars, weighted: they sum to ``loss``
    fakes: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # "ab": A->B translations, detached


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` take part in the forward pass as constants (no gradient)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def summed(
    terms: dict[str, torch.Tensor], prefix: str, fakes: dict[str, torch.Tensor] | None = None
) -> PhaseOutput:
    loss = sum(terms.values())
    detached = {f"{prefix}/{k}": v.detach() for k, v in terms.items()}
    detached[f"{prefix}/total"] = loss.detach()  # type: ignore[union-attr]
    return PhaseOutput(loss, detached, {k: v.detach() for k, v in (fakes or {}).items()})  # type: ignore[arg-type]


class Objective:
    """What both objectives share: the adversarial loss, discriminator penalties, the
    perceptual loss."""

    def __init__(
        self, nets: Networks, cfg: LossConfig, perceptual: nn.Module | None = None, seed: int = 0
    ):
        self.nets, self.cfg = nets, cfg
        self.gan = GANLoss(cfg.gan_mode)
        if cfg.vgg_w > 0 and perceptual is None:
            raise ValueError(
                "loss.vgg_w > 0 needs the perceptual network (i2i.models.perceptual.PerceptualLoss)"
            )
        self.perceptual = perceptual if cfg.vgg_w > 0 else None
        self.rng = torch.Generator().manual_seed(seed)  # for the gradient penalty's mixing

    def to(self, device: torch.device | str) -> "Objective":
        if self.perceptual is not None:
            self.perceptual.to(device)
        return self

    def state_dict(self) -> dict:
        """The objective's own state: random generators (and image pools), for exact resumes."""
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.rng.set_state(state["rng"])

    def discriminator_terms(
        self,
        real: dict[str, torch.Tensor],
        fake: dict[str, torch.Tensor],
        step: int,
        scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Adversarial D loss of each domain (times ``scale`` and gan_w) plus its penalties.

        ``fake[d]`` are translations into domain d, judged by ``D[d]`` against ``real[d]``.
        """
        cfg, terms = self.cfg, {}
        for d in [d for d in ("a", "b") if d in fake]:
            D = self.nets.D[d]
            terms[d] = scale * cfg.gan_w * self.gan.discriminator(D(real[d]), D(fake[d]))
            if cfg.gan_mode == "wgangp" and cfg.gp_w > 0:
                rng = self.rng if real[d].device.type == "cpu" else None
                terms[f"gp_{d}"] = cfg.gp_w * gradient_penalty(D, real[d], fake[d], rng)
            if cfg.gan_mode == "logistic" and cfg.r1_gamma > 0 and step % cfg.r1_every == 0:
                terms[f"r1_{d}"] = cfg.r1_gamma / 2 * cfg.r1_every * r1_penalty(D, real[d])
        return terms

    def perceptual_terms(
        self, outputs: dict[str, torch.Tensor], sources: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """vgg_d: perceptual distance between the translation into domain d and its source image."""
        if self.perceptual is None:
            return {}
        return {
            f"vgg_{d}": self.cfg.vgg_w * self.perceptual(outputs[d], sources[d])
            for d in ("a", "b")
            if d in outputs
        }


def build_objective(
    nets: Networks,
    cfg: LossConfig,
    seed: int = 0,
    pretrained_vgg: bool = True,
    section: object | None = None,
) -> Objective:
    """The objective of ``nets``' model (its :class:`i2i.model_registry.ModelSpec`), with the
    model's params ``section`` (default: the model's defaults); builds the VGG16 only when
    ``loss.vgg_w`` > 0, with ImageNet weights or (``pretrained_vgg=False``) random ones from the
    current torch seed."""
    from i2i import model_registry as registry

    spec = registry.spec(nets.name)
    perceptual = PerceptualLoss(pretrained_vgg) if cfg.vgg_w > 0 else None
    return spec.objective(nets, section or spec.config(), cfg, perceptual, seed)
