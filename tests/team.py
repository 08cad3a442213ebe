"""A team's project on shared services, as real processes on 127.0.0.1: a bare git remote, an
S3-compatible DVC remote (moto) and an MLflow server, seeded with a project whose baseline was
reproduced and pushed. tests/test_two_machines.py and tests/test_sweep.py start from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, write_params
from tests.servers import MlflowServer, S3Server

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


class Machine:
    """A clone with its own environment: the shared services' addresses and credentials."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check:
            assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
        return proc


class Team:
    """The services, and a remote holding the project with ``params`` whose ``targets`` (all
    stages when empty) were reproduced and pushed; :meth:`clone` gives a machine of the team."""

    def __init__(self, base: Path, params: dict, targets: tuple[str, ...] = ()):
        self.base = base
        (base / "mlflow").mkdir(parents=True)
        self.mlflow = MlflowServer(base / "mlflow")
        self.mlflow.start()
        self.s3 = S3Server(base)
        self.env = {
            **os.environ,
            **self.s3.env,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@e.x",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@e.x",
        }
        self.remote = base / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.remote)], check=True)
        seed = Machine(base / "seed", self.env)
        seed.root.mkdir()
        for name in ("i2i", "stages", "plots"):
            shutil.copytree(
                REPO / name, seed.root / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        shutil.copy(REPO / "dvc.yaml", seed.root / "dvc.yaml")
        params["tracking"]["uri"] = self.mlflow.url  # the team's server, committed
        write_params(seed.root / "params.yaml", params)
        (seed.root / ".gitignore").write_text("checkpoints/\n__pycache__/\n")
        seed.run("git", "init", "-q", "-b", "main")
        seed.run(DVC, "init", "-q")
        shutil.copy(REPO / ".dvc" / "config", seed.root / ".dvc" / "config")
        # The remote, as docs/scaling.md configures it; credentials stay in the environment.
        seed.run(DVC, "remote", "add", "-d", "storage", "s3://i2i/dvc")
        seed.run(DVC, "remote", "modify", "storage", "endpointurl", self.s3.url)
        seed.run(DVC, "repro", *targets)
        seed.run("git", "add", "-A")
        seed.run("git", "commit", "-qm", "baseline")
        seed.run("git", "remote", "add", "origin", str(self.remote))
        seed.run("git", "push", "-q", "origin", "main")
        seed.run(DVC, "push")

    def clone(self, name: str, env: dict[str, str] | None = None) -> Machine:
        env = {**self.env, **(env or {})}
        subprocess.run(
            ["git", "clone", "-q", str(self.remote), str(self.base / name)], check=True, env=env
        )
        return Machine(self.base / name, env)

    def stop(self) -> None:
        self.mlflow.kill()
        self.s3.stop()
