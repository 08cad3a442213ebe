"""A sweep on a real SLURM cluster: one node of munged, slurmctld and slurmd on 127.0.0.1, with
the team's git remote, S3 DVC remote and MLflow server (tests/team.py). Three experiments run as
jobs; one is signalled mid-training as SLURM signals before a time limit, one is cancelled
outright. All three finish, the interrupted ones equal uninterrupted trainings bit for bit, the
server holds three runs, and the submitting clone pulls three experiments with their scores."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from i2i.config import params_from_dict, read_yaml
from i2i.train import TrainPaths, train
from tests.servers import SlurmCluster
from tests.team import Team
from tests.train_helpers import tiny_train_params

pytestmark = [
    pytest.mark.slow,  # a cluster, three servers, three jobs
    pytest.mark.skipif(
        SlurmCluster.unavailable() is not None, reason=str(SlurmCluster.unavailable())
    ),
]

BIN = Path(sys.executable).parent
DVC, I2I = str(BIN / "dvc"), str(BIN / "i2i")
SEEDS = "train.seed=1,2,3"


def _params(sweeps: Path) -> dict:
    p = tiny_train_params(iterations=160, checkpoint_every=20, log_every=20, sample_every=160)
    p["evaluate"]["metrics"] = ["content_iou"]
    p["cluster"] = {
        "root": str(sweeps),
        "time": "20:00",
        "gres": "gpu:1",
        "cpus_per_task": 1,
        "signal_before": 60,
    }
    return p


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A cluster, the team's services, a remote whose data and classifiers were pushed, and the
    submitting clone."""
    base = tmp_path_factory.mktemp("lab")
    cluster = SlurmCluster(base / "slurm")
    try:
        team = Team(base / "team", _params(base / "sweeps"), targets=("classify", "real_features"))
        try:
            yield cluster, team, team.clone("submitter", env=cluster.env)
        finally:
            team.stop()
    finally:
        cluster.stop()


def _wait(what: str, ready, timeout: float = 600, every: float = 0.5) -> None:
    """Poll ``ready`` every ``every`` seconds: 2 where it starts `i2i sweep status`, which would
    otherwise take CPU from the jobs."""
    began = time.monotonic()
    while not ready():
        assert time.monotonic() - began < timeout, f"waited {timeout:.0f} s for {what}"
        time.sleep(every)


def _events(folder: Path) -> list[dict]:
    path = folder / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _checkpoints(folder: Path) -> list[Path]:
    return sorted((folder / "workspace" / "checkpoints").glob("*/ckpt-*.pt"))


def _sweep(submitter, *args: str) -> dict[str, tuple[str, str]]:
    """{experiment: (what, job)} from `i2i sweep`'s lines."""
    out = submitter.run(I2I, "sweep", "-S", SEEDS, *args).stdout
    rows = {}
    for line in out.splitlines():
        name, setting, rest = line.split("  ", 2)
        rows[setting] = (rest, rest.rsplit(" ", 1)[-1])
    return rows


def _states(submitter) -> dict[str, str]:
    out = submitter.run(I2I, "sweep", "status").stdout
    return {
        line.split("  ")[1]: line.split("  ")[2]
        for line in out.splitlines()
        if not line.startswith((" ", "finished ones"))
    }


