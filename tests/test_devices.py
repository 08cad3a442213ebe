"""Jobs sharing one machine each take their own share: job k of `I2I_JOBS=N` keeps to its 1/N
of the cores (on a GPU machine, GPU k), in real processes that hold their claims together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

JOB = """
import json, os, sys, time, torch
from i2i.devices import pick_device
device = pick_device("auto")
print(json.dumps({"device": str(device), "cores": sorted(os.sched_getaffinity(0)),
                  "threads": torch.get_num_threads()}), flush=True)
while not os.path.exists(sys.argv[1]):  # hold the claim until told to end
    time.sleep(0.05)
"""


def _jobs(n: int, tmp_path: Path, env: dict[str, str | None]) -> list[subprocess.Popen]:
    env = {**os.environ, "I2I_DEVICE_LOCKS": str(tmp_path / "locks"), **env}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset
    return [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(tmp_path / "end")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(n)
    ]


def _report(job: subprocess.Popen) -> dict:
    return json.loads(job.stdout.readline())


@pytest.fixture(autouse=True)
def _end_jobs(tmp_path: Path):
    """The jobs end with the test, whether it passed or not."""
    yield
    (tmp_path / "end").touch()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to share")
def test_job_k_of_n_keeps_to_its_share_of_the_cores_and_frees_it_when_killed(tmp_path: Path):
    cores = sorted(os.sched_getaffinity(0))
    jobs = _jobs(2, tmp_path, {"I2I_JOBS": "2"})
    reports = [_report(j) for j in jobs]
    shares = sorted(r["cores"] for r in reports)
    half = len(cores) // 2
    assert shares == [cores[:half], cores[half:]]  # job k: the k-th half, disjoint
    assert all(r["threads"] == len(r["cores"]) and r["device"] == "cpu" for r in reports)
    # A job killed outright frees its share for the next one.
    killed = next(j for j, r in zip(jobs, reports) if r["cores"] == cores[:half])
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    [late] = _jobs(1, tmp_path, {"I2I_JOBS": "2"})
    assert _report(late)["cores"] == cores[:half]
    (tmp_path / "end").touch()
    for j in [*jobs, late]:
        j.wait(timeout=30)


def test_without_i2i_jobs_a_process_keeps_the_whole_machine(tmp_path: Path):
    [job] = _jobs(1, tmp_path, {"I2I_JOBS": ""})
    report = _report(job)
    (tmp_path / "end").touch()
    job.wait(timeout=30)
    assert report["cores"] == sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_jobs_on_a_multi_gpu_machine_take_one_gpu_each(tmp_path: Path):
    jobs = _jobs(2, tmp_path, {"CUDA_VISIBLE_DEVICES": None})
    devices = sorted(_report(j)["device"] for j in jobs)
    (tmp_path / "end").touch()
    for j in jobs:
        j.wait(timeout=60)
    assert devices == ["cuda:0", "cuda:1"]


def test_a_claims_folder_others_could_tamper_with_is_refused(tmp_path: Path, monkeypatch):
    from i2i import devices
    from i2i.errors import I2IError

    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)  # another user could plant a lock file that is a link
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    for folder, said in ((open_folder, "mode drwxrwxrwx"), (link, "not a folder")):
        monkeypatch.setenv("I2I_DEVICE_LOCKS", str(folder))
        with pytest.raises(I2IError, match="must be a folder of this user's with mode 0700") as e:
            devices.lock_folder()
        assert str(folder) in str(e.value) and said in str(e.value)
    monkeypatch.setenv("I2I_DEVICE_LOCKS", str(tmp_path / "fresh"))
    assert devices.lock_folder().stat().st_mode & 0o777 == 0o700
