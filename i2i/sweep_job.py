"""One experiment of a sweep, inside its SLURM job: ``python -m i2i.sweep_job FOLDER``.

The job's batch script ``exec``s this module, so it is the process SLURM's ``--signal=B:USR1``
reaches. It works in ``FOLDER/workspace`` only, and in this order:

1. clone the submitting commit there (once: a requeued or resubmitted job finds it);
2. ``dvc exp run --pull -n NAME -S ...``: the stages whose inputs did not change are pulled
   from the DVC remote instead of run; training resumes from the workspace's checkpoints;
3. ``dvc exp push REMOTE NAME``: the experiment's commit to git, its outputs to the DVC remote.

On SIGUSR1 it passes the signal to training, which writes a checkpoint and stops
(:mod:`i2i.stopping`); DVC and the other stages ignore it. The job then requeues itself, and
the next attempt resumes the same MLflow run (the checkpoint names it). Each step's time and
size go to ``events.jsonl`` (:class:`i2i.sweep.Record`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from i2i import slurm
from i2i.io import atomic_dir
from i2i.sweep import Record

BIN = Path(sys.executable).parent


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def outputs_sent(workspace: Path, commit: str) -> tuple[int, int]:
    """Bytes of the experiment's cached outputs that came from the DVC remote (stages whose
    lock entry equals the submitting commit's: ``--pull`` fetched them) and that went to it
    (stages that ran here), from the sizes dvc.lock records."""
    import yaml

    uncached = {
        path
        for stage in (yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]).values()
        for out in stage.get("outs", [])
        if isinstance(out, dict)
        for path, opts in out.items()
        if not (opts or {}).get("cache", True)
    }
    shown = subprocess.run(
        ["git", "show", f"{commit}:dvc.lock"], cwd=workspace, capture_output=True, text=True
    )
    before = (yaml.safe_load(shown.stdout) or {}).get("stages", {}) if shown.returncode == 0 else {}
    pulled = pushed = 0
    for name, entry in yaml.safe_load((workspace / "dvc.lock").read_text())["stages"].items():
        size = sum(o.get("size", 0) for o in entry.get("outs", []) if o["path"] not in uncached)
        if before.get(name) == entry:
            pulled += size
        else:
            pushed += size
    return pulled, pushed


class Job:
    def __init__(self, folder: Path):
        self.folder = folder
        self.spec = json.loads((folder / "job.json").read_text())
        self.workspace = folder / "workspace"
        self.record = Record(folder)
        self.child: subprocess.Popen | None = None
        self.signalled = False
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def on_signal(self, signum: int, frame: object) -> None:
        self.signalled = True
        self.record.add("signalled", signal=signal.Signals(signum).name)
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signum)

    def run(self, *cmd: str, cwd: Path) -> int:
        """``cmd`` in a process group of its own that ignores SIGUSR1 (training handles it)."""

        def ignore_usr1() -> None:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)

        self.child = subprocess.Popen(
            cmd, cwd=cwd, env=self.env, start_new_session=True, preexec_fn=ignore_usr1
        )
        rc = self.child.wait()
        self.child = None
        return rc

    def step(self, name: str, *cmd: str, cwd: Path) -> float:
        """Run ``cmd``; its seconds. When it fails after SIGUSR1 the job requeues itself;
        otherwise the failure is recorded and the job ends."""
        began = time.monotonic()
        rc = self.run(*cmd, cwd=cwd)
        seconds = round(time.monotonic() - began, 2)
        if rc == 0:
            return seconds
        why = f"{name} failed"
        if self.signalled:
            self.record.add("requeued", step=name, seconds=seconds)
            try:
                slurm.requeue(os.environ["SLURM_JOB_ID"])
                time.sleep(600)  # SLURM ends this attempt; the next one resumes
            except slurm.SlurmError as e:  # e.g. a cluster that forbids requeueing
                why = str(e)
        self.record.add("failed", step=name, rc=rc, why=why)
        sys.exit(rc)

    def clone(self) -> None:
        if (self.workspace / ".git").exists():
            return
        began = time.monotonic()
        spec, remote = self.spec, self.spec["remote"]
        with atomic_dir(self.workspace) as tmp:
            for cmd in (
                [
                    "git",
                    "clone",
                    "-q",
                    "--no-checkout",
                    "--origin",
                    remote,
                    spec["source"],
                    str(tmp),
                ],
                ["git", "-C", str(tmp), "remote", "set-url", remote, spec["remote_url"]],
                ["git", "-C", str(tmp), "checkout", "-q", "--detach", spec["commit"]],
            ):
                subprocess.run(cmd, check=True, env=self.env, capture_output=True)
        self.record.add(
            "cloned",
            seconds=round(time.monotonic() - began, 2),
            bytes=folder_bytes(self.workspace / ".git"),
        )

    def experiment_exists(self) -> bool:
        done = subprocess.run(
            [str(BIN / "dvc"), "exp", "list", "--name-only"],
            cwd=self.workspace,
            env=self.env,
            capture_output=True,
            text=True,
        )
        return self.spec["name"] in done.stdout.split()

    def main(self) -> None:
        signal.signal(signal.SIGUSR1, self.on_signal)
        self.record.add(
            "started",
            job=os.environ.get("SLURM_JOB_ID"),
            restart=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            host=socket.gethostname(),
        )
        self.clone()
        dvc, name = str(BIN / "dvc"), self.spec["name"]
        done = self.experiment_exists()  # an earlier attempt ran it and was stopped before the push
        if not done:
            sets = [a for s in self.spec["settings"] for a in ("-S", s)]
            seconds = self.step(
                "dvc exp run", dvc, "exp", "run", "--pull", "-n", name, *sets, cwd=self.workspace
            )
            summary = self.workspace / "reports" / "train" / "summary.json"
            trained = json.loads(summary.read_text()).get("seconds") if summary.is_file() else None
        pulled, pushed = outputs_sent(self.workspace, self.spec["commit"])
        if not done:
            self.record.add("ran", seconds=seconds, train_seconds=trained, pulled_bytes=pulled)
        seconds = self.step(
            "dvc exp push", dvc, "exp", "push", self.spec["remote"], name, cwd=self.workspace
        )
        self.record.add("pushed", seconds=seconds, bytes=pushed)
        self.record.add("finished")


if __name__ == "__main__":
    Job(Path(sys.argv[1]).resolve()).main()
