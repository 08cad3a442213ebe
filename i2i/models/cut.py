"""CUT and FastCUT (Park et al., ECCV 2020), faithful to taesungp/contrastive-unpaired-translation.

One generator G maps A to B; there is no B-to-A model and no cycle. Content is kept by PatchNCE
(``models/patchnce.py``): a patch of the output, passed back through G's encoder, must be
closer to the same location's patch of the input than to the other sampled patches of that
image. Features come from G's own layers ``nce_layers`` (indices into its layer sequence, as
the reference's ``--nce_layers 0,4,8,12,16``); at each layer ``num_patches`` locations are
drawn, shared by the input and the output, and projected by a two-layer MLP head
(``--netF mlp_sample``, width ``head_dim``) onto the unit sphere.

- CUT: ``lambda_nce`` 1 and the identity term ``nce_idt`` (PatchNCE between b and G(b)); the
  two NCE terms are averaged.
- FastCUT: ``lambda_nce`` 10, no identity term, and flip equivariance: with probability 1/2
  the input batch is mirrored, and the output's features are mirrored back before they are
  compared with the (unmirrored) input's.

Networks (``models/networks.py``): the ResNet generator and the PatchGAN with anti-aliased
sampling. A stride-2 conv becomes a stride-1 conv and a [1, 2, 1]² blur with stride 2
(Zhang 2019); a transposed conv becomes a [1, 3, 3, 1]² transposed blur and a 3x3 conv.
xavier init with gain 0.02, instance norm, LSGAN, no image pool. Two departures, both from the
one training loop every model shares: the generator steps before the discriminator (the
reference steps D first, on the same translations), and the heads are trained by the
generators' Adam rather than a second one with the same settings (Adam is per parameter, so
the updates are the same).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from i2i.config import Init, LossConfig, bounded
from i2i.losses import Objective, PhaseOutput, frozen, summed
from i2i.models import Networks
from i2i.models.cyclegan import ResnetBlock
from i2i.models.layers import check_image, init_weights, norm_2d
from i2i.model_registry import ModelSpec


@dataclass(frozen=True)
class CUTConfig:
    """``model.cut``; the defaults are the reference's ``--CUT_mode CUT``."""

    ngf: int = bounded(64, ge=1)
    n_blocks: int = bounded(9, ge=1)
    ndf: int = bounded(64, ge=1)
    n_layers_d: int = bounded(3, ge=1, le=8)
    norm: Literal["instance", "batch", "none"] = "instance"
    dropout: bool = False
    antialias: bool = True
    antialias_up: bool = True
    init: Init = "xavier"
    init_gain: float = bounded(0.02, gt=0)
    lambda_nce: float = bounded(1.0, ge=0)
    nce_idt: bool = True
    nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16)
    num_patches: int = bounded(256, ge=1)
    nce_t: float = bounded(0.07, gt=0)
    head_dim: int = bounded(256, ge=1)
    flip_equivariance: bool = False

    def checks(self) -> Iterator[tuple[str, Any, str]]:
        n = generator_depth(self)
        if not self.nce_layers or list(self.nce_layers) != sorted(set(self.nce_layers)):
            yield "nce_layers", list(self.nce_layers), "expected distinct layer indices, ascending"
        elif not 0 <= self.nce_layers[0] <= self.nce_layers[-1] < n:
            yield "nce_layers", list(self.nce_layers), f"the generator has layers 0 to {n - 1}"


@dataclass(frozen=True)
class FastCUTConfig(CUTConfig):
    """``model.fastcut``; the defaults are the reference's ``--CUT_mode FastCUT``."""

    lambda_nce: float = bounded(10.0, ge=0)
    nce_idt: bool = False
    flip_equivariance: bool = True


def binomial(size: int) -> torch.Tensor:
    """The normalised 2-D binomial filter of ``size`` taps (3: [1, 2, 1] x [1, 2, 1] / 16)."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float32)
    filt = row[:, None] * row[None, :]
    return filt / filt.sum()


class BlurDown(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 1, depthwise [1, 2, 1]² blur, stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", binomial(3)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), "reflect"), self.filt, stride=2, groups=x.shape[1])


class BlurUp(nn.Module):
    """Anti-aliased 2x upsampling: replicate-pad 1, depthwise transposed [1, 3, 3, 1]² blur
    (times 4, the stride squared), stride 2, cropped to exactly twice the input's sides."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", (binomial(4) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(
            F.pad(x, (1, 1, 1, 1), "replicate"), self.filt, stride=2, padding=2, groups=x.shape[1]
        )
        return out[:, :, 1:-1, 1:-1]


