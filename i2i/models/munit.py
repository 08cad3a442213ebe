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

import torch
import torch.nn.functional as F
from torch import nn

from i2i.models.layers import LayerNorm, activation, adaptive_instance_norm, check_image, pad_2d


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
