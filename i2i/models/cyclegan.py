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

import torch
from torch import nn

from i2i.models.layers import activation, check_image, norm_2d


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
