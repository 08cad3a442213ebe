"""The references' released generators, read into i2i's networks, so that they are scored and
used with the same code as a trained run.

- junyanz/pytorch-CycleGAN-and-pix2pix saves one state dict per generator:
  ``<epoch>_net_G_A.pth`` maps A to B, ``<epoch>_net_G_B.pth`` B to A (``cycle_gan_model.py``);
  its pretrained downloads are a single ``latest_net_G.pth`` used by its test model, which i2i
  reads as A to B. Only the ResNet generator (``resnet_<n>blocks``, the released CycleGAN
  models) is mapped.
- NVlabs/MUNIT saves ``gen_<iteration>.pt`` as ``{"a": gen_a.state_dict(), "b": ...}``
  (``trainer.py``), each an ``AdaINGen`` (``networks.py``).

The architecture is read from the weights' shapes (widths, block counts, dropout, norm). What
weights cannot show takes the model section's defaults, which are the references' published
configurations (MUNIT's activation ``relu`` and padding ``reflect``). Keys are renamed onto
i2i's modules by the rules below, then every tensor's shape is checked against the network i2i
builds (without memory, on the meta device; the file's tensors become its weights, so a file
that declares huge widths costs no more memory than it holds); the first key that does not fit
is named in the error. Normalisation running statistics that the references' InstanceNorm layers
saved under older PyTorch (and that neither reference uses at test time) are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from i2i.config import model_from_dict
from i2i.errors import I2IError

if TYPE_CHECKING:
    from i2i.models import Networks

_RUNNING_STATS = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")


def kind(state: object) -> str | None:
    """ "cyclegan" or "munit" for a state dict in a reference's layout, else None."""
    if not isinstance(state, dict) or not state:
        return None
    if set(state) == {"a", "b"} and all(isinstance(v, dict) for v in state.values()):
        return "munit" if any(k.startswith("enc_style.") for k in state["a"]) else None
    keys = [k.removeprefix("module.") for k in state if isinstance(k, str)]
    return "cyclegan" if any(k.startswith("model.") for k in keys) else None


def _cyclegan_keys(state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
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


def _fit(
    target: torch.nn.Module, state: dict[str, torch.Tensor], names: dict[str, str], where: str
) -> None:
    """Load ``state`` renamed by ``names`` into ``target``, every shape checked; the first key
    that does not fit is named."""
    wanted = target.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = names[key]
        if new not in wanted:
            if _RUNNING_STATS.search(key):
                continue
            raise I2IError(f"{where}: key {key!r} has no place in i2i's network (as {new!r})")
        if tuple(value.shape) != tuple(wanted[new].shape):
            raise I2IError(
                f"{where}: key {key!r} has shape {tuple(value.shape)}, i2i's {new!r} needs "
                f"{tuple(wanted[new].shape)}"
            )
        mapped[new] = value
    for key in wanted:
        if key not in mapped and key.endswith("num_batches_tracked"):
            mapped[key] = torch.tensor(0)  # saved by PyTorch >= 0.4.1 only; unused in eval
    missing = [k for k in wanted if k not in mapped]
    if missing:
        raise I2IError(f"{where}: no weight for i2i's {missing[0]!r} ({len(missing)} missing)")
    target.load_state_dict(mapped, assign=True)  # the file's tensors: nothing else allocated


def _junyanz_files(path: Path) -> dict[str, Path]:
    """The direction of each junyanz generator file: G_A maps A to B, G_B B to A; a lone file
    (a pretrained ``latest_net_G.pth``) maps A to B. The other direction's file beside it is
    read too."""
    m = re.match(r"(.*_G)_([AB])(\.pth?)$", path.name)
    if not m:
        return {"ab": path}
    pair = {d: path.with_name(f"{m[1]}_{s}{m[3]}") for d, s in (("ab", "A"), ("ba", "B"))}
    return {d: p for d, p in pair.items() if p.is_file()}


def load(path: Path, state: dict) -> Networks:
    """The generators of a reference's file ``path`` (whose contents are ``state``)."""
    from i2i.models import Networks, empty_generators, materialised

    found = kind(state)
    if found is None:
        raise I2IError(
            f"{path}: not a generator file of i2i train, junyanz's CycleGAN (*_net_G*.pth) or "
            f"NVlabs' MUNIT (gen_*.pt)"
        )
    if found == "munit":
        section, _ = _munit_keys(_strip(state["a"]))
        config = {"name": "munit", "munit": section}
        nets = empty_generators(model_from_dict(config, source=str(path)))
        for domain in ("a", "b"):
            part = _strip(state[domain])
            _fit(nets.G[domain], part, _munit_keys(part)[1], f"{path} [{domain!r}]")
        materialised(nets.G, str(path))
        return nets
    generators = {}
    for direction, file in _junyanz_files(path).items():
        part = _strip(state if file == path else torch.load(file, "cpu", weights_only=True))
        try:
            section, names = _cyclegan_keys(part)
        except I2IError as e:
            raise I2IError(f"{file}: {e}") from None
        config = {"name": "cyclegan", "cyclegan": section}
        nets = empty_generators(model_from_dict(config, source=str(file)))
        _fit(nets.G["ab"], part, names, str(file))
        materialised(nets.G["ab"], str(file))
        generators[direction] = nets.G["ab"]
    return Networks("cyclegan", generators, {})


def _strip(state: dict) -> dict[str, torch.Tensor]:
    """Without the ``module.`` prefix that a DataParallel-wrapped network saves."""
    return {k.removeprefix("module."): v for k, v in state.items()}
