"""What `i2i sweep` decides before and after SLURM: the grid, the names, the checks that keep a
bad sweep from being submitted, the batch script, and the state shown from the records. The
jobs themselves, on a real cluster: tests/test_sweep.py."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from i2i import sweep
from i2i.config import ClusterConfig, ParamsError, params_from_dict, read_yaml
from tests.conftest import write_params
from tests.train_helpers import tiny_train_params


def test_the_grid_is_every_combination_as_dvc_queues_it():
    combos = sweep.grid(("train.seed=0,1,2", "loss.vgg_w=0,1"))
    expected = [(f"train.seed={s}", f"loss.vgg_w={v}") for s, v in itertools.product("012", "01")]
    assert combos == expected
    assert sweep.grid(("train.seed=range(0,3)",)) == [(f"train.seed={s}",) for s in range(3)]
    assert sweep.grid(("train.lr=1e-4",)) == [("train.lr=0.0001",)]  # DVC's (Hydra's) form
    for bad in ("train.seed", "=1", "other.yaml:train.seed=1"):
        with pytest.raises(sweep.SweepError, match="-S"):
            sweep.grid((bad,))


def test_names_are_stable_distinct_and_valid_git_refs():
    grid = sweep.grid(("train.seed=0,1,2", "data.path=a/b,a_b"))
    names = [sweep.experiment_name("sweep", s) for s in grid]
    assert len(set(names)) == len(names)  # a/b and a_b read alike but are two experiments
    # the same settings in another -S order are the same experiment
    assert sweep.experiment_name("sweep", ("loss.vgg_w=1", "train.seed=0")) == (
        sweep.experiment_name("sweep", ("train.seed=0", "loss.vgg_w=1"))
    )
    assert names[0].startswith("sweep-patha_b-seed0-")
    for hostile in ("a b", "x\n#SBATCH --uid=0", "../up", "-dash", ""):
        with pytest.raises(sweep.SweepError, match="-n "):
            sweep.experiment_name(hostile, grid[0])
    for name in names:
        ref = f"refs/exps/ab/cdef/{name}"
        assert subprocess.run(["git", "check-ref-format", ref]).returncode == 0, name


def test_a_bad_setting_fails_before_any_job_naming_the_key(tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_train_params())
    sweep.check_settings(params, ("train.seed=3", "loss.vgg_w=0.5"))
    with pytest.raises(sweep.SweepError, match=r"train.seed = -1: must be >= 0"):
        sweep.check_settings(params, ("train.seed=-1",))
    with pytest.raises(sweep.SweepError, match=r"model.name = 'cyclegam'"):
        sweep.check_settings(params, ("model.name=cyclegam",))
    with pytest.raises(
        sweep.SweepError, match=r"has no key train.sed \(did you mean train.seed\?\)"
    ):
        sweep.check_settings(params, ("train.sed=1",))


def _repo(root: Path, params: dict) -> Path:
    root.mkdir()
    write_params(root / "params.yaml", params)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "params.yaml"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@e.x", "commit", "-qm", "p"],
    ):
        subprocess.run(cmd, cwd=root, check=True)
    return root


def test_a_sweep_needs_a_clean_commit_a_remote_a_server_and_a_root_outside(tmp_path, monkeypatch):
    params = tiny_train_params()
    repo = _repo(tmp_path / "repo", params)
    cluster = ClusterConfig()
    with pytest.raises(sweep.SweepError, match="cluster.remote = 'origin': no such git remote"):
        sweep.source(repo, cluster)
    subprocess.run(["git", "remote", "add", "origin", str(tmp_path / "r.git")], cwd=repo)
    assert sweep.source(repo, cluster).remote_url == str(tmp_path / "r.git")
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n# edited\n")
    with pytest.raises(sweep.SweepError, match="uncommitted changes in params.yaml"):
        sweep.source(repo, cluster)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(sweep.SweepError, match="need a tracking server"):
        sweep.check_services(repo, repo / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000")
    with pytest.raises(sweep.SweepError, match="no default DVC remote"):
        sweep.check_services(repo, repo / "params.yaml")

    assert sweep.root_folder(repo, cluster) == tmp_path / "i2i-sweeps"
    (tmp_path / "link").symlink_to(repo / "sweeps", target_is_directory=True)
    for inside in (".", "sweeps", str(repo / "x"), str(tmp_path / "link")):
        with pytest.raises(sweep.SweepError, match="inside the repository"):
            sweep.root_folder(repo, ClusterConfig(root=inside))


def test_the_batch_script_asks_for_what_the_section_says_and_quotes_paths(tmp_path):
    cluster = ClusterConfig(
        partition="gpu",
        account="lab",
        gres="gpu:a100:1",
        cpus_per_task=6,
        signal_before=120,
        sbatch=("--qos=high",),
        setup="module load cuda/12.4",
    )
    folder = tmp_path / "a folder; rm -rf ~" / "sweep-seed0-abc"
    text = sweep.job_script(cluster, folder, "sweep-seed0-abc")
    options = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert options == [
        "--job-name=i2i-sweep-seed0-abc",
        f"'--output={folder}/slurm.log'",
        "--partition=gpu",
        "--account=lab",
        "--time=24:00:00",
        "--gres=gpu:a100:1",
        "--cpus-per-task=6",
        "--signal=B:USR1@120",
        "--requeue",
        "--open-mode=append",
        "--qos=high",
    ]
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    (run,) = [line for line in text.splitlines() if line.startswith("exec ")]
    assert shlex.split(run) == ["exec", sys.executable, "-m", "i2i.sweep_job", str(folder)]
    assert "module load cuda/12.4" in text and 'OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK' in text


def test_the_cluster_section_is_optional_checked_and_read_as_dvc_writes_it():
    p = tiny_train_params()
    assert params_from_dict(p).cluster == ClusterConfig()
    p["cluster"] = {"sbatch": ["qos=high"]}
    with pytest.raises(ParamsError, match=r"cluster.sbatch\[0\] = 'qos=high'"):
        params_from_dict(p)
    p["cluster"] = {"partition": "gpu\n#SBATCH --uid=0"}
    with pytest.raises(ParamsError, match="cluster.partition"):
        params_from_dict(p)
    # DVC rewrites params.yaml in YAML 1.2 and may drop quotes: `time: 20:00` stays a string
    # (YAML 1.1 would read the base-60 number 1200); integers stay integers.
    assert read_yaml("time: 20:00\nn: 12\nh: 0x1f\nlr: 1e-4") == {
        "time": "20:00",
        "n": 12,
        "h": 31,
        "lr": 1e-4,
    }


EV = [{"event": "submitted", "job": "7", "time": 0}]


@pytest.mark.parametrize(
    "events, scheduler, state",
    [
        (EV, ("PENDING", "Resources"), "pending"),
        (EV + [{"event": "started"}], ("RUNNING", "None"), "running"),
        (EV + [{"event": "started"}, {"event": "requeued"}], ("PENDING", "BeginTime"), "requeued"),
        (EV + [{"event": "started"}], ("PENDING", "BeginTime"), "requeued"),  # SLURM requeued it
        (EV + [{"event": "started"}, {"event": "finished"}], ("COMPLETING", ""), "finished"),
        (EV + [{"event": "started"}, {"event": "finished"}], None, "finished"),
        (EV + [{"event": "started"}], ("CANCELLED", "None"), "failed"),
        (EV + [{"event": "started"}], None, "failed"),
        (EV + [{"event": "failed", "why": "dvc exp run failed"}], ("FAILED", ""), "failed"),
    ],
)
def test_the_state_shown_follows_the_records_and_the_scheduler(events, scheduler, state):
    assert sweep.state_of(events, scheduler)[0] == state


def test_a_failed_state_says_why():
    assert sweep.state_of(EV, ("CANCELLED", "None")) == (
        "failed",
        "job 7 ended cancelled without finishing",
    )
    assert sweep.state_of(EV, None)[1] == "job 7 ended and left the queue without finishing"
    failed = EV + [{"event": "failed", "why": "dvc exp push failed"}]
    assert sweep.state_of(failed, ("FAILED", ""))[1] == "dvc exp push failed"
