"""The validation split: held-out training images pick the best iteration, and the test set is
never read during training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from i2i.config import params_from_dict
from i2i.data.loader import train_loader
from i2i.errors import I2IError
from i2i.models import load_generators
from i2i.train import TrainPaths, train
from i2i.validation import Validation, split
from tests.train_helpers import prepare, tiny_train_params


def test_the_split_is_seeded_disjoint_and_the_same_for_every_training_seed():
    keep, held = split(10, 0.3, seed=4, domain="a")
    assert len(held) == 3 and len(keep) == 7
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(10))
    again_keep, again_held = split(10, 3, seed=4, domain="a")  # a count: the same draw
    assert held.tolist() == again_held.tolist() and keep.tolist() == again_keep.tolist()
    assert split(10, 3, seed=5, domain="a")[1].tolist() != held.tolist()
    with pytest.raises(I2IError, match=r"train.validation = 10 holds out 10 of domain A's 10"):
        split(10, 10, seed=0, domain="a")
    with pytest.raises(I2IError, match="at least one"):
        split(10, 0.01, seed=0, domain="b")


@pytest.fixture(scope="module")
def prepared_without_tests(tmp_path_factory) -> Path:
    """Prepared data whose test parts are gone: a training that read them would fail."""
    root = tmp_path_factory.mktemp("prepared")
    prepare(root, tiny_train_params())
    for part in ("test_a", "test_b"):
        shutil.rmtree(root / "data" / "prepared" / part)
    return root


def _params(**train) -> dict:
    p = tiny_train_params(iterations=6, checkpoint_every=3, sample_every=3, **train)
    p["train"].update(validation=3, validation_every=2, validation_seed=1)
    return p


def test_training_leaves_the_held_out_images_out_of_its_batches(prepared_without_tests):
    params = params_from_dict(_params())
    data = prepared_without_tests / "data" / "prepared"
    val = Validation(params, data, torch.device("cpu"))
    held = {d: set(val.held[d].names) for d in "ab"}
    assert all(len(names) == 3 for names in held.values())
    loader = train_loader(data, params.data, 2, 0, keep=val.train_indices)
    parts = {"a": loader.dataset.a, "b": loader.dataset.b}
    batches = iter(loader)
    seen = {"a": set(), "b": set()}
    for _ in range(20):
        batch = next(batches)
        for d in "ab":
            seen[d] |= {parts[d].names[int(i)] for i in batch[f"{d}_index"]}
    for d in "ab":
        assert seen[d] and not seen[d] & held[d], d  # trained on, never a held-out image


def test_the_best_iteration_is_picked_on_the_validation_curve_without_the_test_set(
    prepared_without_tests, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    paths = TrainPaths(
        prepared_without_tests / "data" / "prepared",
        tmp_path / "checkpoints",
        tmp_path / "models",
        tmp_path / "reports",
    )
    summary = train(params_from_dict(_params()), paths)  # no test_a/test_b: never read
    best = summary["validation"]
    assert best["metric"] == "content_iou" and best["held_out"] == {"a": 3, "b": 3}

    info = json.loads((tmp_path / "models" / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    curve = {m.step: m.value for m in client.get_metric_history(info["run_id"], "val/content_iou")}
    assert sorted(curve) == [2, 4, 6]  # every validation_every iterations, and the last
    top = max(curve.values())
    assert best["best_iteration"] == min(s for s, v in curve.items() if v == top)
    assert best["best_score"] == pytest.approx(top, abs=1e-6)
    for d in ("ab", "ba"):
        history = client.get_metric_history(info["run_id"], f"val/content_iou/{d}")
        assert len(history) == 3

    # models/generator_best.pt is that iteration's generators: scored again on the held-out
    # images, it gives the logged best score.
    stored = torch.load(tmp_path / "models" / "generator_best.pt", weights_only=True)
    assert stored["iterations"] == best["best_iteration"]
    nets = load_generators(tmp_path / "models" / "generator_best.pt")
    val = Validation(params_from_dict(_params()), paths.data, torch.device("cpu"))
    assert val.score(nets)["val/content_iou"] == pytest.approx(best["best_score"], abs=1e-6)
