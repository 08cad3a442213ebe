"""Resume is exact for every source of randomness the trainer has: train 6 iterations, then
rebuild everything from the iteration-3 checkpoint in a fresh trainer and continue; the final
weights equal the uninterrupted run's bit for bit. (The real `kill -9` of the stage process:
tests/test_train.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from i2i.config import params_from_dict
from i2i.train import TrainPaths, train
from tests.conftest import REPO, write_params
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
    # The generators' moving average: its own state, exported instead of the trained weights.
    "cyclegan-ema": ("cyclegan", {"train": {"ema_images": 16.0}}),
    "munit-ema": ("munit", {"train": {"ema_images": 16.0, "ema_rampup": 0.0}}),
    # A validation split: its best-so-far (iteration, score, weights) travels in the checkpoint.
    "cyclegan-validation": ("cyclegan", {"train": {"validation": 2, "validation_every": 2}}),
    "munit-validation": ("munit", {"train": {"validation": 2, "validation_every": 2}}),
    # One direction, projection heads trained with G, patch locations drawn from its own RNG.
    "cut": ("cut", {}),
    "fastcut": ("fastcut", {}),  # flip equivariance draws from the same RNG
    "cut-ema-hinge": ("cut", {"train": {"ema_images": 16.0}, "loss": {"gan_mode": "hinge"}}),
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


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for every training here: a new one takes seconds to create."""
    return f"sqlite:///{tmp_path_factory.mktemp('resume-store')}/mlflow.db"


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
    case, prepared, store, tmp_path, monkeypatch
):
    model, changes = CASES[case]
    p = tiny_train_params(model, iterations=6, checkpoint_every=3, keep_checkpoints=2)
    _merge(p, changes)
    p["tracking"]["uri"] = store
    straight = _train(tmp_path / "straight", prepared, p, monkeypatch)
    (ckpt,) = (tmp_path / "straight" / "checkpoints").glob("*/ckpt-00000003.pt")
    # A fresh trainer: everything it holds comes from the checkpoint. The global random state
    # it finds on entry must not matter, so scramble it.
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    resumed = _train(tmp_path / "resumed", prepared, p, monkeypatch, resume=ckpt)
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, f"{len(differ)} of {len(straight)} tensors differ, e.g. {differ[:3]}"
    if "validation" in case:  # the best iteration's generators too, from another folder
        a, b = (
            torch.load(tmp_path / n / "models" / "generator_best.pt")
            for n in ("straight", "resumed")
        )
        assert a["validation"] == b["validation"]
        assert all(torch.equal(a["generators"][k], b["generators"][k]) for k in a["generators"])


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_and_resume_stays_exact(
    prepared, store, tmp_path, monkeypatch, caplog
):
    p = tiny_train_params(iterations=9, checkpoint_every=3, keep_checkpoints=3)
    p["tracking"]["uri"] = store
    straight = _train(tmp_path / "straight", prepared, p, monkeypatch)
    # A run killed after iteration 6 whose last checkpoint was cut short (a full disk).
    crashed = tmp_path / "crashed"
    (folder,) = (tmp_path / "straight" / "checkpoints").iterdir()
    (crashed / "checkpoints" / folder.name).mkdir(parents=True)
    for it in (3, 6):
        data = (folder / f"ckpt-{it:08d}.pt").read_bytes()
        (crashed / "checkpoints" / folder.name / f"ckpt-{it:08d}.pt").write_bytes(
            data if it == 3 else data[: len(data) // 2]
        )
    (crashed / ".git").mkdir()
    monkeypatch.chdir(crashed)
    paths = TrainPaths(prepared, crashed / "checkpoints", crashed / "models", crashed / "reports")
    with caplog.at_level("WARNING"):
        summary = train(params_from_dict(p), paths)
    assert summary["resumed_from"] == 3
    assert "ckpt-00000006.pt" in caplog.text and "truncated" in caplog.text
    resumed = torch.load(crashed / "models" / "generator.pt")["generators"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


class _Payload:
    """What a hostile "checkpoint" holds: unpickling it runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_file_that_would_run_code_and_other_non_checkpoints(prepared, tmp_path):
    from i2i import checkpoint

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": 1, "nets": _Payload(marker)}, hostile)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    future = tmp_path / "future.pt"
    torch.save({"format": 2, "iteration": 3}, future)
    expected = {
        hostile: "refused: it holds Python objects",
        text: "not a PyTorch checkpoint file",
        other: "not an i2i checkpoint of format 1 (it lacks",
        future: "checkpoint format 2, from another i2i version",
    }
    for path, message in expected.items():
        with pytest.raises(checkpoint.ResumeError, match=re.escape(message)) as e:
            checkpoint.load(path)
        assert str(path) in str(e.value)
    assert not marker.exists()
    # Through the command line: one line, no traceback, nothing run.
    project = tmp_path / "project"
    project.mkdir()
    write_params(project / "params.yaml", tiny_train_params())
    for path in (hostile, text):
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "stages" / "train.py"),
                "--params",
                "params.yaml",
                "--data",
                str(prepared),
                "--resume",
                str(path),
            ],
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("Error: ") and str(path) in proc.stderr
    assert not marker.exists()


def test_a_checkpoint_the_trainer_cannot_restore_is_a_clear_error(
    prepared, store, tmp_path, monkeypatch
):
    from i2i import checkpoint

    p = tiny_train_params(iterations=3, checkpoint_every=3)
    p["tracking"]["uri"] = store
    _train(tmp_path / "first", prepared, p, monkeypatch)
    (ckpt,) = (tmp_path / "first" / "checkpoints").glob("*/ckpt-00000003.pt")
    state = torch.load(ckpt, weights_only=True)
    state["opt_g"]["param_groups"] = []  # as an optimiser of another torch version might have it
    state["torch"] = "1.0.0"
    torch.save(state, ckpt)
    with pytest.raises(checkpoint.ResumeError) as e:
        _train(tmp_path / "second", prepared, p, monkeypatch, resume=ckpt)
    msg = str(e.value)
    assert str(ckpt) in msg and "cannot restore the trainer" in msg and "torch 1.0.0" in msg


def test_pruning_a_checkpoint_another_training_already_pruned_goes_on(tmp_path, monkeypatch):
    """Two trainings of one configuration share its checkpoint folder and both prune it: the
    older file can be gone between listing the folder and removing it."""
    from i2i import checkpoint

    for it in (1, 2):
        checkpoint.save(tmp_path, it, {}, keep=5)
    listed = checkpoint.checkpoints

    def listed_then_pruned_by_the_other(folder):
        found = listed(folder)
        found[0].unlink()  # the other training removes it first
        return found

    monkeypatch.setattr(checkpoint, "checkpoints", listed_then_pruned_by_the_other)
    checkpoint.save(tmp_path, 3, {}, keep=1)
    assert [p.name for p in listed(tmp_path)] == ["ckpt-00000003.pt"]
