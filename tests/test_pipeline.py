"""The real DVC pipeline and the CLI, run as a user runs them, in a scratch copy of the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, write_params
from tests.train_helpers import dvc_repo, tiny_train_params

pytestmark = pytest.mark.slow  # real DVC processes

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh git + DVC repository holding this project's pipeline and a tiny params.yaml."""
    return dvc_repo(tmp_path / "repo", tiny_train_params())


def test_a_changed_param_reruns_the_stage_that_reads_it_not_the_ones_before(repo: Path):
    """(`dvc repro` of the whole pipeline, and its no-op rerun: tests/test_experiments.py.)"""
    dvc = str(BIN / "dvc")
    out = run([dvc, "repro", "preprocess"], repo)
    assert "Running stage 'download'" in out and "Running stage 'preprocess'" in out
    assert "Running stage 'train'" not in out  # a target's downstream stages do not run
    assert (
        yaml.safe_load((repo / "data" / "prepared" / "manifest.json").read_text())["load_size"]
        == 32
    )

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["load_size"] = 40
    write_params(repo / "params.yaml", params)
    assert "data.load_size" in run([dvc, "status", "preprocess"], repo)
    out = run([dvc, "repro", "preprocess"], repo)
    assert "Stage 'download' didn't change" in out and "Running stage 'preprocess'" in out
    manifest = yaml.safe_load((repo / "data" / "prepared" / "manifest.json").read_text())
    assert manifest["load_size"] == 40 and manifest["parts"]["train_a"]["height"] == [40, 40]


def test_a_typo_anywhere_in_params_stops_dvc_repro_before_any_stage(repo: Path):
    """DVC compares only the keys a stage declares: a typo elsewhere would pass unseen."""
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "preprocess"], repo)
    assert "didn't change" in run([dvc, "repro", "preprocess"], repo)  # cached
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["load_sizee"] = 3
    write_params(repo / "params.yaml", params)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [dvc, "repro", "preprocess"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown key 'data.load_sizee' (did you mean 'data.load_size'?)" in out
    assert "Running stage 'download'" not in out and "Running stage 'preprocess'" not in out


def test_a_dataset_zip_whose_links_lead_out_writes_nothing_through_dvc_repro(repo: Path, server):
    """The attack as a mirror (or a man in the middle of the plain-http host) would send it:
    ``p -> .`` then ``esc -> p/p/.../../..``, inside as text but ``/`` on disk, then an entry
    through ``esc/proc/self/cwd/``, the stage's working directory: the repository root."""
    import stat
    import zipfile

    depth = 25  # deeper than the destination, fewer link hops than the kernel allows (40)
    with zipfile.ZipFile(server.root / "facades.zip", "w") as zf:
        for name, target in (("p", "."), ("esc", "p/" * depth + "../" * depth)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        zf.writestr("esc/proc/self/cwd/stages/pwned.py", b"raise SystemExit('pwned')")
        for folder in ("trainA", "trainB", "testA", "testB"):
            zf.writestr(f"facades/{folder}/1.png", b"not read")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(dataset="facades", mirror=server.url)
    write_params(repo / "params.yaml", params)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(BIN / "dvc"), "repro", "download"], cwd=repo, env=env, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "entry 'p' is a symbolic link" in out and "facades.zip" in out
    assert [r["path"] for r in server.log] == ["/facades.zip"]  # it did come over HTTP
    assert not (repo / "stages" / "pwned.py").exists()
    assert not (repo / "data" / "raw").exists()


def test_a_stage_records_the_code_its_command_runs_and_no_other_commands_code():
    """The records are tight where it matters: only stages that build a model list the models'
    code, and a model change re-runs train, sample and evaluate, not the data or metric stages."""
    from i2i import sources

    def files(stage: str) -> set[str]:
        return {str(f.relative_to(REPO)) for f in sources.stage_files(REPO / "stages" / stage)}

    with_models = {
        s
        for s in ("download", "preprocess", "train", "classify", "real_features", "sample")
        if "i2i/models/cut.py" in files(f"{s}.py")
    }
    assert with_models == {"train", "sample"}
    assert "i2i/models/cut.py" in files("evaluate.py")
    assert files("preprocess.py") == {
        "stages/preprocess.py",
        "i2i/__init__.py",
        "i2i/cli.py",
        "i2i/config.py",
        "i2i/data/__init__.py",
        "i2i/data/images.py",
        "i2i/data/preprocess.py",
        "i2i/errors.py",
        "i2i/io.py",
    }
    assert "i2i/train.py" not in files("sample.py") and "i2i/sample.py" not in files("train.py")


def test_cli_help_lists_the_commands():
    out = run([str(BIN / "i2i"), "--help"], REPO)
    for command in ("download", "preprocess", "train", "weights", "datasets", "params"):
        assert command in out
    assert "horse2zebra" in run([str(BIN / "i2i"), "datasets"], REPO)
    listing = run([str(BIN / "i2i"), "weights", "--list"], REPO)
    assert (
        "vgg16" in listing
        and "missing" in listing
        and "hub/checkpoints/vgg16-397923af.pth" in listing
    )