def generator_depth(c: CUTConfig) -> int:
    """How many layers the generator's sequence has (``nce_layers`` index into it)."""
    return 4 + 2 * (4 if c.antialias else 3) + c.n_blocks + 2 * (4 if c.antialias_up else 3) + 3


class CUTGenerator(nn.Module):
    """The reference's ResnetGenerator with anti-aliased sampling, as one layer sequence whose
    intermediate outputs :meth:`features` returns. Needs H and W divisible by 4."""

    multiple = 4

    def __init__(self, c: CUTConfig):
        super().__init__()
        bias, ngf = c.norm == "instance", c.ngf
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, ngf, 7, bias=bias),
            norm_2d(c.norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # ngf -> 2 ngf -> 4 ngf
            ch = ngf * 2**i
            stride = 1 if c.antialias else 2
            layers += [
                nn.Conv2d(ch, 2 * ch, 3, stride=stride, padding=1, bias=bias),
                norm_2d(c.norm, 2 * ch),
                nn.ReLU(True),
            ]
            layers += [BlurDown(2 * ch)] if c.antialias else []
        layers += [ResnetBlock(ngf * 4, c.norm, c.dropout) for _ in range(c.n_blocks)]
        for i in range(2):  # 4 ngf -> 2 ngf -> ngf
            ch = ngf * 4 // 2**i
            if c.antialias_up:
                layers += [BlurUp(ch), nn.Conv2d(ch, ch // 2, 3, padding=1, bias=bias)]
            else:
                layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1, bias=bias)]
            layers += [norm_2d(c.norm, ch // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, "CUT generator", multiple=self.multiple, channels=3)
        return self.model(x)

    def features(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """The outputs of layers ``layers`` (ascending), stopping after the last."""
        check_image(x, "CUT generator", multiple=self.multiple, channels=3)
        out = []
        for i, layer in enumerate(self.model[: layers[-1] + 1]):
            x = layer(x)
            if i in layers:
                out.append(x)
        return out

    def channels(self, layers: tuple[int, ...]) -> list[int]:
        """The channel count of each of ``layers``' outputs."""
        found, c = [], 3
        for i, layer in enumerate(self.model[: layers[-1] + 1]):
            c = layer.out_channels if isinstance(layer, nn.Conv2d) else c
            if i in layers:
                found.append(c)
        return found


class CUTDiscriminator(nn.Module):
    """The reference's PatchGAN (``basic``/``n_layers``) with anti-aliased downsampling."""

    def __init__(self, c: CUTConfig):
        super().__init__()
        bias, ndf, stride = c.norm == "instance", c.ndf, 1 if c.antialias else 2
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride, 1), nn.LeakyReLU(0.2, True)]
        layers += [BlurDown(ndf)] if c.antialias else []
        mult = 1
        for n in range(1, c.n_layers_d):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                norm_2d(c.norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
            layers += [BlurDown(ndf * mult)] if c.antialias else []
        prev, mult = mult, min(2**c.n_layers_d, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias),
            norm_2d(c.norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, 1, 1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, "CUT discriminator", channels=3)
        return self.model(x)


class PatchHeads(nn.Module):
    """The projection heads (``PatchSampleF``, mlp_sample): per NCE layer, Linear(C, d), ReLU,
    Linear(d, d), applied to the sampled patches' features, then L2-normalised."""

    def __init__(self, channels: list[int], dim: int):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in channels
        )

    def forward(self, features: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """[B * n, d] per layer: the features at flat locations ``ids`` of every image."""
        out = []
        for mlp, f, idx in zip(self.mlps, features, ids):
            x = mlp(f.permute(0, 2, 3, 1).flatten(1, 2)[:, idx].flatten(0, 1))
            out.append(x / (x.norm(dim=1, keepdim=True) + 1e-7))
        return out


def patch_nce(q: torch.Tensor, k: torch.Tensor, batch: int, temperature: float) -> torch.Tensor:
    """PatchNCE per query patch, [B * n]: q, k [B * n, d] (image-major), k a constant.

    For query i, the positive is key i (the same location); the negatives are the keys of the
    other locations of the same image (their logits stand in for -10 on the diagonal, as the
    reference's). Cross-entropy of the logits / temperature with the positive as the class.
    """
    k = k.detach()
    positive = (q * k).sum(1, keepdim=True)
    qb, kb = q.view(batch, -1, q.shape[1]), k.view(batch, -1, k.shape[1])
    negatives = torch.bmm(qb, kb.transpose(1, 2))
    n = negatives.shape[1]
    eye = torch.eye(n, device=q.device, dtype=torch.bool)[None]
    negatives = negatives.masked_fill(eye, -10.0).view(-1, n)
    logits = torch.cat([positive, negatives], 1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target, reduction="none")


def build(c: CUTConfig, discriminators: bool = True) -> Networks:
    """G["ab"], the heads H["nce"] and (with ``discriminators``) D["b"], xavier-initialised."""
    g = CUTGenerator(c)
    heads = {"nce": PatchHeads(g.channels(c.nce_layers), c.head_dim)} if discriminators else {}
    nets = Networks(
        "fastcut" if isinstance(c, FastCUTConfig) else "cut",
        {"ab": g},
        {"b": CUTDiscriminator(c)} if discriminators else {},
        heads,
    )
    init_weights(nets, c.init, c.init_gain)
    return nets


class CUTObjective(Objective):
    """CUT (Park et al. 2020, eq. 5) and FastCUT.

    G: gan_w L_GAN(G(a), D_b) + lambda_nce PatchNCE(a, G(a)), with the identity term
       (PatchNCE(a, G(a)) + PatchNCE(b, G(b))) / 2 in its place when ``nce_idt``. PatchNCE is
       averaged over the sampled patches and over ``nce_layers``.
    D: 0.5 gan_w L_D(D_b) + penalties.
    """

    def __init__(
        self,
        nets: Networks,
        c: CUTConfig,
        cfg: LossConfig,
        perceptual: nn.Module | None = None,
        seed: int = 0,
    ):
        super().__init__(nets, cfg, perceptual, seed)
        self.c = c
        self.patch_rng = torch.Generator().manual_seed(seed + 1)  # locations and flips

    def state_dict(self) -> dict:
        return super().state_dict() | {"patch_rng": self.patch_rng.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        super().load_state_dict(state, device)
        self.patch_rng.set_state(state["patch_rng"])

    def nce(self, source: torch.Tensor, output: torch.Tensor, flipped: bool) -> torch.Tensor:
        """lambda_nce * PatchNCE between ``source`` and G's ``output`` of it, mean over layers."""
        c, G = self.c, self.nets.G["ab"]
        queries = G.features(output, c.nce_layers)
        if flipped:
            queries = [q.flip(3) for q in queries]
        keys = G.features(source, c.nce_layers)
        ids = [  # drawn on the CPU, so runs repeat across devices
            torch.randperm(k.shape[2] * k.shape[3], generator=self.patch_rng)[: c.num_patches].to(
                k.device
            )
            for k in keys
        ]
        q, k = self.nets.H["nce"](queries, ids), self.nets.H["nce"](keys, ids)
        batch = source.shape[0]
        losses = [patch_nce(qi, ki, batch, c.nce_t).mean() for qi, ki in zip(q, k)]
        return c.lambda_nce * torch.stack(losses).mean()

    def generator_phase(self, real: dict[str, torch.Tensor], step: int = 0) -> PhaseOutput:
        c, a, b = self.c, real["a"], real["b"]
        x = torch.cat([a, b]) if c.nce_idt else a
        flipped = c.flip_equivariance and bool(torch.rand((), generator=self.patch_rng) < 0.5)
        with frozen(self.nets.D):
            out = self.nets.G["ab"](x.flip(3) if flipped else x)
            fake_b = out[: a.shape[0]]
            terms = {"gan_ab": self.cfg.gan_w * self.gan.generator(self.nets.D["b"](fake_b))}
            if c.lambda_nce > 0 and c.nce_idt:
                terms["nce_a"] = 0.5 * self.nce(a, fake_b, flipped)
                terms["nce_b"] = 0.5 * self.nce(b, out[a.shape[0] :], flipped)
            elif c.lambda_nce > 0:
                terms["nce_a"] = self.nce(a, fake_b, flipped)
            terms |= self.perceptual_terms({"b": fake_b}, {"b": a})
        return summed(terms, "loss/G", fakes={"ab": fake_b})

    def discriminator_phase(
        self, real: dict[str, torch.Tensor], fakes: dict[str, torch.Tensor], step: int = 0
    ) -> PhaseOutput:
        terms = self.discriminator_terms(real, {"b": fakes["ab"]}, step, scale=0.5)
        return summed(terms, "loss/D")


def _objective(nets: Networks, c: CUTConfig, loss: LossConfig, perceptual, seed: int):
    return CUTObjective(nets, c, loss, perceptual, seed)


CUT = ModelSpec(
    "cut",
    CUTConfig,
    build,
    _objective,
    "CUT (Park et al. 2020): one generator, A to B, PatchNCE with the identity term",
)
FASTCUT = ModelSpec(
    "fastcut",
    FastCUTConfig,
    build,
    _objective,
    "FastCUT (Park et al. 2020): CUT with lambda_nce 10, no identity term, flip equivariance",
)
