"""Resume is exact for every source of randomness the trainer has: train 6 iterations, then
rebuild everything from the iteration-3 checkpoint in a fresh trainer and continue; the final
weights equal the uninterrupted run's bit for bit. (The real `kill -9` of the stage process:
tests/test_train.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from i2i.config import params_from_dict
from i2i.train import TrainPaths, train
from tests.train_helpers import prepare, tiny_train_params

# name: (model, changes to the tiny params). Every loss.gan_mode for both models, and each
# option that draws random numbers or changes which passes run.
CASES = {
    **{
        f"{model}-{mode}": (model, {"loss": {"gan_mode": mode, "r1_every": 2}})
        for model in ("cyclegan", "munit")
        for mode in ("lsgan", "vanilla", "wgangp", "hinge", "logistic")
    },
    "cyclegan-dropout": ("cyclegan", {"model": {"cyclegan": {"dropout": True}}}),
    "cyclegan-no-pool": ("cyclegan", {"loss": {"pool_size": 0}}),
    "cyclegan-no-identity": ("cyclegan", {"loss": {"identity_w": 0.0}}),
    "munit-cycle-recon": ("munit", {"loss": {"recon_x_cyc_w": 1.0}}),
    "cyclegan-bf16": (
        "cyclegan",
        {"train": {"precision": "bf16"}, "model": {"cyclegan": {"dropout": True}}},
    ),
    "munit-bf16": ("munit", {"train": {"precision": "bf16"}}),
    "cyclegan-workers-dropout": (
        "cyclegan",
        {"data": {"num_workers": 2}, "model": {"cyclegan": {"dropout": True}}},
    ),
    "munit-workers": ("munit", {"data": {"num_workers": 2}}),
}


def _merge(base: dict, changes: dict) -> None:
    for k, v in changes.items():
        if isinstance(v, dict):
            _merge(base[k], v)
        else:
            base[k] = v


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume-data")
    return prepare(root, tiny_train_params())


def _train(
    folder: Path, prepared: Path, params: dict, monkeypatch, resume: Path | None = None
) -> dict:
    folder.mkdir(parents=True)
    (folder / ".git").mkdir()
    monkeypatch.chdir(folder)
    paths = TrainPaths(prepared, folder / "checkpoints", folder / "models", folder / "reports")
    train(params_from_dict(params), paths, resume)
    return torch.load(folder / "models" / "generator.pt")["generators"]


@pytest.mark.parametrize("case", list(CASES))
def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_runs_weights(
    case, prepared, tmp_path, monkeypatch
):
    model, changes = CASES[case]
    p = tiny_train_params(model, iterations=6, checkpoint_every=3, keep_checkpoints=2)
    _merge(p, changes)
    p["tracking"]["uri"] = f"sqlite:///{tmp_path}/mlflow.db"  # both runs log into one store
    straight = _train(tmp_path / "straight", prepared, p, monkeypatch)
    (ckpt,) = (tmp_path / "straight" / "checkpoints").glob("*/ckpt-00000003.pt")
    # A fresh trainer: everything it holds comes from the checkpoint. The global random state
    # it finds on entry must not matter, so scramble it.
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    resumed = _train(tmp_path / "resumed", prepared, p, monkeypatch, resume=ckpt)
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, f"{len(differ)} of {len(straight)} tensors differ, e.g. {differ[:3]}"
