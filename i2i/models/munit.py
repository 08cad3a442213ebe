"""MUNIT networks (Huang et al., ECCV 2018, Sec. 3 and appendix B), faithful to NVlabs/MUNIT.

Per domain, an auto-encoder: a content encoder (instance-normalised downsampling and residual
blocks) and a style encoder (downsampling, global average pooling, 1x1 conv to a style code)
produce (c, s); a decoder rebuilds the image from c through residual blocks whose AdaIN
parameters an MLP computes from s, then upsampling levels with MUNIT's LayerNorm. The
discriminator is a multi-scale PatchGAN. At the edges2shoes settings the parameter counts and
shapes equal the reference's (tests pin them), and so does their order except in the decoder's
upsampling blocks: the reference's Conv2dBlock registers its LayerNorm before its conv, this
ConvBlock after it.

Unlike the reference, the AdaIN parameters travel as an argument of the decoder's forward pass
instead of being assigned onto modules before each call, so a decoder can be called
concurrently and traced by torch.compile; the arithmetic is the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from i2i.config import Init, LossConfig, bounded
from i2i.losses import Objective, PhaseOutput, frozen, summed
from i2i.errors import I2IError
from i2i.models import Networks, materialised
from i2i.models.layers import (
    LayerNorm,
    activation,
    adaptive_instance_norm,
    check_image,
    init_weights,
    pad_2d,
)
from i2i.model_registry import ModelSpec
from i2i.models.reference import ReferenceFormat, empty, fit, strip


class ConvBlock(nn.Module):
    """MUNIT's Conv2dBlock: explicit padding, conv (with bias), norm (none | in | ln),
    activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        padding: int,
        norm: str = "none",
        act: str = "relu",
        pad_type: str = "reflect",
    ):
        super().__init__()
        self.pad = pad_2d(pad_type, padding)
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = {
            "none": nn.Identity,
            "in": lambda: nn.InstanceNorm2d(cout),
            "ln": lambda: LayerNorm(cout),
        }[norm]()
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.pad(x))))