def test_a_sweep_survives_a_signal_and_a_cancel_and_each_experiment_runs_once(
    lab, tmp_path, monkeypatch
):
    cluster, team, submitter = lab
    first = _sweep(submitter)
    assert sorted(first) == ["train.seed=1", "train.seed=2", "train.seed=3"]
    assert all(what.startswith("submitted") for what, _ in first.values())
    folders = {
        s: next((team.base.parent / "sweeps").glob(f"submitter/*/sweep-seed{s[-1]}-*"))
        for s in first
    }
    signalled, cancelled, plain = "train.seed=1", "train.seed=2", "train.seed=3"
    script = (folders[signalled] / "job.sh").read_text()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --signal=B:USR1@60" in script

    # The first two hold the node's two CPUs. Once each has a checkpoint: SLURM's pre-timeout
    # signal to one (what --signal=B:USR1 sends), an outright cancel of the other.
    _wait("a checkpoint of the first job", lambda: _checkpoints(folders[signalled]))
    cluster.run("scancel", "--signal=USR1", "--batch", first[signalled][1])
    _wait("a checkpoint of the second job", lambda: _checkpoints(folders[cancelled]))
    cluster.run("scancel", first[cancelled][1])
    _wait(
        "the signalled job to requeue itself",
        lambda: any(e["event"] == "requeued" for e in _events(folders[signalled])),
    )
    _wait("the cancel", lambda: _states(submitter)[cancelled] == "failed", every=2)
    failed = submitter.run(I2I, "sweep", "status").stdout
    assert "ended cancelled without finishing" in failed
    # SLURM holds a requeued job back for about two minutes; the test lets it start at once.
    _wait("the requeue", lambda: _states(submitter)[signalled] == "requeued", 120, 2)
    cluster.run("scontrol", "update", f"JobId={first[signalled][1]}", "StartTime=now")

    again = _sweep(submitter)  # the cancelled one is submitted again, the others are left be
    assert (
        again[cancelled][0].startswith("submitted") and again[cancelled][1] != first[cancelled][1]
    )
    assert again[signalled][0] == f"still in job {first[signalled][1]}"
    assert not again[plain][0].startswith("submitted")
    _wait("every experiment", lambda: set(_states(submitter).values()) == {"finished"}, 900, 2)
    assert all(what == "finished" for what, _ in _sweep(submitter).values())  # nothing runs twice

    timeline = sorted(
        (e["time"], s, e["event"], e.get("job", "")) for s, f in folders.items() for e in _events(f)
    )
    t0 = timeline[0][0]
    print("\n".join(f"{t - t0:7.1f} s  {s}  {event} {job}" for t, s, event, job in timeline))
    for s, f in folders.items():
        kinds = [e["event"] for e in _events(f)]
        assert kinds.count("finished") == 1 and kinds.count("ran") == 1, (s, kinds)
        steps = {e["event"]: e for e in _events(f)}
        print(
            s,
            {
                k: {x: v for x, v in e.items() if x not in ("time", "event")}
                for k, e in steps.items()
                if k in ("cloned", "ran", "pushed")
            },
        )
        # the clone, the data and classifiers pulled, the experiment's outputs sent home
        assert steps["cloned"]["bytes"] > 0 and steps["ran"]["pulled_bytes"] > 0
        assert steps["pushed"]["bytes"] > 0
    assert [e["event"] for e in _events(folders[signalled])].count("started") == 2

    _check_results(team, submitter, folders, (signalled, cancelled), tmp_path, monkeypatch)


def _check_results(team, submitter, folders, interrupted, tmp_path, monkeypatch) -> None:
    names = {s: json.loads((f / "job.json").read_text())["name"] for s, f in folders.items()}
    # Three runs on the server, one per experiment: an interrupted one went on in its own run.
    client = MlflowClient(team.mlflow.url)
    runs = client.search_runs([client.get_experiment_by_name("i2i").experiment_id])
    assert sorted(r.data.tags["dvc_exp_name"] for r in runs) == sorted(names.values())
    assert all(r.info.status == "FINISHED" for r in runs)
    resumed = {r.data.tags["dvc_exp_name"] for r in runs if r.data.tags.get("resumed") == "true"}
    assert resumed == {names[s] for s in interrupted}

    for s in interrupted:  # each resumed from its checkpoint and equals an uninterrupted run
        ws = folders[s] / "workspace"
        assert json.loads((ws / "reports/train/summary.json").read_text())["resumed_from"] > 0
        reference = _uninterrupted(ws, tmp_path / s, monkeypatch)
        assert (ws / "reports/train/losses.csv").read_text() == (
            reference / "reports/losses.csv"
        ).read_text()
        ours = torch.load(ws / "models" / "generator.pt", weights_only=False)["generators"]
        theirs = torch.load(reference / "models" / "generator.pt", weights_only=False)
        assert ours.keys() == theirs["generators"].keys()
        for key, value in ours.items():
            assert torch.equal(value, theirs["generators"][key]), (s, key)

    # The jobs wrote nothing into the submitting clone (their workspaces are beside it).
    assert submitter.run("git", "status", "--porcelain", "--untracked-files=all").stdout == ""
    assert not any((submitter.root / p).exists() for p in ("checkpoints", "models", "samples"))
    # Home: the submitting clone pulls the three experiments and sees their scores.
    submitter.run(DVC, "exp", "pull", "origin", *names.values())
    shown = json.loads(submitter.run(DVC, "exp", "show", "--json").stdout)
    scores = {
        e["name"]: e["revs"][0]["data"]["metrics"]["reports/metrics.json"]["data"]
        for b in shown
        for e in b.get("experiments") or []
        if e.get("name")
    }
    assert set(scores) == set(names.values())
    assert all(v["metric/content_iou/ab"] is not None for v in scores.values())


def _uninterrupted(workspace: Path, folder: Path, monkeypatch) -> Path:
    """The same training in one go, in this process, with one thread as the jobs had
    (tests/conftest.py) and a local tracking store."""
    folder.mkdir(parents=True)
    (folder / ".git").mkdir()  # the store's repository
    params = read_yaml((workspace / "params.yaml").read_text())  # as DVC wrote it
    params["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.chdir(folder)
    paths = TrainPaths(
        workspace / "data" / "prepared",
        folder / "checkpoints",
        folder / "models",
        folder / "reports",
    )
    train(params_from_dict(params), paths)
    return folder
