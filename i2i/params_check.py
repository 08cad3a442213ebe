"""The checks of a params file that need the registries: every model's section, the metric
names, the dataset name. Loading (:mod:`i2i.config`) checks everything else and leaves these to
the stage that uses each; the params stage, which runs before every other, runs them all, so a
typo anywhere still fails before any work."""

from __future__ import annotations

from i2i.config import Params, ParamsError
from i2i.data.registry import DATASETS
from i2i.metrics.registry import check_names
from i2i.model_registry import resolve


def check_dataset(params: Params, source: str = "<params>") -> None:
    if params.data.dataset not in DATASETS:
        raise ParamsError(
            f"{source}: data.dataset = {params.data.dataset!r}: expected one of "
            f"{', '.join(sorted(DATASETS))}"
        )


def validate(params: Params, source: str = "<params>") -> None:
    """Raise :class:`ParamsError` on the first problem."""
    check_dataset(params, source)
    resolve(params)
    check_names(params.evaluate, source)
