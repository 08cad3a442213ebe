"""Checkpoints that survive a kill at any moment, and the exported generator.

A checkpoint is one self-describing file (``ckpt-<iteration>.pt``, written to a temporary file
and renamed): the networks, optimisers, schedulers, gradient scaler, image pools, every random
generator, the iteration, the resolved params and the MLflow run id. Each configuration gets its
own folder under the checkpoint root, named by its fingerprint: a hash of the params that shape
the result, the data's content hash and the i2i source code. A re-run with the same
configuration resumes; a changed one (including changed code, which is also what makes DVC
re-run the stage) starts afresh in its own folder, so runs are never mixed. An explicit
``--resume`` from a checkpoint of other params, data or backbones is refused; of other code, it
warns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from i2i import model_registry, sources
from i2i.config import Params, to_dict
from i2i.configuration import RUN_ONLY_KEYS, flatten
from i2i.errors import I2IError
from i2i.io import atomic_path

log = logging.getLogger(__name__)
FORMAT = 1
# What save() writes besides the trainer's parts (i2i.train.Trainables.state_dict).
REQUIRED = {
    "format",
    "iteration",
    "config",
    "data_hash",
    "code",
    "run_id",
    "rows",
    "nets",
    "opt_g",
    "opt_d",
    "sched_g",
    "sched_d",
    "scaler",
    "ranks",
}
# Keys that change how a run is carried out or reported, not what it computes: the run-only
# keys, and the length (a longer run resumes from a shorter one's checkpoints).
NOT_FINGERPRINTED = {*RUN_ONLY_KEYS, "train.iterations"}
NOT_FINGERPRINTED_SECTIONS = ("sample", "evaluate", "backbones", "tracking", "cluster")


class ResumeError(I2IError, RuntimeError):
    """A checkpoint cannot continue this run."""


def result_shaping(config: dict) -> dict[str, Any]:
    """The flattened params of a nested config dict that shape the trained result."""
    return {
        k: v
        for k, v in flatten(config).items()
        if k not in NOT_FINGERPRINTED and not k.startswith(NOT_FINGERPRINTED_SECTIONS)
    }


def fingerprinted(params: Params) -> dict[str, Any]:
    return result_shaping(to_dict(model_registry.resolve(params)))


def code_version() -> str:
    """A hash of the training code (``i2i.train`` and every i2i module it imports): a checkpoint
    belongs to the code that made it."""
    return sources.digest(sources.closure("i2i.train"))


def fingerprint(params: Params, data_hash: str, code: str, backbones: dict[str, str]) -> str:
    """The configuration's folder name: params, data, code and the pretrained backbones used."""
    blob = json.dumps(
        {
            "params": fingerprinted(params),
            "data": data_hash,
            "code": code,
            **({"backbones": backbones} if backbones else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("ckpt-*.pt"))


def save(folder: Path, iteration: int, state: dict[str, Any], keep: int) -> Path:
    path = folder / f"ckpt-{iteration:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "iteration": iteration, **state}, tmp)
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)  # two trainings of one configuration both prune
    return path


def load(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save`, or a :class:`ResumeError` naming the file.

    Only tensors and plain data are unpickled (torch's ``weights_only`` loader): a checkpoint
    holds nothing else, and a file from elsewhere cannot run code when it is read.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # torch names the Python object it would have had to create
            raise ResumeError(f"{path}: not a PyTorch checkpoint file") from None
        raise ResumeError(
            f"{path}: refused: it holds Python objects besides tensors and plain data, and loading "
            f"them could run code. Only checkpoints written by `i2i train` can be resumed"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated, empty, not a torch file: many kinds
        raise ResumeError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)}); it may be "
            f"truncated (a full disk, a partial copy) or not a checkpoint"
        ) from None
    if not isinstance(state, dict):
        raise ResumeError(f"{path}: not an i2i checkpoint (a {type(state).__name__})")
    if state.get("format") not in (None, FORMAT):
        raise ResumeError(
            f"{path}: not an i2i checkpoint of format {FORMAT} (checkpoint format "
            f"{state['format']}, from another i2i version)"
        )
    if not REQUIRED <= set(state):
        raise ResumeError(
            f"{path}: not an i2i checkpoint of format {FORMAT} (it lacks "
            f"{', '.join(sorted(REQUIRED - set(state)))})"
        )
    return state


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def latest(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None. A newest one that does not load (a full disk,
    a file copied in part) is skipped with a warning naming it, for the one before it."""
    for path in reversed(checkpoints(folder)):
        try:
            return load(path)
        except ResumeError as e:
            log.warning("skipping a damaged checkpoint: %s", e)
    return None


@dataclass(frozen=True)
class Resume:
    """Where a run keeps its checkpoints, and the state it continues from (None: from scratch)."""

    folder: Path
    code: str
    state: dict[str, Any] | None
    source: Path  # the --resume file, or the folder whose newest checkpoint was taken

    @property
    def start(self) -> int:
        return self.state["iteration"] if self.state else 0


def find_resume(
    params: Params,
    data_hash: str,
    backbones: dict[str, str],
    root: Path,
    explicit: Path | None = None,
) -> Resume:
    """The configuration's folder under ``root`` and its newest checkpoint that loads, or the
    ``explicit`` checkpoint (``--resume``), refused when made with other params, data or
    backbones."""
    code = code_version()
    folder = root / fingerprint(params, data_hash, code, backbones)
    if explicit is None:
        return Resume(folder, code, latest(folder), folder)
    state = load(explicit)
    check_compatible(state, params, data_hash, backbones, explicit)
    return Resume(folder, code, state, explicit)


def restore(trainer: Any, resume: Resume, device: torch.device, rank: int) -> None:
    """Load ``resume``'s state into ``trainer`` (i2i.train.Trainables); a state the trainer
    cannot take names the checkpoint, its code and torch version."""
    if resume.state is None:
        return
    try:
        trainer.load_state_dict(resume.state, device, rank)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        state = resume.state
        raise ResumeError(
            f"{resume.source}: cannot restore the trainer from the iteration-{resume.start} "
            f"checkpoint, made by i2i code {state.get('code')} with torch "
            f"{state.get('torch', '?')} (now {resume.code}, torch {torch.__version__}): "
            f"{type(e).__name__}: {e}"
        ) from None


def check_compatible(
    state: dict[str, Any], params: Params, data_hash: str, backbones: dict[str, str], source: Path
) -> None:
    """Refuse a checkpoint made with other params, data or backbones, naming what differs."""
    theirs, ours = result_shaping(state["config"]), fingerprinted(params)
    diffs = [
        f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}"
        for k in sorted(set(theirs) | set(ours))
        if theirs.get(k) != ours.get(k)
    ]
    if state.get("data_hash") != data_hash:
        diffs.append(f"data content hash: {state.get('data_hash')} -> {data_hash}")
    if state.get("backbones", {}) != backbones:
        diffs.append(f"pretrained backbones: {state.get('backbones', {})} -> {backbones}")
    if state.get("code") != code_version():
        log.warning(
            "resuming from %s, made by another version of the i2i code (%s, now %s)",
            source,
            state.get("code"),
            code_version(),
        )
    if diffs:
        raise ResumeError(
            f"cannot resume from {source}: it was made with other params, data or backbones "
            f"({'; '.join(diffs)}). "
            f"To start fresh, run without --resume (a new configuration trains in its own folder)."
        )


def export_generators(
    path: Path,
    model_name: str,
    model_config: dict,
    generators: torch.nn.Module | dict[str, torch.Tensor],
    extra: dict[str, Any],
    raw: torch.nn.Module | None = None,
) -> None:
    """Write the generators' weights (a module, or its state dict) with what is needed to
    rebuild them, no optimiser state; ``raw``: the trained weights, when ``generators`` is their
    moving average."""

    def cpu(module: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = module if isinstance(module, dict) else module.state_dict()
        return {k: v.detach().cpu() for k, v in weights.items()}

    state = {
        "format": FORMAT,
        "model": model_name,
        "model_config": model_config,
        "generators": cpu(generators),
        **extra,
    }
    if raw is not None:
        state["generators_raw"] = cpu(raw)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
