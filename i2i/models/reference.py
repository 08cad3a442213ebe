"""The references' released generators, read into i2i's networks, so that they are scored and
used with the same code as a trained run.

Each model whose reference releases weights says how to read them: its spec's ``reference``
(:class:`ReferenceFormat`, in the model's own module). :func:`load` asks each in turn. The
architecture is read from the weights' shapes (widths, block counts, dropout, norm). What
weights cannot show takes the model section's defaults, which are the references' published
configurations. Keys are renamed onto i2i's modules by the model's rules, then :func:`fit`
checks every tensor's shape against the network i2i builds (without memory, on the meta device;
the file's tensors become its weights, so a file that declares huge widths costs no more memory
than it holds); the first key that does not fit is named in the error. Normalisation running
statistics that the references' InstanceNorm layers saved under older PyTorch (and that
neither reference uses at test time) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from i2i.config import model_from_dict
from i2i.errors import I2IError

if TYPE_CHECKING:
    from i2i.models import Networks

_RUNNING_STATS = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")


@dataclass(frozen=True)
class ReferenceFormat:
    """How a reference saves its generators: ``files`` names them for errors and listings
    (e.g. ``junyanz's CycleGAN (*_net_G*.pth)``); ``read(path, state)`` returns the
    generators of a file whose loaded contents are ``state``, or None when they are not in this
    layout (an :class:`i2i.errors.I2IError` when they are, but do not fit)."""

    files: str
    read: Callable[[Path, object], "Networks | None"]


def load(path: Path, state: object) -> Networks:
    """The generators of a reference's file ``path`` (whose contents are ``state``)."""
    from i2i import model_registry as registry

    formats = []
    for name in registry.names():
        found = registry.spec(name).reference
        if found is not None and found not in formats:
            formats.append(found)
    for fmt in formats:
        nets = fmt.read(path, state)
        if nets is not None:
            return nets
    raise I2IError(
        f"{path}: not a generator file of i2i train or of a reference: "
        + ", ".join(f.files for f in formats)
    )


def empty(config: dict, where: str) -> Networks:
    """The generators ``config`` (a ``model`` section) describes, without memory."""
    from i2i.models import empty_generators

    return empty_generators(model_from_dict(config, source=where))


def fit(
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


def strip(state: dict) -> dict[str, torch.Tensor]:
    """Without the ``module.`` prefix that a DataParallel-wrapped network saves."""
    return {k.removeprefix("module."): v for k, v in state.items()}
