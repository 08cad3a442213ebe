"""Training against a real `mlflow server` (database backend, artifacts proxied by the server)
on 127.0.0.1: everything lands there, and a server killed and restarted mid-training loses
nothing: training goes on, and the metrics on the server equal losses.csv."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, write_params
from tests.servers import AnswerLosingProxy, MlflowServer
from tests.train_helpers import dvc_repo, project, tiny_train_params

pytestmark = pytest.mark.slow  # a server process and a training

BIN = Path(sys.executable).parent


def _started(folder: Path):
    folder.mkdir()
    s = MlflowServer(folder)
    s.start()
    yield s
    if s.proc.poll() is None:
        s.kill()


@pytest.fixture
def server(tmp_path: Path):
    """A server of the test's own, which it may kill."""
    yield from _started(tmp_path / "server")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A server the tests that leave it running share (one start is seconds): each logs into an
    experiment of its own."""
    yield from _started(tmp_path_factory.mktemp("shared") / "server")


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _wait_for_step(path: Path, step: int, train: subprocess.Popen) -> None:
    while not _rows(path) or int(_rows(path)[-1]["step"]) < step:
        if train.poll() is not None:
            return  # finished (or failed: asserted by the caller)
        time.sleep(0.2)


def test_a_server_killed_and_restarted_mid_training_loses_no_metric(server, tmp_path: Path):
    params = tiny_train_params(
        "cyclegan", iterations=300, checkpoint_every=20, log_every=5, sample_every=100
    )
    params["tracking"]["uri"] = server.url
    root = project(tmp_path / "project", params)
    write_params(root / "params.yaml", params)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    train = subprocess.Popen(
        [sys.executable, str(REPO / "stages" / "train.py"), "--params", "params.yaml"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    losses = root / "reports" / "train" / "losses.csv"
    _wait_for_step(losses, 40, train)
    server.kill()
    killed_at = int(_rows(losses)[-1]["step"])
    _wait_for_step(losses, killed_at + 60, train)  # training goes on without the server
    server.start()
    out, err = train.communicate(timeout=600)
    assert train.returncode == 0, err[-3000:]
    assert killed_at < 300, "the server was killed after training ended: nothing was tested"
    assert "cannot log to MLflow" in err and "MLflow is back" in err

    client = MlflowClient(server.url)
    [run] = client.search_runs([client.get_experiment_by_name("i2i").experiment_id])
    assert run.info.status == "FINISHED"
    rows = _rows(losses)
    for key in ("loss/G/total", "loss/D/total", "loss/G/cycle_a"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [int(r["step"]) for r in rows], key
        assert [m.value for m in history] == pytest.approx([float(r[key]) for r in rows], rel=1e-5)
    # the artifacts went through the server's proxy too, the model among them
    assert {a.path for a in client.list_artifacts(run.info.run_id, "samples")} == {
        f"samples/{s:08d}.png" for s in (100, 200, 300)
    }
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert any((server.folder / "artifacts").rglob("generator.pt"))

    # i2i compare reads the same server
    compare = subprocess.run(
        [str(BIN / "i2i"), "compare", "--metric", "loss/G/total"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stderr
    assert "cyclegan@" in compare.stdout or run.info.run_name in compare.stdout


def test_a_killed_training_resumes_into_the_same_run_on_the_server(shared, tmp_path: Path):
    params = tiny_train_params(
        "cyclegan", iterations=200, checkpoint_every=20, log_every=10, sample_every=100
    )
    params["tracking"].update(uri=shared.url, experiment="killed-training")
    root = project(tmp_path / "project", params)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    stage = [sys.executable, str(REPO / "stages" / "train.py"), "--params", "params.yaml"]
    train = subprocess.Popen(
        stage,
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    losses = root / "reports" / "train" / "losses.csv"
    _wait_for_step(losses, 60, train)
    os.killpg(train.pid, signal.SIGKILL)
    train.wait()
    again = subprocess.run(stage, cwd=root, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    client = MlflowClient(shared.url)
    [run] = client.search_runs([client.get_experiment_by_name("killed-training").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/G/total")]
    assert sorted(steps) == list(range(10, 201, 10))  # each step once


def test_credentials_in_the_tracking_uri_never_leave_the_process(shared, tmp_path: Path):
    """A lab's MLFLOW_TRACKING_URI with a user and token, through the whole `dvc repro`: the
    token is in no output, no file of the repository (DVC's cache and git included), no log
    line and nowhere in the server's store; the runs still land, authenticated."""
    secret = "s3cretTOKEN"
    params = tiny_train_params()
    params["tracking"]["experiment"] = "credentials"
    root = dvc_repo(tmp_path / "repo", params)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": shared.url.replace("http://", f"http://lab:{secret}@"),
    }
    proc = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f" at: {shared.url}/#/experiments/" in out  # MLflow's own "View run ... at" line
    client = MlflowClient(shared.url)
    [run] = client.search_runs([client.get_experiment_by_name("credentials").experiment_id])
    assert run.info.status == "FINISHED" and "metric/content_iou/ab" in run.data.metrics
    assert secret not in out
    everything = (*root.rglob("*"), *shared.folder.rglob("*"))
    leaked = [p for p in everything if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    assert (root / "models" / "run.json").read_text().count(shared.url) == 1


def test_a_batch_the_server_carried_out_but_never_answered_is_logged_once(shared, tmp_path):
    """The server commits a batch of metrics and the answer is lost (it died before replying):
    whether MLflow's client or the outbox sends it again, no step is logged twice."""
    from i2i.config import TrackingConfig
    from i2i.training_log import TrainingLog

    proxy = AnswerLosingProxy(shared.url)
    try:
        log = TrainingLog(
            TrackingConfig(proxy.url, "lost-answers"),
            tmp_path / "losses.csv",
            True,
            retry_every=0.0,
            final_wait=5.0,
        )
        log.start({"model": "cyclegan"}, {}, None)
        for step in (5, 10):
            log.add(step, {"loss/G/total": step / 10, "loss/D/total": step / 20})
        proxy.lose_answers("log-batch", 100)  # MLflow's own retries lose theirs too
        log.saved()
        assert proxy.lost >= 1 and log.outbox, "the batch was not left for the outbox"
        proxy.lose_answers("", 0)
        log.add(15, {"loss/G/total": 1.5, "loss/D/total": 0.75})
        log.saved()
        log.metrics(15, {"train/iterations_per_second": 3.0})
        log.end("FINISHED")
        assert not log.outbox
    finally:
        proxy.stop()
    client = MlflowClient(shared.url)
    for key, values in (("loss/G/total", [0.5, 1.0, 1.5]), ("loss/D/total", [0.25, 0.5, 0.75])):
        history = sorted(client.get_metric_history(log.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == list(zip((5, 10, 15), values)), key


def test_an_experiment_another_process_created_first_is_joined_not_an_error(tmp_path: Path):
    """Two trainings on a shared store (a sweep's jobs, each in its own clone, so the checkout's
    lock does not cover them) both find no experiment, and both create it: the second joins the
    first's instead of failing on RESOURCE_ALREADY_EXISTS. Other refusals still raise."""
    from mlflow.exceptions import MlflowException

    from i2i.tracking import create_experiment

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first, second = MlflowClient(uri), MlflowClient(uri)
    assert first.get_experiment_by_name("i2i") is None is second.get_experiment_by_name("i2i")
    made = create_experiment(first, "i2i", None)
    assert create_experiment(second, "i2i", None) == made
    assert [e.name for e in second.search_experiments()] == ["i2i", "Default"]
    with pytest.raises(MlflowException, match="name"):
        create_experiment(second, "", None)
