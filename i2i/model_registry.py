"""The model family: each model's name and the module that defines it.

A model is one module under ``i2i/models/`` that defines a :class:`ModelSpec`: its params
section (a frozen dataclass whose defaults are the reference implementation's values), how to
build its networks, and its objective. Adding a model is that module and one line in
:data:`MODELS`; nothing else in i2i switches on a model's name. ``docs/adding-a-model.md`` walks
through it with CUT.

This module imports nothing heavy: params validation looks names up here, and the model's own
module (with torch) is imported only when its spec is needed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

# name -> "module:attribute" of its ModelSpec.
MODELS = {
    "cyclegan": "i2i.models.cyclegan:SPEC",
    "munit": "i2i.models.munit:SPEC",
    "cut": "i2i.models.cut:CUT",
    "fastcut": "i2i.models.cut:FASTCUT",
}


@dataclass(frozen=True)
class ModelSpec:
    """What i2i needs to know about a model.

    - ``config``: the dataclass of its ``model.<name>`` section in params.yaml; every field has a
      default (the reference's value), so a section may name only what it changes.
    - ``build(section, discriminators)``: its :class:`i2i.models.Networks`, initialised.
    - ``objective(nets, section, loss, perceptual, seed)``: its :class:`i2i.losses.Objective`.
    - ``summary``: one line for listings and errors.
    """

    name: str
    config: type
    build: Callable[[Any, bool], Any]
    objective: Callable[..., Any]
    summary: str


def names() -> tuple[str, ...]:
    return tuple(MODELS)


def spec(name: str) -> ModelSpec:
    """The spec of model ``name``; KeyError for a name not in :data:`MODELS`."""
    module, _, attribute = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
