"""CycleGAN networks (Zhu et al. 2017, Sec. 4 and appendix 7.2), faithful to the reference code.

ResNet generator (Johnson et al. 2016): c7s1-ngf, d2ngf, d4ngf, N residual blocks, u2ngf, ungf,
c7s1-3 with tanh. U-Net generator (Isola et al. 2017): an encoder-decoder with skip connections,
num_downs stride-2 levels. PatchGAN discriminator: C64-C128-C256-C512 with 4x4 convs, a 70x70
receptive field at n_layers=3; PixelGAN: 1x1 convs. At the reference settings the parameter
count and the order of parameter shapes equal the reference's (tests pin them).

Convolutions carry a bias only when the norm is instance norm (a batch norm's shift makes it
redundant), except the first discriminator conv and the output layers, as in the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from i2i.config import Init, LossConfig, bounded
from i2i.losses import ImagePool, Objective, PhaseOutput, frozen, summed
from i2i.errors import I2IError
from i2i.models import Networks, materialised
from i2i.models.layers import activation, check_image, init_weights, norm_2d
from i2i.model_registry import ModelSpec
from i2i.models.reference import ReferenceFormat, empty, fit, strip


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x)."""

    def __init__(self, dim: int, norm: str, dropout: bool, padding: str = "reflect"):
        super().__init__()
        bias = norm == "instance"
        pad = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d}.get(padding)
        layers: list[nn.Module] = []
        for i in range(2):
            layers += [pad(1)] if pad else []
            layers += [
                nn.Conv2d(dim, dim, 3, padding=0 if pad else 1, bias=bias),
                norm_2d(norm, dim),
            ]
            if i == 0:
                layers += [nn.ReLU(True)] + ([nn.Dropout(0.5)] if dropout else [])
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The reference ``resnet_{n_blocks}blocks`` generator; needs H and W divisible by 4."""

    def __init__(
        self,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        bias = norm == "instance"
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            norm_2d(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # downsampling: ngf -> 2 ngf -> 4 ngf
            c = ngf * 2**i
            layers += [
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                norm_2d(norm, 2 * c),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):  # upsampling: 4 ngf -> 2 ngf -> ngf
            c = ngf * 4 // 2**i
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_2d(norm, c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    multiple = 4  # two stride-2 convs down, two up: sides must divide by 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, "ResNet generator", multiple=self.multiple, channels=self.in_channels)
        return self.model(x)


class UnetBlock(nn.Module):
    """One U-Net level: down, the inner levels, up, with the input concatenated to the output."""

    def __init__(
        self,
        outer: int,
        inner: int,
        sub: nn.Module | None,
        norm: str,
        *,
        in_channels: int | None = None,
        outermost: bool = False,
        dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        bias = norm == "instance"
        down_conv = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up = [
                nn.ReLU(True),
                nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1),
                nn.Tanh(),
            ]
            layers = [down_conv, sub, *up]
        elif sub is None:  # innermost: no norm after its down conv, nothing concatenated below
            up = [
                nn.ReLU(True),
                nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias),
                norm_2d(norm, outer),
            ]
            layers = [nn.LeakyReLU(0.2, True), down_conv, *up]
        else:
            up = [
                nn.ReLU(True),
                nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias),
                norm_2d(norm, outer),
            ]
            layers = [nn.LeakyReLU(0.2, True), down_conv, norm_2d(norm, inner), sub, *up]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    """The reference ``unet_128`` (num_downs 7) / ``unet_256`` (num_downs 8) generator."""

    def __init__(
        self,
        num_downs: int,
        ngf: int = 64,
        norm: str = "instance",
        dropout: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        self.num_downs, self.in_channels = num_downs, in_channels
        block = UnetBlock(ngf * 8, ngf * 8, None, norm)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, block, norm, dropout=dropout)
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * mult, ngf * mult * 2, block, norm)
        self.model = UnetBlock(
            out_channels, ngf, block, norm, in_channels=in_channels, outermost=True
        )

    @property
    def multiple(self) -> int:
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(
            x,
            f"U-Net generator ({self.num_downs} levels)",
            multiple=self.multiple,
            channels=self.in_channels,
        )
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, one stride-1, then a 1-channel map of patch
    logits.

    ``basic`` is n_layers=3, whose output units each see a 70x70 patch.
    """

    def __init__(
        self, ndf: int = 64, n_layers: int = 3, norm: str = "instance", in_channels: int = 3
    ):
        super().__init__()
        bias = norm == "instance"
        self.n_layers, self.in_channels = n_layers, in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            activation("lrelu"),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_2d(norm, ndf * mult),
                activation("lrelu"),
            ]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    @property
    def min_size(self) -> int:
        # n_layers halvings, then two 4x4 stride-1 convs that each shrink the map by one pixel.
        return 2**self.n_layers * 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(
            x,
            f"PatchGAN discriminator (n_layers={self.n_layers})",
            minimum=self.min_size,
            channels=self.in_channels,
        )
        return self.model(x)  # [N, 1, H', W'] patch logits


