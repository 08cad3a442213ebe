"""The model family: each model's name and the module that defines it.

A model is one module under ``i2i/models/`` that defines a :class:`ModelSpec`: its params
section (a frozen dataclass whose defaults are the reference implementation's values), how to
build its networks, and its objective. Adding a model is that module and one line in
:data:`MODELS`; nothing else in i2i switches on a model's name. ``docs/adding-a-model.md`` walks
through it with CUT.

This module imports nothing heavy: the model's own module (with torch) is imported only when
its spec is needed. Loading params.yaml (:mod:`i2i.config`) keeps the model sections as written;
:func:`resolve` checks them against their models' dataclasses where a model is used.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from i2i.config import ModelConfig, Params, ParamsError, section_from_dict

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
    - ``reference``: how to read the reference's released generators, when it releases them
      (a :class:`i2i.models.reference.ReferenceFormat`).
    """

    name: str
    config: type
    build: Callable[[Any, bool], Any]
    objective: Callable[..., Any]
    summary: str
    reference: Any = None


def names() -> tuple[str, ...]:
    return tuple(MODELS)


def spec(name: str) -> ModelSpec:
    """The spec of model ``name``; KeyError for a name not in :data:`MODELS`."""
    module, _, attribute = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


Resolvable = TypeVar("Resolvable", Params, ModelConfig)


def resolve(obj: Resolvable) -> Resolvable:
    """``obj`` (params, or a model section alone) with its selected model's section typed.

    Every section present is checked against its model's dataclass, so a typo in one not
    selected fails too; raise :class:`i2i.config.ParamsError` naming the key. Idempotent."""
    if isinstance(obj, Params):
        return dataclasses.replace(obj, model=resolve(obj.model))
    if obj.resolved is not None:
        return obj
    for key in obj.raw:
        if key not in MODELS:
            allowed = ("name", *names())
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{obj.prefix}{close[0]}'?)" if close else ""
            raise ParamsError(
                f"{obj.source}: unknown key '{obj.prefix}{key}'{hint}; keys allowed in "
                f"{obj.prefix.rstrip('.')}: name and a section per model: {', '.join(names())}"
            )
    if obj.name not in MODELS:
        raise ParamsError(
            f"{obj.source}: {obj.prefix}name = {obj.name!r}: expected one of {', '.join(names())}"
        )
    sections = {name: _section(obj, name) for name in dict.fromkeys([*obj.raw, obj.name])}
    return dataclasses.replace(obj, resolved=sections[obj.name])


def _section(model: ModelConfig, name: str) -> Any:
    config = spec(name).config
    if name not in model.raw:
        return config()
    return section_from_dict(config, model.raw[name], f"{model.prefix}{name}.", model.source)
