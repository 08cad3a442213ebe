"""Networks only (no optimisers, no I/O): building them from ``model`` params, and translating.

Each model's module builds its :class:`Networks` (:mod:`i2i.model_registry`). Generators come in
two kinds. A translator maps one domain to the other and is keyed by its direction (CycleGAN's
``G["ab"]`` maps A to B, ``G["ba"]`` B to A; CUT has ``G["ab"]`` alone). An auto-encoder with
style codes (it has a ``style_dim``) is keyed by its domain (MUNIT's ``G["a"]``), and any two
translate both ways. ``D["b"]`` judges whether an image is a real B. ``H`` holds networks that
train with the generators but translate nothing (CUT's projection heads).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from i2i.config import ModelConfig, model_from_dict
from i2i.errors import I2IError
from i2i.models import reference  # noqa: E402 - reads the references' files; no cycle


class Networks(nn.Module):
    """The generators ``G`` and discriminators ``D`` of one model, as two ModuleDicts, and what
    every user of a trained model needs: translation, with or without style codes."""

    def __init__(
        self,
        name: str,
        generators: dict[str, nn.Module],
        discriminators: dict[str, nn.Module],
        heads: dict[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.name = name
        self.G = nn.ModuleDict(generators)
        self.D = nn.ModuleDict(discriminators)
        if heads:  # absent otherwise, so other models' state dicts keep their keys
            self.H = nn.ModuleDict(heads)

    @property
    def style_dim(self) -> int:
        """The size of a style code; 0 for translators (one output per input)."""
        return max((getattr(g, "style_dim", 0) for g in self.G.values()), default=0)

    @property
    def directions(self) -> tuple[str, ...]:
        """The directions this model translates: a translator's keys (CUT: A to B only; a
        reference CycleGAN file may hold one generator), both for auto-encoders."""
        return ("ab", "ba") if self.style_dim else tuple(self.G)

    @property
    def generator_side(self) -> nn.ModuleList:
        """What the generator phase trains: the generators and the heads."""
        return nn.ModuleList([self.G, *([self.H] if hasattr(self, "H") else [])])

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
        """torch.compile each network in place (state-dict keys unchanged). A generator called
        through other methods than forward (MUNIT's encode/decode) names its ``compiled_parts``.
        ``mode``: torch.compile's (``reduce-overhead`` adds CUDA graphs)."""
        parts = list(self.D.values())
        for g in self.G.values():
            parts += g.compiled_parts() if hasattr(g, "compiled_parts") else [g]
        for part in parts:
            part.compile(mode=mode)


def build_networks(cfg: ModelConfig, discriminators: bool = True) -> Networks:
    """Construct and initialise the networks ``cfg`` describes (seed torch first for repeatability).

    ``discriminators=False`` builds the generators alone, for inference.
    """
    from i2i import model_registry as registry

    return registry.spec(cfg.name).build(registry.resolve(cfg).section, discriminators)


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
