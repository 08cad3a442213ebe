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
from i2i.errors import I2IError
from i2i.models.cyclegan import (
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UnetGenerator,
)
from i2i.models.layers import init_weights
from i2i.models.munit import MultiScaleDiscriminator, MunitGenerator
from i2i.models import reference  # noqa: E402 - reads the references' files; no cycle


class Networks(nn.Module):
    """The generators ``G`` and discriminators ``D`` of one model, as two ModuleDicts, and what
    every user of a trained model needs: translation, with or without style codes."""

    def __init__(
        self, name: str, generators: dict[str, nn.Module], discriminators: dict[str, nn.Module]
    ):
        super().__init__()
        self.name = name
        self.G = nn.ModuleDict(generators)
        self.D = nn.ModuleDict(discriminators)

    @property
    def style_dim(self) -> int:
        """The size of a style code; 0 for a model without one (CycleGAN: one output per input)."""
        return 0 if self.name == "cyclegan" else self.G["a"].style_dim

    @property
    def directions(self) -> tuple[str, ...]:
        """The directions this model translates: both, except for a reference CycleGAN file
        that holds one generator."""
        return tuple(self.G) if self.name == "cyclegan" else ("ab", "ba")

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this ..."""
        return max(g.multiple for g in self.G.values())

    @property
    def min_size(self) -> int:
        """... and at least this."""
        return max(self.size_multiple, *(getattr(g, "minimum", 1) for g in self.G.values()))

    def translate(
        self,
        x: torch.Tensor,
        direction: str,
        styles: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Translate images ``x`` [N, 3, H, W] along ``direction`` ("ab" or "ba"):
        [N, M, 3, H, W].

        ``styles`` (MUNIT only): [M, style_dim, 1, 1], the same M codes for every input, or
        [N, M, style_dim, 1, 1], each input its own; None draws one code per input from the
        prior. Without a style code (CycleGAN) M is 1. Each input is encoded once; the decoder
        runs on at most ``batch_size`` images at a time (default: all at once).
        """
        if direction not in self.directions:
            raise ValueError(f"direction {direction!r}: this model translates {self.directions}")
        if not self.style_dim:
            if styles is not None:
                raise ValueError(f"{self.name} is deterministic: it takes no style code")
            return self.G[direction](x)[:, None]
        n, target = x.shape[0], self.G[direction[1]]
        if styles is None:
            styles = target.random_style(n, x.device)[:, None]
        elif styles.dim() == 4:
            styles = styles.expand(n, *styles.shape)
        if styles.dim() != 5 or styles.shape[0] != n or styles.shape[2] != self.style_dim:
            raise ValueError(
                f"styles must be [M, {self.style_dim}, 1, 1] or "
                f"[N={n}, M, {self.style_dim}, 1, 1], "
                f"got {tuple(styles.shape)}"
            )
        m = styles.shape[1]
        content, _ = self.G[direction[0]].encode(x)
        content = content.repeat_interleave(
            m, 0
        )  # [N * M, C, h, w], input-major like styles.flatten(0, 1)
        flat, step = styles.flatten(0, 1), batch_size or n * m
        out = torch.cat(
            [
                target.decode(content[i : i + step], flat[i : i + step])
                for i in range(0, n * m, step)
            ]
        )
        return out.view(n, m, *out.shape[1:])

    def style_of(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """MUNIT: the style codes [N, style_dim, 1, 1] of images ``x`` of ``domain``."""
        if not self.style_dim:
            raise ValueError(f"{self.name} has no style codes")
        return self.G[domain].encode(x)[1]

    def compile_each(self, mode: str | None = None) -> None:
        """torch.compile each network in place (state-dict keys unchanged). MUNIT generators are
        called through encode/decode, so their parts are compiled instead of their forward.
        ``mode``: torch.compile's (``reduce-overhead`` adds CUDA graphs)."""
        parts = list(self.D.values())
        for g in self.G.values():
            parts += [g.enc_style, g.enc_content, g.dec, g.mlp] if self.style_dim else [g]
        for part in parts:
            part.compile(mode=mode)


def build_networks(cfg: ModelConfig, discriminators: bool = True) -> Networks:
    """Construct and initialise the networks ``cfg`` describes (seed torch first for repeatability).

    ``discriminators=False`` builds the generators alone, for inference.
    """
    if cfg.name == "cyclegan":
        c = cfg.cyclegan

        def generator() -> nn.Module:
            if c.generator == "resnet":
                return ResnetGenerator(c.ngf, c.n_blocks, c.norm, c.dropout)
            return UnetGenerator(
                {"unet_128": 7, "unet_256": 8}[c.generator], c.ngf, c.norm, c.dropout
            )

        def discriminator() -> nn.Module:
            if c.discriminator == "pixel":
                return PixelDiscriminator(c.ndf, c.norm)
            return NLayerDiscriminator(
                c.ndf, 3 if c.discriminator == "basic" else c.n_layers_d, c.norm
            )

        nets = Networks(
            "cyclegan",
            {"ab": generator(), "ba": generator()},
            {"a": discriminator(), "b": discriminator()} if discriminators else {},
        )
        init_weights(nets, c.init, c.init_gain)
        return nets
    m = cfg.munit

    def munit_generator() -> nn.Module:
        return MunitGenerator(
            m.dim, m.style_dim, m.n_downsample, m.n_res, m.mlp_dim, m.activation, m.padding
        )

    def munit_discriminator() -> nn.Module:
        return MultiScaleDiscriminator(
            m.dis_dim, m.dis_n_layer, m.dis_num_scales, m.dis_norm, "lrelu", m.padding
        )

    nets = Networks(
        "munit",
        {"a": munit_generator(), "b": munit_generator()},
        {"a": munit_discriminator(), "b": munit_discriminator()} if discriminators else {},
    )
    # MUNIT's weights_init (utils.py): N(0, 0.02) for gaussian, gain sqrt(2) for xavier and
    # orthogonal.
    init_weights(nets.G, m.init, m.init_gain, matrix_gain=math.sqrt(2))
    init_weights(nets.D, m.dis_init, m.init_gain, matrix_gain=math.sqrt(2))
    return nets


def load_generators(
    path: str | Path, device: torch.device | str = "cpu", raw: bool = False
) -> Networks:
    """The generators exported by the train stage (``models/generator.pt``), ready for inference:
    their moving average when training kept one, or with ``raw`` the trained weights. A
    reference's released generator file is read too (:mod:`i2i.models.reference`).

    A file is outside input: its config could declare widths that need terabytes. The networks
    are built without memory (:func:`empty_generators`) and take the file's tensors as their
    own once every key and shape fits, so loading never allocates more than the file holds.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(state, dict) and "model_config" in state and "generators" in state):
        return reference.load(Path(path), state).to(device).eval()
    nets = empty_generators(model_from_dict(state["model_config"], source=str(path)))
    weights = state["generators_raw" if raw and "generators_raw" in state else "generators"]
    nets.G.load_state_dict(weights, assign=True)  # strict: every key, every shape
    materialised(nets.G, str(path))
    return nets.to(device).eval()


def empty_generators(cfg: ModelConfig) -> Networks:
    """The generators of ``cfg`` on the meta device: shapes without storage, for weights from a
    file to be checked against and then assigned (``load_state_dict(..., assign=True)``)."""
    with torch.device("meta"):
        return build_networks(cfg, discriminators=False)


def materialised(module: nn.Module, where: str) -> None:
    """Refuse a network of which a file left part without weights (still on the meta device)."""
    empty = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if empty:
        raise I2IError(f"{where}: no weight for {empty[0]!r} ({len(empty)} missing)")
