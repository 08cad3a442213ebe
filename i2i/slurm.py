"""SLURM through its own commands (``sbatch``, ``squeue``, ``scontrol``): a job's batch script,
its submission, and what the scheduler says of it. Nothing here knows about experiments."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from i2i.errors import I2IError

# squeue states of a job that is still the scheduler's business (not ended).
ALIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "RESV_DEL_HOLD",
}
SIGNAL = "USR1"  # what --signal sends before the time limit: i2i.stopping's SIGUSR1


class SlurmError(I2IError, RuntimeError):
    """A SLURM command failed or is not installed."""


@dataclass(frozen=True)
class Request:
    """What one job asks of the scheduler; empty strings are left to the cluster's defaults."""

    name: str
    log: Path
    partition: str = ""
    account: str = ""
    time: str = ""
    gres: str = ""
    cpus_per_task: int = 1
    mem: str = ""
    signal_before: int = 0
    extra: tuple[str, ...] = ()

    def options(self) -> list[str]:
        given = {
            "--job-name": self.name,
            "--output": str(self.log),
            "--partition": self.partition,
            "--account": self.account,
            "--time": self.time,
            "--gres": self.gres,
            "--cpus-per-task": str(self.cpus_per_task),
            "--mem": self.mem,
            "--signal": f"B:{SIGNAL}@{self.signal_before}" if self.signal_before else "",
        }
        # --requeue: SLURM may put the job back after a node failure or preemption, and the job
        # may requeue itself; --open-mode=append keeps every attempt's lines in one log.
        fixed = ["--requeue", "--open-mode=append"]
        return [f"{k}={v}" for k, v in given.items() if v] + fixed + list(self.extra)


def script(request: Request, body: str) -> str:
    """A batch script: the request as ``#SBATCH`` lines, then ``body`` (shell)."""
    for option in request.options():
        if any(c in option for c in "\n\r\0"):
            raise SlurmError(f"sbatch option {option!r}: a line break would end the #SBATCH line")
    lines = ["#!/bin/bash", *(f"#SBATCH {shlex.quote(o)}" for o in request.options())]
    return "\n".join(lines) + "\n" + body


def require() -> None:
    """Raise a clear error when the SLURM client commands are not on PATH."""
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        raise SlurmError(
            f"{', '.join(missing)} not found on PATH: run this on a machine that submits to "
            f"the cluster (a login node), with SLURM's client commands installed"
        )


def _run(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"{' '.join(cmd)}: {e}") from None
    if done.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def submit(script_path: Path) -> str:
    """Submit a batch script; return the job id."""
    out = _run("sbatch", "--parsable", str(script_path)).strip()
    return out.split(";")[0]  # "id" or "id;cluster"


def states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """(state, reason) of each job the scheduler still knows (ended jobs for a few minutes,
    its MinJobAge); a job it forgot is absent."""
    if not job_ids:
        return {}
    try:
        out = _run("squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i|%T|%r")
    except SlurmError as e:
        if "Invalid job id" in str(e):  # every one of them forgotten
            return {}
        raise
    found = {}
    for line in out.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        found[job.strip()] = (state.strip(), reason.strip())
    return found


def requeue(job_id: str) -> None:
    """Put a running job back in the queue (it must have been submitted with --requeue)."""
    _run("scontrol", "requeue", job_id)
