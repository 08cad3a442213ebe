"""The training loop: determinism, resume after a real kill, divergence stop, MLflow, export."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from i2i import checkpoint
from i2i.config import params_from_dict
from i2i.models import load_generators
from i2i.optim import lr_factor
from i2i.train import NonFiniteLossError, TrainPaths, train
from tests.conftest import REPO, write_params
from tests.train_helpers import BIN, prepare, project, run_stage, tiny_train_params


def paths(root: Path) -> TrainPaths:
    return TrainPaths(
        root / "data" / "prepared",
        root / "checkpoints",
        root / "models",
        root / "reports" / "train",
    )


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    prepare(root, tiny_train_params())
    return root


def run_in(root: Path, prepared_root: Path, params: dict, monkeypatch, **kw) -> dict:
    """Train in-process in ``root`` (its own MLflow store) on the shared prepared data."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".git").mkdir(exist_ok=True)
    monkeypatch.chdir(root)
    p = TrainPaths(
        prepared_root / "data" / "prepared", root / "checkpoints", root / "models", root / "reports"
    )
    return train(params_from_dict(params), p, **kw)


def uninterrupted(root: Path, params: dict, monkeypatch) -> Path:
    """The reference for an interrupted stage process: the same training in one go, in this
    process (no interpreter start-up) on data prepared in ``root``. One thread here as there
    (tests/conftest.py), so the same numbers."""
    run_in(root, project(root, params), params, monkeypatch)
    return root