class ResBlock(nn.Module):
    """x + [conv3x3, norm, act, conv3x3, norm](x); ``norm='adain'`` takes per-sample (mean, std)."""

    def __init__(self, dim: int, norm: str, act: str, pad_type: str):
        super().__init__()
        self.adain = norm == "adain"
        inner = "none" if self.adain else norm
        self.conv1 = ConvBlock(dim, dim, 3, 1, 1, inner, "none", pad_type)
        self.conv2 = ConvBlock(dim, dim, 3, 1, 1, inner, "none", pad_type)
        self.act = activation(act)

    def forward(self, x: torch.Tensor, adain: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        y = self.conv1(x)
        if self.adain:
            y = adaptive_instance_norm(y, adain[0], adain[1])
        y = self.act(y)
        y = self.conv2(y)
        if self.adain:
            y = adaptive_instance_norm(y, adain[2], adain[3])
        return x + y


class StyleEncoder(nn.Module):
    """Image -> style code [N, style_dim, 1, 1]; no normalisation (it would erase style)."""

    def __init__(
        self,
        n_downsample: int,
        dim: int,
        style_dim: int,
        act: str,
        pad_type: str,
        in_channels: int = 3,
    ):
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(in_channels, dim, 7, 1, 3, "none", act, pad_type)]
        for i in range(n_downsample):
            nxt = dim * 2 if i < 2 else dim  # channels double twice, then stay
            layers.append(ConvBlock(dim, nxt, 4, 2, 1, "none", act, pad_type))
            dim = nxt
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1, 1, 0)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ContentEncoder(nn.Module):
    """Image -> content code [N, dim * 2**k, H / 2**k, W / 2**k] with k = n_downsample."""

    def __init__(
        self, n_downsample: int, n_res: int, dim: int, act: str, pad_type: str, in_channels: int = 3
    ):
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(in_channels, dim, 7, 1, 3, "in", act, pad_type)]
        for _ in range(n_downsample):
            layers.append(ConvBlock(dim, dim * 2, 4, 2, 1, "in", act, pad_type))
            dim *= 2
        layers += [ResBlock(dim, "in", act, pad_type) for _ in range(n_res)]
        self.model = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Decoder(nn.Module):
    """Content code + AdaIN parameters -> image: AdaIN residual blocks, then per level nearest x2
    upsampling, 5x5 conv, LayerNorm, activation; a final 7x7 conv and tanh."""

    def __init__(
        self, n_upsample: int, n_res: int, dim: int, act: str, pad_type: str, out_channels: int = 3
    ):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(dim, "adain", act, pad_type) for _ in range(n_res))
        layers: list[nn.Module] = []
        for _ in range(n_upsample):
            layers += [
                nn.Upsample(scale_factor=2),
                ConvBlock(dim, dim // 2, 5, 1, 2, "ln", act, pad_type),
            ]
            dim //= 2
        layers.append(ConvBlock(dim, out_channels, 7, 1, 3, "none", "tanh", pad_type))
        self.up = nn.Sequential(*layers)
        self.num_adain_params = n_res * 2 * 2 * self.res[0].conv1.conv.out_channels if n_res else 0

    def forward(self, content: torch.Tensor, adain_params: torch.Tensor) -> torch.Tensor:
        # adain_params [N, num_adain_params]: per AdaIN layer in order, C means then C stds.
        chunks = (
            adain_params.split(self.res[0].conv1.conv.out_channels, dim=1) if len(self.res) else ()
        )
        x = content
        for i, block in enumerate(self.res):
            x = block(x, chunks[4 * i : 4 * i + 4])
        return self.up(x)


class MLP(nn.Module):
    """Style code -> every AdaIN mean and std of the decoder: n_blk linear layers, ReLU between."""

    def __init__(self, in_dim: int, out_dim: int, dim: int, n_blk: int, act: str):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, dim), activation(act)]
        for _ in range(n_blk - 2):
            layers += [nn.Linear(dim, dim), activation(act)]
        layers.append(nn.Linear(dim, out_dim))
        self.model = nn.Sequential(*layers)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.model(s.flatten(1))  # [N, style_dim, 1, 1] -> [N, out_dim]


