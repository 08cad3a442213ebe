"""``i2i sweep``: a grid of experiments, one SLURM job each, every job a DVC experiment in a clone
of its own that sends its result home.

The grid is DVC's own: ``-S train.seed=0,1,2 -S loss.vgg_w=0,1`` expands as
``dvc exp run --queue`` expands it (its Hydra sweep grammar). Each experiment gets a stable name
(the prefix, its values, a hash of its settings) and a folder on shared storage,
``<cluster.root>/<repository>/<commit>/<name>/``, holding:

- ``job.json`` and ``job.sh``: what the job runs (:mod:`i2i.sweep_job`) and its batch script;
- ``workspace/``: the job's clone of the submitting commit, where ``dvc exp run`` runs and
  training keeps its checkpoints, so a requeued or resubmitted job resumes there;
- ``slurm.log``: every attempt's output, appended;
- ``events.jsonl``: what happened and when (submitted, started, cloned, ran, signalled,
  requeued, pushed, finished, failed), one JSON line each, written by the submitter and the job.

Submitting a sweep again submits only the experiments that neither finished nor are still
queued or running, so nothing runs twice; an experiment whose job was killed resumes from its
workspace's last checkpoint.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2i import slurm
from i2i.config import ClusterConfig, ParamsError, load_params
from i2i.errors import I2IError
from i2i.io import write_bytes, write_json


class SweepError(I2IError, RuntimeError):
    """A sweep that cannot be submitted as asked."""


# --------------------------------------------------------------------------- records


class Record:
    """An experiment's ``events.jsonl``: one JSON object per line, appended with one write."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "events.jsonl"

    def add(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a node that died mid-write
                continue
        return out


def since_submitted(events: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The last submission's job id and the events after it."""
    for i in range(len(events) - 1, -1, -1):
        if events[i]["event"] == "submitted":
            return str(events[i]["job"]), events[i + 1 :]
    return None, events


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Experiment:
    name: str
    settings: tuple[str, ...]  # "key=value", as `dvc exp run -S` takes them
    folder: Path

    @property
    def record(self) -> Record:
        return Record(self.folder)


def grid(sets: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The experiments of ``-S`` options, as ``dvc exp run --queue`` expands them."""
    from dvc.utils.hydra import get_hydra_sweeps

    for s in sets:
        key = s.split("=", 1)[0]
        if "=" not in s or not key:
            raise SweepError(f"-S {s!r}: expected key=value or key=v1,v2,... (train.seed=0,1,2)")
        if ":" in key:
            raise SweepError(f"-S {s!r}: a sweep sets keys of params.yaml only (no file: prefix)")
    try:
        combos = get_hydra_sweeps({"params.yaml": list(sets)})
    except Exception as e:  # Hydra's grammar errors have several types
        raise SweepError(f"-S {' '.join(sets)}: {e}") from None
    return [tuple(c["params.yaml"]) for c in combos]


def experiment_name(prefix: str, settings: tuple[str, ...]) -> str:
    """``<prefix>-<values>-<hash>``: readable in ``dvc exp show``, unique, a valid git ref."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", prefix):
        raise SweepError(
            f"-n {prefix!r}: expected up to 40 letters, digits, _ and -, starting with a letter "
            f"or digit (it starts each experiment's name, a git ref and a folder)"
        )
    pairs = sorted(s.split("=", 1) for s in settings)  # the same settings in any -S order
    values = "-".join(f"{key.rsplit('.', 1)[-1]}{value}" for key, value in pairs)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", values)[:40].strip("_-")
    digest = hashlib.sha256("\n".join(sorted(settings)).encode()).hexdigest()[:6]
    return "-".join(p for p in (prefix, slug, digest) if p)


def check_settings(params_path: Path, settings: tuple[str, ...]) -> None:
    """Apply ``settings`` to a copy of the params file as DVC will, and check the result as
    every stage does, so a bad value fails here and not in a job hours later."""
    from dvc.utils.hydra import apply_overrides

    from i2i import params_check
    from i2i.config import read_yaml
    from i2i.configuration import flatten

    keys = set(flatten(read_yaml(Path(params_path).read_text()) or {}))
    for setting in settings:
        key = setting.split("=", 1)[0].lstrip("+~")
        if key not in keys and not any(k.startswith(f"{key}.") for k in keys):
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SweepError(f"-S {setting}: {params_path} has no key {key}{hint}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copy(params_path, copy)
        try:
            apply_overrides(copy, list(settings))
            params_check.validate(load_params(copy), str(copy))
        except ParamsError as e:
            raise SweepError(f"-S {' '.join(settings)}: {str(e).split(': ', 1)[-1]}") from None
        except Exception as e:  # DVC/Hydra: a key or value it cannot apply
            raise SweepError(f"-S {' '.join(settings)}: {e}") from None


# --------------------------------------------------------------------------- the repository


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise SweepError(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Source:
    """The submitting clone: its commit, and where its jobs send their experiments."""

    root: Path
    commit: str
    remote: str
    remote_url: str

    @property
    def sweeps(self) -> str:  # the folder of this repository's sweeps at this commit
        return f"{self.root.name}/{self.commit[:12]}"


def source(repo: Path, cluster: ClusterConfig) -> Source:
    repo = Path(repo).resolve()
    if not (repo / ".git").exists():
        raise SweepError(f"{repo}: not a git repository; a sweep's jobs clone its commit")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        files = ", ".join(line.split(maxsplit=1)[-1] for line in dirty.splitlines()[:5])
        raise SweepError(
            f"uncommitted changes in {files}: each job clones the commit, so they would not be "
            f"part of it; commit them, or pass changed params as -S"
        )
    try:
        url = _git(repo, "remote", "get-url", cluster.remote)
    except SweepError:
        raise SweepError(
            f"cluster.remote = {cluster.remote!r}: no such git remote in {repo}; jobs push their "
            f"experiments there (git remote -v lists the remotes)"
        ) from None
    return Source(repo, _git(repo, "rev-parse", "HEAD"), cluster.remote, url)


def check_services(repo: Path, params_path: Path) -> None:
    """A job's results must reach shared services: a tracking server and a DVC remote."""
    params = load_params(params_path)
    uri = params.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://", "databricks")):
        raise SweepError(
            f"tracking.uri = {params.tracking.uri!r} and MLFLOW_TRACKING_URI = "
            f"{os.environ.get('MLFLOW_TRACKING_URI', '')!r}: a sweep's jobs run in clones of "
            f"their own, so they need a tracking server (http://host:5000, docs/scaling.md)"
        )
    dvc = str(Path(sys.executable).parent / "dvc")
    done = subprocess.run([dvc, "remote", "default"], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SweepError(
            f"{repo}: no default DVC remote; jobs push their outputs there "
            f"(dvc remote add -d storage s3://..., docs/scaling.md)"
        )


def root_folder(repo: Path, cluster: ClusterConfig) -> Path:
    root = (repo / cluster.root).resolve()  # an absolute root replaces repo; links resolved
    if root == repo or repo in root.parents:
        raise SweepError(
            f"cluster.root = {cluster.root!r} is inside the repository {repo}: jobs must never "
            f"write into the submitting workspace; use a folder beside it (../i2i-sweeps)"
        )
    return root


# --------------------------------------------------------------------------- submitting


def request(cluster: ClusterConfig, name: str, log: Path) -> slurm.Request:
    return slurm.Request(
        name=f"i2i-{name}",
        log=log,
        partition=cluster.partition,
        account=cluster.account,
        time=cluster.time,
        gres=cluster.gres,
        cpus_per_task=cluster.cpus_per_task,
        mem=cluster.mem,
        signal_before=cluster.signal_before,
        extra=cluster.sbatch,
    )


def job_script(cluster: ClusterConfig, folder: Path, name: str) -> str:
    body = "\n".join(
        [
            f"# i2i sweep: experiment {name}; `i2i sweep status` shows it",
            "set -eu",
            *([cluster.setup] if cluster.setup else []),
            # the job's share of the node, as PyTorch's and OpenMP's threads
            'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
            f"exec {shlex.quote(sys.executable)} -m i2i.sweep_job {shlex.quote(str(folder))}",
        ]
    )
    return slurm.script(request(cluster, name, folder / "slurm.log"), body + "\n")


@dataclass(frozen=True)
class Decision:
    experiment: Experiment
    action: str  # "submitted", "finished", "queued"
    job: str | None


def plan(src: Source, root: Path, prefix: str, sets: tuple[str, ...]) -> list[Experiment]:
    return [
        Experiment(name, settings, root / src.sweeps / name)
        for settings in grid(sets)
        for name in [experiment_name(prefix, settings)]
    ]


def submit(
    repo: Path, params_path: Path, cluster: ClusterConfig, prefix: str, sets: tuple[str, ...]
) -> list[Decision]:
    """Submit each experiment of the grid that has neither finished nor a job still alive."""
    slurm.require()
    src = source(repo, cluster)
    check_services(src.root, params_path)
    root = root_folder(src.root, cluster)
    experiments = plan(src, root, prefix, sets)
    for e in experiments:
        check_settings(params_path, e.settings)
    events = {e.name: e.record.events() for e in experiments}
    jobs = {name: since_submitted(evs)[0] for name, evs in events.items()}
    scheduler = slurm.states([job for job in jobs.values() if job])
    decisions = []
    for e in experiments:
        job = jobs[e.name]
        state, _ = state_of(events[e.name], scheduler.get(job) if job else None)
        if state != "failed":  # finished, or still pending, running or requeued
            decisions.append(Decision(e, "finished" if state == "finished" else "queued", job))
            continue
        e.folder.mkdir(parents=True, exist_ok=True)
        write_json(
            e.folder / "job.json",
            {
                "name": e.name,
                "settings": list(e.settings),
                "commit": src.commit,
                "source": str(src.root),
                "remote": src.remote,
                "remote_url": src.remote_url,
            },
        )
        write_bytes(e.folder / "job.sh", job_script(cluster, e.folder, e.name).encode())
        job = slurm.submit(e.folder / "job.sh")
        e.record.add("submitted", job=job)
        decisions.append(Decision(e, "submitted", job))
    return decisions


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Status:
    experiment: Experiment
    state: str  # pending, running, requeued, finished, failed
    job: str | None
    attempts: int
    detail: str


def state_of(events: list[dict[str, Any]], scheduler: tuple[str, str] | None) -> tuple[str, str]:
    """The experiment's state from its events and the scheduler's word on its last job."""
    job, after = since_submitted(events)
    if any(e["event"] == "finished" for e in events):
        return "finished", ""
    kind = scheduler[0] if scheduler else ""
    if kind in slurm.ALIVE:
        if kind in ("RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"):
            return "running", ""
        ran = any(e["event"] == "started" for e in after)
        return ("requeued" if ran or kind.startswith("REQUEUE") else "pending"), scheduler[1]
    failed = [e for e in after if e["event"] == "failed"]
    why = failed[-1].get("why", "") if failed else ""
    if not why:
        why = f"job {job} ended {kind.lower() or 'and left the queue'} without finishing"
    return "failed", why


def status(repo: Path, cluster: ClusterConfig, tail: int = 10) -> list[Status]:
    """Every experiment of the sweeps at the repository's current commit."""
    slurm.require()
    repo = Path(repo).resolve()
    commit = _git(repo, "rev-parse", "HEAD")
    base = root_folder(repo, cluster) / repo.name / commit[:12]
    folders = sorted(p for p in base.glob("*") if (p / "job.json").is_file())
    rows = []
    events = {f: Record(f).events() for f in folders}
    jobs = {f: since_submitted(evs)[0] for f, evs in events.items()}
    scheduler = slurm.states([j for j in jobs.values() if j])
    for folder in folders:
        spec = json.loads((folder / "job.json").read_text())
        job = jobs[folder]
        state, detail = state_of(events[folder], scheduler.get(job) if job else None)
        if state == "failed":
            log = folder / "slurm.log"
            lines = log.read_text(errors="replace").splitlines()[-tail:] if log.is_file() else []
            detail = "\n".join([detail, *lines])
        experiment = Experiment(spec["name"], tuple(spec["settings"]), folder)
        attempts = sum(e["event"] == "started" for e in events[folder])
        rows.append(Status(experiment, state, job, attempts, detail))
    return rows