def losses(root: Path) -> list[dict[str, str]]:
    with open(root / "reports" / "losses.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["cyclegan", "munit"])
def test_same_params_and_seed_give_the_same_losses(name, tmp_path, prepared_root, monkeypatch):
    p = tiny_train_params(name)
    p["tracking"]["uri"] = f"sqlite:///{tmp_path}/mlflow.db"  # one store: a new one takes seconds
    run_in(tmp_path / "one", prepared_root, p, monkeypatch)
    run_in(tmp_path / "two", prepared_root, p, monkeypatch)
    first, second = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(first) == 6 and first == second
    p["train"]["seed"] = 1
    run_in(tmp_path / "three", prepared_root, p, monkeypatch)
    assert losses(tmp_path / "three") != first


def _kill_after_checkpoint(
    root: Path,
    launcher: list[str],
    iteration: int,
    rank: int | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> int:
    """Start the train stage; once the checkpoint of ``iteration`` exists, send ``sig`` to its
    process group, or with ``rank`` only that rank's (torchrun then stops the others); wait for
    the launch to end; return the last checkpointed iteration."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    stage = [str(REPO / "stages" / "train.py"), "--params", "params.yaml"]
    proc = subprocess.Popen(
        [*launcher, *stage],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list((root / "checkpoints").glob(f"*/ckpt-{iteration:08d}.pt")):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    if rank is None:
        os.killpg(proc.pid, sig)
    else:
        import psutil

        (worker,) = [
            c
            for c in psutil.Process(proc.pid).children(recursive=True)
            if c.environ().get("RANK") == str(rank)
        ]
        os.killpg(os.getpgid(worker.pid), signal.SIGKILL)
    assert proc.wait(timeout=120) != 0
    (ckpts,) = (root / "checkpoints").iterdir()
    return max(int(c.stem.split("-")[1]) for c in ckpts.glob("ckpt-*.pt"))


@pytest.mark.slow
def test_sigusr1_writes_a_checkpoint_at_once_and_the_same_command_resumes_exactly(
    tmp_path, monkeypatch
):
    """SLURM's signal before a time limit (i2i.stopping): a checkpoint after the current
    iteration, off the checkpoint cadence, then the run continues as if never stopped."""
    p = tiny_train_params(iterations=100, checkpoint_every=50, log_every=5, sample_every=100)
    straight = uninterrupted(tmp_path / "straight", p, monkeypatch)
    stopped = project(tmp_path / "stopped", p)
    last = _kill_after_checkpoint(stopped, [sys.executable], 50, sig=signal.SIGUSR1)
    assert 50 < last < 100  # written on the signal, not at the next multiple of 50
    run_stage(stopped)
    summary = json.loads((stopped / "reports" / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == last
    a = torch.load(straight / "models" / "generator.pt")["generators"]
    b = torch.load(stopped / "models" / "generator.pt")["generators"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / "reports/losses.csv").read_text() == (
        stopped / "reports/train/losses.csv"
    ).read_text()
    info = json.loads((stopped / "models" / "run.json").read_text())
    (run,) = MlflowClient(info["tracking_uri"]).search_runs([info["experiment_id"]])
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cyclegan", "munit"])
def test_resume_after_kill_continues_from_last_checkpoint(name, tmp_path, monkeypatch):
    p = tiny_train_params(name, iterations=60, checkpoint_every=5, log_every=5, sample_every=30)
    straight = uninterrupted(tmp_path / "straight", p, monkeypatch)
    killed = project(tmp_path / "killed", p)
    last = _kill_after_checkpoint(killed, [sys.executable], 10)
    assert 10 <= last < 60
    assert not (killed / "models" / "generator.pt").exists()

    run_stage(killed)  # the same command again: resumes

    summary = json.loads((killed / "reports" / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == last
    # An interrupted run ends exactly where an uninterrupted one does: same data stream, same
    # random numbers, same optimiser state.
    a = torch.load(straight / "models" / "generator.pt")["generators"]
    b = torch.load(killed / "models" / "generator.pt")["generators"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with (
        open(straight / "reports" / "losses.csv") as f1,
        open(killed / "reports" / "train" / "losses.csv") as f2,
    ):
        assert f1.read() == f2.read()
    # One MLflow run, continued, with each logged step once.
    info = json.loads((killed / "models" / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]])
    assert [r.info.run_id for r in runs] == [info["run_id"]]
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["resumed"] == "true"
    steps = [m.step for m in client.get_metric_history(info["run_id"], "loss/G/total")]
    assert steps == list(range(5, 61, 5))


def test_diverging_training_stops_naming_the_term_and_keeps_the_last_good_checkpoint(
    tmp_path, prepared_root, monkeypatch
):
    p = tiny_train_params(iterations=20, checkpoint_every=1, lr=1e30)
    with pytest.raises(NonFiniteLossError) as e:
        run_in(tmp_path, prepared_root, p, monkeypatch)
    msg = str(e.value)
    assert "diverged at iteration" in msg and "loss/" in msg and "last good checkpoint" in msg
    (folder,) = (tmp_path / "checkpoints").iterdir()
    state = checkpoint.latest(folder)
    assert state is not None and all(torch.isfinite(v).all() for v in state["nets"].values())
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(state["run_id"])
    assert run.info.status == "FAILED"


def test_resume_from_a_checkpoint_of_other_params_is_refused(tmp_path, prepared_root, monkeypatch):
    p = tiny_train_params()
    run_in(tmp_path, prepared_root, p, monkeypatch)
    (ckpt,) = list((tmp_path / "checkpoints").glob("*/ckpt-00000006.pt"))
    p["model"]["cyclegan"]["ngf"] = 8
    p["train"]["lr"] = 0.001
    with pytest.raises(checkpoint.ResumeError) as e:
        run_in(tmp_path, prepared_root, p, monkeypatch, resume=ckpt)
    assert "model.cyclegan.ngf: 4 -> 8" in str(e.value) and "train.lr: 0.0002 -> 0.001" in str(
        e.value
    )
    assert "To start fresh" in str(e.value)


def test_a_changed_configuration_trains_afresh_in_its_own_folder(
    tmp_path, prepared_root, monkeypatch
):
    p = tiny_train_params()
    run_in(tmp_path, prepared_root, p, monkeypatch)
    p["loss"]["identity_w"] = 0.0
    summary = run_in(tmp_path, prepared_root, p, monkeypatch)
    assert summary["resumed_from"] == 0
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2
    # Extending the run is not a new configuration: it resumes.
    p["train"]["iterations"] = 9
    assert run_in(tmp_path, prepared_root, p, monkeypatch)["resumed_from"] == 6


def test_changed_code_trains_afresh_but_an_explicit_resume_only_warns(
    tmp_path, prepared_root, monkeypatch, caplog
):
    p = tiny_train_params()
    run_in(tmp_path, prepared_root, p, monkeypatch)
    (ckpt,) = list((tmp_path / "checkpoints").glob("*/ckpt-00000006.pt"))
    monkeypatch.setattr(checkpoint, "code_version", lambda: "another-version")
    assert run_in(tmp_path, prepared_root, p, monkeypatch)["resumed_from"] == 0
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2
    p["train"]["iterations"] = 8
    assert run_in(tmp_path, prepared_root, p, monkeypatch, resume=ckpt)["resumed_from"] == 6
    assert "made by another version of the i2i code" in caplog.text


def test_mlflow_run_holds_params_tags_curves_samples_and_model(
    tmp_path, prepared_root, monkeypatch
):
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")
    p = tiny_train_params("munit")
    run_in(tmp_path, prepared_root, p, monkeypatch)
    info = json.loads((tmp_path / "models" / "run.json").read_text())
    assert info["tracking_uri"].startswith(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "brisk-lamb"
    assert (
        run.data.params["loss.vgg_w"] == "0.0" and run.data.params["model.munit.style_dim"] == "8"
    )
    assert run.data.params["train.iterations"] == "6"
    tags = run.data.tags
    manifest = json.loads((prepared_root / "data" / "prepared" / "manifest.json").read_text())
    assert tags["dataset_hash"] == manifest["content_hash"] and tags["dvc_exp_name"] == "brisk-lamb"
    assert tags["device"] == "cpu" and tags["precision"] == "fp32" and tags["model"] == "munit"
    # the configuration id, the same from the logged params (strings) as from params.yaml, and
    # in the DVC metrics file `dvc exp show` reads
    from i2i.compare import run_configuration
    from i2i.configuration import configuration_id, flatten
    from i2i.runs import RunRecord

    from i2i.config import to_dict
    from i2i.model_registry import resolve

    typed = flatten(to_dict(resolve(params_from_dict(p))))  # as loaded: floats are floats
    expected = configuration_id(typed | {"train.seed": 99, "train.device": "cuda"})
    assert tags["config_id"] == expected
    untagged = RunRecord("x", "y", "FINISHED", 0, dict(run.data.params), {}, {})
    assert run_configuration(untagged) == expected
    train_metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert train_metrics["config_id"] == expected
    for key in ("loss/G/recon_x_a", "loss/D/a", "loss/G/total", "lr/G"):
        assert [m.step for m in client.get_metric_history(info["run_id"], key)] == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]
    lr = [m.value for m in client.get_metric_history(info["run_id"], "lr/G")]
    assert lr[0] == pytest.approx(2e-4) and lr[-1] == pytest.approx(0.0)  # linear decay to zero
    samples = [a.path for a in client.list_artifacts(info["run_id"], "samples")]
    assert samples == ["samples/00000003.png", "samples/00000006.png"]
    model = {a.path for a in client.list_artifacts(info["run_id"], "model")}
    assert {"model/MLmodel", "model/requirements.txt", "model/code"} <= model  # tests/test_registry
    assert [a.path for a in client.list_artifacts(info["run_id"], "model/artifacts")] == [
        "model/artifacts/generator.pt"
    ]


def test_exported_generators_load_without_training_state(tmp_path, prepared_root, monkeypatch):
    run_in(tmp_path, prepared_root, tiny_train_params("munit"), monkeypatch)
    state = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    assert set(state) == {
        "format",
        "model",
        "model_config",
        "generators",
        "iterations",
        "run_id",
        "data_hash",
    }
    nets = load_generators(tmp_path / "models" / "generator.pt")
    assert len(nets.D) == 0 and not nets.training
    assert nets.translate(torch.zeros(1, 3, 32, 32), "ab").shape == (1, 1, 3, 32, 32)


@pytest.mark.parametrize(
    "schedule,expected",
    [
        # constant for decay_start = 0.6 of 10 iterations, then (10 - i) / (10 - 6), reaching 0
        # at the end
        ("linear", [1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0]),
        ("step", [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125]),
        ("constant", [1] * 11),
    ],
)
def test_schedules(schedule, expected):
    p = tiny_train_params(iterations=10, schedule=schedule, step_size=3, gamma=0.5, decay_start=0.6)
    cfg = params_from_dict(p).train
    assert [lr_factor(cfg, i) for i in range(11)] == pytest.approx(expected)


def test_cosine_schedule_goes_from_one_to_zero():
    cfg = params_from_dict(tiny_train_params(iterations=10, schedule="cosine")).train
    assert (
        lr_factor(cfg, 0) == 1
        and lr_factor(cfg, 5) == pytest.approx(0.5)
        and lr_factor(cfg, 10) == pytest.approx(0)
    )


def test_missing_data_is_a_clear_cli_error(tmp_path):
    write_params(tmp_path / "params.yaml", tiny_train_params())
    proc = run_stage(tmp_path, check=False)
    assert (
        proc.returncode != 0 and "Traceback" not in proc.stderr and "data/prepared" in proc.stderr
    )


@pytest.mark.slow
def test_two_processes_train_with_torchrun_and_resume(tmp_path):
    p = tiny_train_params(iterations=4, checkpoint_every=2)
    root = project(tmp_path / "ddp", p)
    launcher = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2"]
    run_stage(root, launcher=launcher)
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["resumed_from"] == 0
    (folder,) = (root / "checkpoints").iterdir()
    assert [c.name for c in checkpoint.checkpoints(folder)] == [
        "ckpt-00000002.pt",
        "ckpt-00000004.pt",
    ]
    info = json.loads((root / "models" / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]])
    assert len(runs) == 1 and runs[0].data.tags["world_size"] == "2"  # rank 0 alone logs
    # Resume under torchrun: extend the run by two iterations.
    p["train"]["iterations"] = 6
    write_params(root / "params.yaml", p)
    run_stage(root, launcher=launcher)
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == 4 and summary["iterations"] == 6
    assert [m.step for m in client.get_metric_history(info["run_id"], "loss/D/total")] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


@pytest.mark.slow
def test_two_processes_killed_mid_run_resume_to_the_uninterrupted_weights(tmp_path):
    p = tiny_train_params(iterations=30, checkpoint_every=3, log_every=3, sample_every=30)
    p["model"]["cyclegan"]["dropout"] = True  # random numbers on both ranks
    launcher = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2"]
    straight = project(tmp_path / "straight", p)
    run_stage(straight, launcher=launcher)
    killed = project(tmp_path / "killed", p)
    last = _kill_after_checkpoint(killed, launcher, 6, rank=1)
    assert 6 <= last < 30 and not (killed / "models" / "generator.pt").exists()
    run_stage(killed, launcher=launcher)  # the same launch again
    summary = json.loads((killed / "reports" / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == last and summary["world_size"] == 2
    a = torch.load(straight / "models" / "generator.pt")["generators"]
    b = torch.load(killed / "models" / "generator.pt")["generators"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train_on_cpu(
    precision, tmp_path, prepared_root, monkeypatch
):
    p = tiny_train_params("munit", iterations=3, precision=precision, channels_last=True)
    summary = run_in(tmp_path, prepared_root, p, monkeypatch)
    assert summary["precision"] == precision
    assert all(math.isfinite(v) for v in summary["final"].values())  # no NaN, no infinity


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_compiled_training(tmp_path, prepared_root, monkeypatch):
    p = tiny_train_params(
        "cyclegan", iterations=3, device="cuda", precision="bf16", channels_last=True, compile=True
    )
    assert run_in(tmp_path, prepared_root, p, monkeypatch)["device"].startswith("cuda")


@pytest.mark.slow
def test_parallel_trainings_all_land_in_one_sqlite_store(tmp_path):
    """What `dvc queue start -j 2` does to the store: two writers at once, no lost run."""
    p = tiny_train_params(iterations=8, checkpoint_every=2, log_every=1)
    root = project(tmp_path / "par", p)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    procs = []
    for i in range(3):
        p["train"]["seed"] = i
        write_params(root / f"p{i}.yaml", p)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "stages" / "train.py"),
                    "--params",
                    f"p{i}.yaml",
                    "--out",
                    f"models{i}",
                    "--reports",
                    f"reports{i}",
                    "--checkpoints",
                    f"ckpt{i}",
                ],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [proc.communicate()[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], "\n".join(outputs)
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("i2i").experiment_id])
    assert sorted(r.data.params["train.seed"] for r in runs) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        assert len(client.get_metric_history(r.info.run_id, "loss/G/total")) == 8


def test_finite_guard_on_an_accelerator_reports_the_first_bad_iteration_when_read():
    """Off the CPU the guard reads its flag only when asked (every log_every iterations)."""
    from i2i import distributed
    from i2i.train import FiniteGuard

    guard = FiniteGuard(torch.device("cpu"), distributed.Dist(), every=10)
    guard.every = 10  # as on CUDA: the CPU checks every phase
    ok = {"loss/G/total": torch.tensor(1.0)}
    guard.update(ok, 0)
    guard.update({"loss/G/total": torch.tensor(float("nan"))}, 1)  # no raise yet: not read
    guard.update(ok, 2)
    with pytest.raises(NonFiniteLossError, match="diverged at iteration 2"):
        guard.check()
    cpu = FiniteGuard(torch.device("cpu"), distributed.Dist(), every=10)
    with pytest.raises(NonFiniteLossError, match="iteration 4: loss/D/a = inf"):
        cpu.update({"loss/D/a": torch.tensor(float("inf"))}, 3)  # the CPU checks at once


def test_the_weight_average_has_the_half_life_in_images_and_ramps_up():
    from i2i.optim import WeightAverage

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = WeightAverage(net, half_life=8, rampup=0.0, batch=4)
    torch.nn.init.ones_(net.weight)
    for step in (1, 2):  # 8 images: the zero weights of 8 images ago count half
        ema.update(net, images=4 * step)
    assert ema.module.weight.item() == pytest.approx(0.5)
    assert not ema.module.weight.requires_grad and net.weight.item() == 1  # the net is untouched
    ramped = WeightAverage(net, half_life=8, rampup=0.5, batch=4)
    assert ramped.beta(images=4) == pytest.approx(0.5 ** (4 / 2))  # half-life 0.5 x 4 images
    assert ramped.beta(images=400) == pytest.approx(0.5 ** (4 / 8))  # then the full half-life


def test_the_export_holds_the_average_and_the_trained_weights_and_both_load(
    tmp_path, prepared_root, monkeypatch
):
    run_in(tmp_path, prepared_root, tiny_train_params(ema_images=8.0), monkeypatch)
    state = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    (ckpt,) = sorted((tmp_path / "checkpoints").glob("*/ckpt-00000006.pt"))
    trained = torch.load(ckpt, weights_only=True)
    g_trained = {k[2:]: v for k, v in trained["nets"].items() if k.startswith("G.")}
    assert all(torch.equal(state["generators_raw"][k], v) for k, v in g_trained.items())
    assert all(torch.equal(state["generators"][k], v) for k, v in trained["ema"].items())
    differ = [k for k, v in g_trained.items() if not torch.equal(state["generators"][k], v)]
    assert differ  # the average is not the last weights
    average = load_generators(tmp_path / "models" / "generator.pt")
    raw = load_generators(tmp_path / "models" / "generator.pt", raw=True)
    assert torch.equal(average.G.state_dict()[differ[0]], state["generators"][differ[0]])
    assert torch.equal(raw.G.state_dict()[differ[0]], g_trained[differ[0]])