class MunitGenerator(nn.Module):
    """One domain's auto-encoder: ``encode(x) -> (c, s)``, ``decode(c, s) -> x``."""

    def __init__(
        self,
        dim: int = 64,
        style_dim: int = 8,
        n_downsample: int = 2,
        n_res: int = 4,
        mlp_dim: int = 256,
        act: str = "relu",
        pad_type: str = "reflect",
        in_channels: int = 3,
    ):
        super().__init__()
        self.style_dim, self.n_downsample, self.in_channels = style_dim, n_downsample, in_channels
        self.enc_style = StyleEncoder(4, dim, style_dim, act, pad_type, in_channels)
        self.enc_content = ContentEncoder(n_downsample, n_res, dim, act, pad_type, in_channels)
        self.dec = Decoder(
            n_downsample, n_res, self.enc_content.out_channels, act, pad_type, in_channels
        )
        self.mlp = MLP(style_dim, self.dec.num_adain_params, mlp_dim, 3, act)

    @property
    def multiple(self) -> int:
        return 2**self.n_downsample

    minimum = 16  # the style encoder's four stride-2 convs

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_image(
            x,
            "MUNIT generator",
            multiple=self.multiple,
            minimum=self.minimum,
            channels=self.in_channels,
        )
        return self.enc_content(x), self.enc_style(x)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if style.dim() != 4 or style.shape[1:] != (self.style_dim, 1, 1):
            raise ValueError(
                f"style code must be [N, {self.style_dim}, 1, 1], got {tuple(style.shape)}"
            )
        return self.dec(content, self.mlp(style))

    def compiled_parts(self) -> list[nn.Module]:
        """What torch.compile compiles: it is called through encode and decode, not forward."""
        return [self.enc_style, self.enc_content, self.dec, self.mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x -> decode(encode(x))."""
        return self.decode(*self.encode(x))

    def random_style(
        self,
        n: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Style codes from the prior N(0, I), [n, style_dim, 1, 1]."""
        return torch.randn(n, self.style_dim, 1, 1, device=device, generator=generator)


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGAN-like CNNs on the image average-pooled by 2 between scales.

    Each CNN: a 4x4 stride-2 conv without norm, n_layer-1 more with ``norm``, a 1x1 conv to one
    logit per patch. Returns the list of logit maps, finest first.
    """

    def __init__(
        self,
        dim: int = 64,
        n_layer: int = 4,
        num_scales: int = 3,
        norm: str = "none",
        act: str = "lrelu",
        pad_type: str = "reflect",
        in_channels: int = 3,
    ):
        super().__init__()
        self.n_layer, self.num_scales, self.in_channels = n_layer, num_scales, in_channels
        self.cnns = nn.ModuleList()
        for _ in range(num_scales):
            d = dim
            layers: list[nn.Module] = [ConvBlock(in_channels, d, 4, 2, 1, "none", act, pad_type)]
            for _ in range(n_layer - 1):
                layers.append(ConvBlock(d, d * 2, 4, 2, 1, norm, act, pad_type))
                d *= 2
            layers.append(nn.Conv2d(d, 1, 1, 1, 0))
            self.cnns.append(nn.Sequential(*layers))

    @property
    def min_size(self) -> int:
        # The coarsest scale sees the input halved (num_scales - 1) times, then n_layer halvings.
        return 2 ** (self.n_layer + self.num_scales - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image(
            x,
            f"multi-scale discriminator ({self.num_scales} scales, n_layer={self.n_layer})",
            minimum=self.min_size,
            channels=self.in_channels,
        )
        outputs = []
        for i, cnn in enumerate(self.cnns):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(cnn(x))  # [N, 1, h_i, w_i]
        return outputs


@dataclass(frozen=True)
class MunitConfig:
    """``model.munit``; the defaults are the reference's edges2shoes configuration."""

    dim: int = bounded(64, ge=1)
    mlp_dim: int = bounded(256, ge=1)
    style_dim: int = bounded(8, ge=1)
    n_downsample: int = bounded(2, ge=0, le=6)
    n_res: int = bounded(4, ge=0)
    activation: Literal["relu", "lrelu"] = "relu"
    padding: Literal["reflect", "replicate", "zero"] = "reflect"
    init: Init = "kaiming"
    dis_dim: int = bounded(64, ge=1)
    dis_n_layer: int = bounded(4, ge=1, le=8)
    dis_num_scales: int = bounded(3, ge=1, le=5)
    dis_norm: Literal["none", "in", "ln"] = "none"
    dis_init: Init = "normal"
    init_gain: float = bounded(0.02, gt=0)


def build(m: MunitConfig, discriminators: bool = True) -> Networks:
    """An auto-encoder per domain, G["a"] and G["b"], and (with ``discriminators``) D["a"],
    D["b"]. Initialised as MUNIT's weights_init (utils.py): N(0, 0.02) for normal, gain sqrt(2)
    for xavier and orthogonal."""

    def gen() -> nn.Module:
        return MunitGenerator(
            m.dim, m.style_dim, m.n_downsample, m.n_res, m.mlp_dim, m.activation, m.padding
        )

    def dis() -> nn.Module:
        return MultiScaleDiscriminator(
            m.dis_dim, m.dis_n_layer, m.dis_num_scales, m.dis_norm, "lrelu", m.padding
        )

    nets = Networks(
        "munit", {"a": gen(), "b": gen()}, {"a": dis(), "b": dis()} if discriminators else {}
    )
    init_weights(nets.G, m.init, m.init_gain, matrix_gain=math.sqrt(2))
    init_weights(nets.D, m.dis_init, m.init_gain, matrix_gain=math.sqrt(2))
    return nets


class MunitObjective(Objective):
    """MUNIT (Huang et al. 2018, eq. 5 and Sec. 5.1), both directions.

    With random styles s_a, s_b ~ N(0, I) and (c_a, s_a') = E_a(x_a):
    G: gan_w * [L_GAN(x_ba, D_a) + L_GAN(x_ab, D_b)] + recon_x_w |G_a(c_a, s_a') - x_a|_1
       + recon_c_w |c_a_recon - c_a|_1 + recon_s_w |s_a_recon - s_a|_1
       + recon_x_cyc_w |x_aba - x_a|_1 + vgg_w P(x_ba, x_b) + (the same with a and b swapped),
       where x_ba = G_a(c_b, s_a), (c_b_recon, s_a_recon) = E_a(x_ba), x_aba = G_a(c_a_recon, s_a').
    D: gan_w * [L_D(D_a) + L_D(D_b)] + penalties.
    """

    def __init__(
        self, nets: Networks, cfg: LossConfig, perceptual: nn.Module | None = None, seed: int = 0
    ):
        super().__init__(nets, cfg, perceptual, seed)
        self.style_rng = torch.Generator().manual_seed(seed + 1)

    def state_dict(self) -> dict:
        return super().state_dict() | {"style_rng": self.style_rng.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        super().load_state_dict(state, device)
        self.style_rng.set_state(state["style_rng"])

    def random_styles(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Style codes s_a, s_b from the prior; drawn on the CPU so runs repeat across devices."""
        g = self.nets.G
        return (
            g["a"].random_style(n, generator=self.style_rng).to(device),
            g["b"].random_style(n, generator=self.style_rng).to(device),
        )

    def generator_phase(
        self,
        real: dict[str, torch.Tensor],
        step: int = 0,
        styles: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> PhaseOutput:
        G, cfg = self.nets.G, self.cfg
        x_a, x_b = real["a"], real["b"]
        s_a, s_b = styles if styles is not None else self.random_styles(x_a.shape[0], x_a.device)
        with frozen(self.nets.D):
            c_a, s_a_prime = G["a"].encode(x_a)
            c_b, s_b_prime = G["b"].encode(x_b)
            x_a_recon, x_ba = G["a"].decode(c_a, s_a_prime), G["a"].decode(c_b, s_a)
            x_b_recon, x_ab = G["b"].decode(c_b, s_b_prime), G["b"].decode(c_a, s_b)
            c_b_recon, s_a_recon = G["a"].encode(x_ba)
            c_a_recon, s_b_recon = G["b"].encode(x_ab)
            terms = {
                "gan_a": cfg.gan_w * self.gan.generator(self.nets.D["a"](x_ba)),
                "gan_b": cfg.gan_w * self.gan.generator(self.nets.D["b"](x_ab)),
                "recon_x_a": cfg.recon_x_w * F.l1_loss(x_a_recon, x_a),
                "recon_x_b": cfg.recon_x_w * F.l1_loss(x_b_recon, x_b),
                "recon_s_a": cfg.recon_s_w * F.l1_loss(s_a_recon, s_a),
                "recon_s_b": cfg.recon_s_w * F.l1_loss(s_b_recon, s_b),
                "recon_c_a": cfg.recon_c_w * F.l1_loss(c_a_recon, c_a),
                "recon_c_b": cfg.recon_c_w * F.l1_loss(c_b_recon, c_b),
            }
            if cfg.recon_x_cyc_w > 0:
                terms["cyc_x_a"] = cfg.recon_x_cyc_w * F.l1_loss(
                    G["a"].decode(c_a_recon, s_a_prime), x_a
                )
                terms["cyc_x_b"] = cfg.recon_x_cyc_w * F.l1_loss(
                    G["b"].decode(c_b_recon, s_b_prime), x_b
                )
            terms |= self.perceptual_terms({"a": x_ba, "b": x_ab}, {"a": x_b, "b": x_a})
        return summed(terms, "loss/G", fakes={"ab": x_ab, "ba": x_ba})

    def discriminator_phase(
        self, real: dict[str, torch.Tensor], fakes: dict[str, torch.Tensor], step: int = 0
    ) -> PhaseOutput:
        fake = {"a": fakes["ba"], "b": fakes["ab"]}
        return summed(self.discriminator_terms(real, fake, step), "loss/D")


# The reference's released weights: NVlabs/MUNIT saves ``gen_<iteration>.pt`` as
# ``{"a": gen_a.state_dict(), "b": ...}`` (``trainer.py``), each an ``AdaINGen``
# (``networks.py``). Weights cannot show the activation and padding: the section's defaults,
# the published configuration's ``relu`` and ``reflect``, hold.


def _read_released(path: Path, state: object) -> Networks | None:
    if not (
        isinstance(state, dict)
        and set(state) == {"a", "b"}
        and all(isinstance(v, dict) for v in state.values())
        and any(k.startswith("enc_style.") for k in strip(state["a"]))
    ):
        return None
    section, _ = _munit_keys(strip(state["a"]))
    nets = empty({"name": "munit", "munit": section}, str(path))
    for domain in ("a", "b"):
        part = strip(state[domain])
        fit(nets.G[domain], part, _munit_keys(part)[1], f"{path} [{domain!r}]")
    materialised(nets.G, str(path))
    return nets


def _munit_key(key: str, n_downsample: int) -> str:
    """i2i's name for one key of an ``AdaINGen`` state dict."""
    res = n_downsample + 1  # the content encoder's ResBlocks follow its stem and downsamplings
    rules = [
        (
            rf"^enc_content\.model\.{res}\.model\.(\d+)\.model\.(\d+)\.",
            lambda m: f"enc_content.model.{res + int(m[1])}.conv{int(m[2]) + 1}.",
        ),
        (
            r"^dec\.model\.0\.model\.(\d+)\.model\.(\d+)\.",
            lambda m: f"dec.res.{m[1]}.conv{int(m[2]) + 1}.",
        ),
        (r"^dec\.model\.(\d+)\.", lambda m: f"dec.up.{int(m[1]) - 1}."),
        (r"^mlp\.model\.(\d+)\.fc\.", lambda m: f"mlp.model.{2 * int(m[1])}."),
    ]
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def _munit_keys(state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """(i2i's munit config section, {reference key: i2i key}) of one ``AdaINGen``."""
    convs = [k for k in state if re.match(r"enc_content\.model\.\d+\.conv\.weight$", k)]
    res = {m[1] for k in state if (m := re.match(r"enc_content\.model\.\d+\.model\.(\d+)\.", k))}
    styles = [k for k in state if re.match(r"enc_style\.model\.\d+\.weight$", k)]
    if not convs or not styles or "mlp.model.0.fc.weight" not in state:
        raise I2IError("no enc_content, enc_style or mlp weights: not an AdaINGen (MUNIT)")
    section = {
        "dim": int(state["enc_content.model.0.conv.weight"].shape[0]),
        "mlp_dim": int(state["mlp.model.0.fc.weight"].shape[0]),
        "style_dim": int(state[styles[0]].shape[0]),
        "n_downsample": len(convs) - 1,
        "n_res": len(res),
    }
    return section, {k: _munit_key(k, len(convs) - 1) for k in state}


SPEC = ModelSpec(
    "munit",
    MunitConfig,
    build,
    lambda nets, section, loss, perceptual, seed: MunitObjective(nets, loss, perceptual, seed),
    "MUNIT (Huang et al. 2018): content and style codes, many outputs per input, both directions",
    ReferenceFormat("NVlabs' MUNIT (gen_*.pt)", _read_released),
)