class PixelDiscriminator(nn.Module):
    """PixelGAN: 1x1 convs, one logit per pixel."""

    def __init__(self, ndf: int = 64, norm: str = "instance", in_channels: int = 3):
        super().__init__()
        bias = norm == "instance"
        self.in_channels = in_channels
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 1),
            activation("lrelu"),
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias),
            norm_2d(norm, ndf * 2),
            activation("lrelu"),
            nn.Conv2d(ndf * 2, 1, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, "PixelGAN discriminator", channels=self.in_channels)
        return self.model(x)  # [N, 1, H, W]


@dataclass(frozen=True)
class CycleGANConfig:
    """``model.cyclegan``; the defaults are the reference's 256 px horse2zebra settings."""

    generator: Literal["resnet", "unet_128", "unet_256"] = "resnet"
    n_blocks: int = bounded(9, ge=1)
    ngf: int = bounded(64, ge=1)
    discriminator: Literal["basic", "n_layers", "pixel"] = "basic"
    n_layers_d: int = bounded(3, ge=1, le=8)
    ndf: int = bounded(64, ge=1)
    norm: Literal["instance", "batch", "none"] = "instance"
    dropout: bool = False
    init: Init = "normal"
    init_gain: float = bounded(0.02, gt=0)


def generator(c: CycleGANConfig) -> nn.Module:
    if c.generator == "resnet":
        return ResnetGenerator(c.ngf, c.n_blocks, c.norm, c.dropout)
    return UnetGenerator({"unet_128": 7, "unet_256": 8}[c.generator], c.ngf, c.norm, c.dropout)


def discriminator(c: CycleGANConfig) -> nn.Module:
    if c.discriminator == "pixel":
        return PixelDiscriminator(c.ndf, c.norm)
    return NLayerDiscriminator(c.ndf, 3 if c.discriminator == "basic" else c.n_layers_d, c.norm)


def build(c: CycleGANConfig, discriminators: bool = True) -> Networks:
    """G["ab"], G["ba"] and (with ``discriminators``) D["a"], D["b"], initialised."""
    nets = Networks(
        "cyclegan",
        {"ab": generator(c), "ba": generator(c)},
        {"a": discriminator(c), "b": discriminator(c)} if discriminators else {},
    )
    init_weights(nets, c.init, c.init_gain)
    return nets


class CycleGANObjective(Objective):
    """CycleGAN (Zhu et al. 2017, eq. 3 with the identity loss of Sec. 5.2).

    G: gan_w * [L_GAN(G_ab, D_b) + L_GAN(G_ba, D_a)] + lambda_a |G_ba(G_ab(a)) - a|_1
       + lambda_b |G_ab(G_ba(b)) - b|_1
       + identity_w * [lambda_b |G_ab(b) - b|_1 + lambda_a |G_ba(a) - a|_1]
       + vgg_w * [P(G_ba(b), b) + P(G_ab(a), a)].
    D: 0.5 * gan_w * [L_D(D_a) + L_D(D_b)] (halved as in the reference) + penalties, judging
       fakes drawn from an ImagePool of ``loss.pool_size`` per domain.
    """

    def __init__(
        self, nets: Networks, cfg: LossConfig, perceptual: nn.Module | None = None, seed: int = 0
    ):
        super().__init__(nets, cfg, perceptual, seed)
        self.pools = {d: ImagePool(cfg.pool_size, seed + i) for i, d in enumerate("ab")}

    def state_dict(self) -> dict:
        return super().state_dict() | {"pools": {d: p.state_dict() for d, p in self.pools.items()}}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        super().load_state_dict(state, device)
        for d, pool in self.pools.items():
            pool.load_state_dict(state["pools"][d], device)

    def generator_phase(self, real: dict[str, torch.Tensor], step: int = 0) -> PhaseOutput:
        G, cfg = self.nets.G, self.cfg
        a, b = real["a"], real["b"]
        with frozen(self.nets.D):
            fake_b, fake_a = G["ab"](a), G["ba"](b)
            rec_a, rec_b = G["ba"](fake_b), G["ab"](fake_a)
            terms = {
                "gan_ab": cfg.gan_w * self.gan.generator(self.nets.D["b"](fake_b)),
                "gan_ba": cfg.gan_w * self.gan.generator(self.nets.D["a"](fake_a)),
                "cycle_a": cfg.lambda_a * F.l1_loss(rec_a, a),
                "cycle_b": cfg.lambda_b * F.l1_loss(rec_b, b),
            }
            if cfg.identity_w > 0:
                terms["idt_b"] = cfg.identity_w * cfg.lambda_b * F.l1_loss(G["ab"](b), b)
                terms["idt_a"] = cfg.identity_w * cfg.lambda_a * F.l1_loss(G["ba"](a), a)
            terms |= self.perceptual_terms({"a": fake_a, "b": fake_b}, {"a": b, "b": a})
        return summed(terms, "loss/G", fakes={"ab": fake_b, "ba": fake_a})

    def discriminator_phase(
        self, real: dict[str, torch.Tensor], fakes: dict[str, torch.Tensor], step: int = 0
    ) -> PhaseOutput:
        fake = {"b": self.pools["b"].query(fakes["ab"]), "a": self.pools["a"].query(fakes["ba"])}
        return summed(self.discriminator_terms(real, fake, step, scale=0.5), "loss/D")


