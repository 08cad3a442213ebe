"""Networks only (no optimisers, no I/O): building them from ``model`` params, and translating.

Names follow the domains: CycleGAN's ``G["ab"]`` maps A to B and ``G["ba"]`` B to A; MUNIT's
``G["a"]`` is domain A's auto-encoder. In both, ``D["b"]`` judges whether an image is a real B.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from i2i.config import ModelConfig, model_from_dict
from i2i.models.cyclegan import NLayerDiscriminator, PixelDiscriminator, ResnetGenerator, UnetGenerator
from i2i.models.layers import init_weights
from i2i.models.munit import MultiScaleDiscriminator, MunitGenerator


class Networks(nn.Module):
    """The generators ``G`` and discriminators ``D`` of one model, as two ModuleDicts."""

    def __init__(self, name: str, generators: dict[str, nn.Module], discriminators: dict[str, nn.Module],
                 per_sample: bool = True):
        super().__init__()
        self.name = name
        self.per_sample = per_sample  # each sample's output depends on that sample alone (no batch norm)
        self.G = nn.ModuleDict(generators)
        self.D = nn.ModuleDict(discriminators)


def build_networks(cfg: ModelConfig, discriminators: bool = True) -> Networks:
    """Construct and initialise the networks ``cfg`` describes (seed torch first for repeatability).

    ``discriminators=False`` builds the generators alone, for inference.
    """
    if cfg.name == "cyclegan":
        c = cfg.cyclegan

        def generator() -> nn.Module:
            if c.generator == "resnet":
                return ResnetGenerator(c.ngf, c.n_blocks, c.norm, c.dropout)
            return UnetGenerator({"unet_128": 7, "unet_256": 8}[c.generator], c.ngf, c.norm, c.dropout)

        def discriminator() -> nn.Module:
            if c.discriminator == "pixel":
                return PixelDiscriminator(c.ndf, c.norm)
            return NLayerDiscriminator(c.ndf, 3 if c.discriminator == "basic" else c.n_layers_d, c.norm)

        nets = Networks("cyclegan", {"ab": generator(), "ba": generator()},
                        {"a": discriminator(), "b": discriminator()} if discriminators else {},
                        per_sample=c.norm != "batch" and not c.dropout)
        init_weights(nets, c.init, c.init_gain)
        return nets
    m = cfg.munit

    def munit_generator() -> nn.Module:
        return MunitGenerator(m.dim, m.style_dim, m.n_downsample, m.n_res, m.mlp_dim, m.activation, m.padding)

    def munit_discriminator() -> nn.Module:
        return MultiScaleDiscriminator(m.dis_dim, m.dis_n_layer, m.dis_num_scales, m.dis_norm, "lrelu", m.padding)

    nets = Networks("munit", {"a": munit_generator(), "b": munit_generator()},
                    {"a": munit_discriminator(), "b": munit_discriminator()} if discriminators else {})
    # MUNIT's weights_init (utils.py): N(0, 0.02) for gaussian, gain sqrt(2) for xavier and orthogonal.
    init_weights(nets.G, m.init, m.init_gain, matrix_gain=math.sqrt(2))
    init_weights(nets.D, m.dis_init, m.init_gain, matrix_gain=math.sqrt(2))
    return nets


def load_generators(path: str | Path, device: torch.device | str = "cpu") -> Networks:
    """The generators exported by the train stage (``models/generator.pt``), ready for inference."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    nets = build_networks(model_from_dict(state["model_config"], source=str(path)), discriminators=False)
    nets.G.load_state_dict(state["generators"])
    return nets.to(device).eval()


def translate(nets: Networks, x: torch.Tensor, direction: str, style: torch.Tensor | None = None) -> torch.Tensor:
    """Translate images ``x`` along ``direction`` ("ab" or "ba").

    MUNIT combines the content of ``x`` with ``style`` (a style code of the target domain,
    [N, style_dim, 1, 1]; drawn from the prior when None). CycleGAN is deterministic and takes no style.
    """
    if direction not in ("ab", "ba"):
        raise ValueError(f"direction must be 'ab' or 'ba', got {direction!r}")
    if nets.name == "cyclegan":
        if style is not None:
            raise ValueError("CycleGAN is deterministic: it takes no style code")
        return nets.G[direction](x)
    source, target = nets.G[direction[0]], nets.G[direction[1]]
    content, _ = source.encode(x)
    if style is None:
        style = target.random_style(x.shape[0], x.device)
    return target.decode(content, style)


def translate_styles(nets: Networks, x: torch.Tensor, direction: str, styles: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """MUNIT: every input under each of its own M style codes, encoding each input once.

    ``x`` [N, 3, H, W], ``styles`` [N, M, style_dim, 1, 1] -> [N, M, 3, H, W]; the decoder runs
    on at most ``batch_size`` images at a time.
    """
    if nets.name != "munit":
        raise ValueError("only MUNIT takes style codes; CycleGAN has one output per input")
    if styles.dim() != 5 or styles.shape[0] != x.shape[0]:
        raise ValueError(f"styles must be [N={x.shape[0]}, M, style_dim, 1, 1], got {tuple(styles.shape)}")
    n, m = styles.shape[:2]
    content, _ = nets.G[direction[0]].encode(x)
    content = content.repeat_interleave(m, 0)  # [N * M, C, h, w], input-major like styles.flatten(0, 1)
    flat = styles.flatten(0, 1)
    decoder = nets.G[direction[1]]
    out = torch.cat([decoder.decode(content[i:i + batch_size], flat[i:i + batch_size])
                     for i in range(0, n * m, batch_size)])
    return out.view(n, m, *out.shape[1:])
