"""Tiny, fast training configurations and a prepared dataset for the training tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from i2i.config import params_from_dict
from i2i.data.download import download
from i2i.data.preprocess import preprocess
from tests.conftest import REPO, tiny_params, write_params

BIN = Path(sys.executable).parent


def tiny_train_params(name: str = "cyclegan", **train) -> dict:
    p = tiny_params()
    p["data"]["shapes"].update(num_train=8, num_test=2)
    p["model"]["name"] = name
    p["model"]["cyclegan"].update(ngf=4, n_blocks=1, ndf=4)
    p["model"]["munit"].update(
        dim=4, mlp_dim=8, n_res=1, dis_dim=4, dis_n_layer=2, dis_num_scales=2
    )
    for cut in ("cut", "fastcut"):
        p["model"][cut].update(ngf=4, n_blocks=1, ndf=4, num_patches=8, head_dim=8)
    p["train"].update(
        iterations=6,
        batch_size=2,
        checkpoint_every=3,
        log_every=1,
        sample_every=3,
        num_samples=2,
        device="cpu",
    )
    p["train"].update(train)
    p["sample"].update(num_styles=3, num_examples=2, gallery_inputs=2)
    p["backbones"]["policy"] = "random"  # no download; tests/test_backbones.py covers the others
    p["evaluate"].update(
        lpips_inputs=2, lpips_pairs=2, cis_inputs=2, cis_samples=4, classifier_steps=5, batch_size=8
    )
    return p


def prepare(root: Path, params: dict) -> Path:
    cfg = params_from_dict(params).data
    download(cfg, root / "data" / "raw")
    preprocess(root / "data" / "raw", root / "data" / "prepared", cfg)
    return root / "data" / "prepared"


def project(root: Path, params: dict) -> Path:
    """A scratch git repository with prepared data and a params file, as a user's checkout."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    write_params(root / "params.yaml", params)
    prepare(root, params)
    return root


def dvc_repo(root: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding this project's pipeline and ``params``."""
    import shutil

    root.mkdir(parents=True)
    for name in ("i2i", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    write_params(root / "params.yaml", params)
    dvc = str(BIN / "dvc")
    for cmd in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        [dvc, "config", "core.analytics", "false"],
    ):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def run_stage(
    root: Path,
    *args: str,
    check: bool = True,
    launcher: list[str] | None = None,
    stage: str = "train",
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = (launcher or [sys.executable]) + [
        str(REPO / "stages" / f"{stage}.py"),
        "--params",
        "params.yaml",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc
