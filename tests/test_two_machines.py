"""Two machines, one project: two clones share a bare git remote, an S3-compatible DVC remote
(moto) and an MLflow server, all real processes on 127.0.0.1. Clone 1 runs an experiment and
pushes it; clone 2 pulls it, sees it, gets its model without training and translates with it;
`i2i compare` on clone 2 lists both clones' runs; experiments queued on both do not collide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import save_image
from tests.team import Machine, Team
from tests.train_helpers import tiny_train_params

pytestmark = pytest.mark.slow  # three servers, several pipeline runs

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


def _stale(machine: Machine) -> set[str]:
    """The stages `dvc repro` would run, but for the three that always run (cheap checks)."""
    status = json.loads(machine.run(DVC, "status", "--json").stdout)
    return set(status) - {"params", "code", "backbones"}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The services, a seeded remote (baseline reproduced, pushed) and two fresh clones."""
    params = tiny_train_params()
    params["backbones"].update(policy="fallback", mirror="http://127.0.0.1:9/")
    t = Team(tmp_path_factory.mktemp("team"), params)
    yield t.mlflow, [t.clone("one"), t.clone("two")]
    t.stop()


def test_pull_gets_data_models_and_classifiers_without_running_a_stage(team):
    _, (one, _) = team
    one.run(DVC, "pull")
    for out in ("data/prepared/manifest.json", "models/generator.pt", "classifiers"):
        assert (one.root / out).exists(), out
    assert _stale(one) == set()


def test_an_experiment_pushed_on_one_machine_is_used_on_the_other(team, tmp_path):
    mlflow, (one, two) = team
    one.run(DVC, "pull")
    one.run(DVC, "exp", "run", "-n", "from-one", "-S", "loss.identity_w=0")
    one.run(DVC, "exp", "push", "origin", "from-one")

    two.run(DVC, "pull")
    two.run(DVC, "exp", "pull", "origin", "from-one")
    shown = json.loads(two.run(DVC, "exp", "show", "--json").stdout)
    names = [e.get("name") for b in shown for e in b.get("experiments") or []]
    assert "from-one" in names
    client = MlflowClient(mlflow.url)
    runs_before = len(client.search_runs([client.get_experiment_by_name("i2i").experiment_id]))
    two.run(DVC, "exp", "apply", "from-one")
    assert _stale(two) == set()  # its outputs came from the remote: nothing would run
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    save_image(tmp_path / "photo.png", image)
    two.run(
        str(BIN / "i2i"),
        "translate",
        str(tmp_path / "photo.png"),
        "--direction",
        "ab",
        "--out",
        str(tmp_path / "out"),
    )
    assert (tmp_path / "out" / "photo.png").is_file()
    # nothing trained on machine two
    exp = client.get_experiment_by_name("i2i").experiment_id
    assert len(client.search_runs([exp])) == runs_before


def test_experiments_queued_on_two_machines_stay_one_run_each(team):
    mlflow, machines = team
    for m in machines:
        m.run(DVC, "pull")
        m.run(DVC, "exp", "run", "--queue", "-S", "train.seed=7")  # the same change on both
    workers = [
        subprocess.Popen(
            [DVC, "exp", "run", "--run-all"],
            cwd=m.root,
            env=m.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for m in machines
    ]
    assert [w.wait(timeout=900) for w in workers] == [0, 0]
    queued = []
    for m in machines:
        shown = json.loads(m.run(DVC, "exp", "show", "--json").stdout)
        queued += [
            e["name"]
            for b in shown
            for e in b.get("experiments") or []
            if e.get("name") and any(r.get("data", {}).get("params") for r in e["revs"])
        ]
    client = MlflowClient(mlflow.url)
    runs = client.search_runs(
        [client.get_experiment_by_name("i2i").experiment_id], "params.`train.seed` = '7'"
    )
    names = [r.data.tags.get("dvc_exp_name") for r in runs]
    assert len(runs) == 2 and len(set(names)) == 2 and None not in names
    assert all(r.info.status == "FINISHED" for r in runs)
    # i2i compare on machine two lists both machines' runs
    compare = machines[1].run(str(BIN / "i2i"), "compare")
    assert all(name in compare.stdout for name in names)
    # everything a run logs is on the server: params, scores, grids, gallery, model
    run = runs[0]
    assert run.data.params["train.seed"] == "7" and "metric/content_iou/ab" in run.data.metrics
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/index.html" in listed and any(p.endswith("00000006.png") for p in listed)
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