# The reference's released weights: junyanz/pytorch-CycleGAN-and-pix2pix saves one state dict
# per generator, ``<epoch>_net_G_A.pth`` mapping A to B and ``<epoch>_net_G_B.pth`` B to A
# (``cycle_gan_model.py``); its pretrained downloads are a single ``latest_net_G.pth``, used by
# its test model, read here as A to B. Only the ResNet generator (``resnet_<n>blocks``, the
# released CycleGAN models) is mapped.


def _read_released(path: Path, state: object) -> Networks | None:
    if not isinstance(state, dict) or not state:
        return None
    keys = [k.removeprefix("module.") for k in state if isinstance(k, str)]
    if not any(k.startswith("model.") for k in keys):
        return None
    generators = {}
    for direction, file in _junyanz_files(path).items():
        part = strip(state if file == path else torch.load(file, "cpu", weights_only=True))
        try:
            section, names = _junyanz_keys(part)
        except I2IError as e:
            raise I2IError(f"{file}: {e}") from None
        nets = empty({"name": "cyclegan", "cyclegan": section}, str(file))
        fit(nets.G["ab"], part, names, str(file))
        materialised(nets.G["ab"], str(file))
        generators[direction] = nets.G["ab"]
    return Networks("cyclegan", generators, {})


def _junyanz_keys(state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """(i2i's cyclegan config section, {reference key: i2i key}) of one junyanz generator."""
    if any(k.startswith("model.model.") for k in state):
        raise I2IError(
            "a U-Net generator (pix2pix's unet_*): i2i reads junyanz's ResNet generators only"
        )
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    if "model.1.weight" not in state or not blocks:
        raise I2IError(
            "no 'model.1.weight' or no residual blocks 'model.<n>.conv_block.*': not junyanz's "
            "ResNet generator"
        )
    norm = (
        "batch" if "model.2.weight" in state else "instance" if "model.1.bias" in state else "none"
    )
    section = {
        "ngf": int(state["model.1.weight"].shape[0]),
        "n_blocks": len(blocks),
        "norm": norm,
        "dropout": any(".conv_block.6." in k for k in state),
    }
    names = {k: re.sub(r"^(model\.\d+)\.conv_block\.", r"\1.block.", k) for k in state}
    return section, names


def _junyanz_files(path: Path) -> dict[str, Path]:
    """The direction of each junyanz generator file: G_A maps A to B, G_B B to A; a lone file
    (a pretrained ``latest_net_G.pth``) maps A to B. The other direction's file beside it is
    read too."""
    m = re.match(r"(.*_G)_([AB])(\.pth?)$", path.name)
    if not m:
        return {"ab": path}
    pair = {d: path.with_name(f"{m[1]}_{s}{m[3]}") for d, s in (("ab", "A"), ("ba", "B"))}
    return {d: p for d, p in pair.items() if p.is_file()}


SPEC = ModelSpec(
    "cyclegan",
    CycleGANConfig,
    build,
    lambda nets, section, loss, perceptual, seed: CycleGANObjective(nets, loss, perceptual, seed),
    "CycleGAN (Zhu et al. 2017): two generators, both directions, cycle consistency",
    ReferenceFormat("junyanz's CycleGAN (*_net_G*.pth)", _read_released),
)
