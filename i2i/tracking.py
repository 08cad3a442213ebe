"""MLflow tracking: the store and a run's writer (:class:`Tracker`). Reading runs back and the
Model Registry are :mod:`i2i.runs`; a training's log with its outbox is
:mod:`i2i.training_log`. The other modules that import mlflow are ``serving`` (the model
flavour) and ``translate`` (fetching a model).

The store is the repository root's, also when DVC runs a stage in a copy of the repository
(``dvc exp run --temp`` and queued experiments run under ``<root>/.dvc/tmp/exps/``, where a
relative URI would write into the copy and lose the run). Its default is
``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts``. Store creation is
serialised with a file lock and SQLite waits for a busy database instead of failing, so
experiments running in parallel (``dvc queue start -j 2``) all land.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from i2i.config import TrackingConfig

DVC_COPIES = (".dvc", "tmp", "exps")


def repository_root(start: Path | None = None) -> Path:
    """The real repository root, seen from ``start`` (default: the working directory)."""
    if os.environ.get("I2I_REPO_ROOT"):
        return Path(os.environ["I2I_REPO_ROOT"]).resolve()
    start = (start or Path.cwd()).resolve()
    parts = start.parts
    for i in range(len(parts) - len(DVC_COPIES) + 1):
        if parts[i : i + len(DVC_COPIES)] == DVC_COPIES:
            return Path(*parts[:i])
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return start


def tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the repository's ``mlflow.db``.

    The URI returned never holds credentials: a ``user:password@`` in ``MLFLOW_TRACKING_URI``
    moves to ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, where MLflow's HTTP
    client reads them, and the variable keeps the URI without them. The URI is written to
    files, logged and printed (also by MLflow: "View run at ..."); the credentials stay in this
    process and the processes it starts.
    """
    uri = cfg.uri or _without_credentials(os.environ.get("MLFLOW_TRACKING_URI", ""))
    uri = uri or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, _, query = uri[len("sqlite:///") :].partition("?")
        uri = f"sqlite:///{root / path}" + (f"?{query}" if query else "")
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        # Wait for a busy database (another experiment writing) instead of failing at once.
        uri += ("&" if "?" in uri else "?") + "timeout=60"
    return uri


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    for variable, value in (
        ("MLFLOW_TRACKING_USERNAME", parts.username),
        ("MLFLOW_TRACKING_PASSWORD", parts.password),
    ):
        if value is not None:
            os.environ.setdefault(variable, unquote(value))
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean


@contextlib.contextmanager
def _store_lock(root: Path) -> Iterator[None]:
    with open(root / ".mlflow.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def retry(fn, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(8):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MLflow wraps SQLite's OperationalError in its own types
            if "database is locked" not in str(e) or attempt == 7:
                raise
            time.sleep(0.1 * 2**attempt)


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags() -> dict[str, str]:
    """Where this run comes from: git commit and, inside a DVC experiment, its name and baseline."""
    tags = {}
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or git_commit(Path.cwd())
    if commit:
        tags["git_commit"] = commit
    for env, tag in (
        ("DVC_EXP_NAME", "dvc_exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def run_name(tags: dict[str, str]) -> str:
    """The name ``mlflow ui`` lists: the DVC experiment's, else ``<model>@<commit>`` for a
    workspace run (``dvc repro``, ``i2i train``; ``<model>`` outside a commit) instead of
    MLflow's random one."""
    if tags.get("dvc_exp_name"):
        return tags["dvc_exp_name"]
    name, commit = tags.get("model", "workspace"), tags.get("git_commit", "")[:7]
    return f"{name}@{commit}" if commit else name


def create_experiment(client, name: str, location: str | None) -> str:
    """Create experiment ``name``, or return its id where another process created it first.

    The lock above covers one checkout's store only: trainings in other clones or on other
    machines (a sweep's jobs) reach a shared server together, and all but one of them get
    RESOURCE_ALREADY_EXISTS for the name none of them found a moment before.
    """
    from mlflow.exceptions import MlflowException

    try:
        # MLflow 3's UI opens an experiment of this kind on its runs table (training runs), not
        # on its GenAI traces view.
        return client.create_experiment(
            name,
            artifact_location=location,
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


class Tracker:
    """One MLflow run: created, or continued after a resume."""

    def __init__(self, cfg: TrackingConfig, root: Path | None = None):
        from mlflow.tracking import MlflowClient

        self.root = root or repository_root()
        self.uri = tracking_uri(cfg, self.root)
        with _store_lock(self.root):
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                location = (
                    (self.root / "mlartifacts").as_uri() if self.uri.startswith("sqlite:") else None
                )
                self.experiment_id = create_experiment(self.client, cfg.experiment, location)
            else:
                self.experiment_id = exp.experiment_id
        self.run_id: str | None = None

    def start(
        self,
        params: dict[str, Any],
        tags: dict[str, str],
        run_id: str | None = None,
        name: str | None = None,
    ) -> str:
        """Create a run logging ``params`` (named ``name``, else :func:`run_name`), or continue
        ``run_id`` (params were logged then)."""
        from mlflow.entities import Param, RunStatus

        if run_id is not None:
            retry(self.client.update_run, run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self.run_id = run_id
            self.set_tags({"resumed": "true", **tags})
            return run_id
        run = retry(
            self.client.create_run, self.experiment_id, tags=tags, run_name=name or run_name(tags)
        )
        self.run_id = run.info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            retry(self.client.log_batch, self.run_id, params=items[i : i + 100])
        return self.run_id

    def attach(self, run_file: Path, tags: dict[str, str]) -> str:
        """Log into the run that ``run_file`` (the train stage's ``models/run.json``) names, left
        in its state; a new run tagged with the missing id when this store does not have it
        (models brought from another machine's DVC cache)."""
        import json

        run_id = (
            json.loads(Path(run_file).read_text())["run_id"] if Path(run_file).is_file() else None
        )
        if run_id is not None:
            try:
                retry(self.client.get_run, run_id)
                self.run_id = run_id
                self.set_tags(tags)
                return run_id
            except Exception as e:  # MLflow raises its own error type for an unknown run
                if "not found" not in str(e).lower() and "RESOURCE_DOES_NOT_EXIST" not in str(e):
                    raise
        run = retry(
            self.client.create_run,
            self.experiment_id,
            tags={**tags, "train_run_id": str(run_id)},
            run_name=run_name(tags),
        )
        self.run_id = run.info.run_id
        return self.run_id

    def log_metrics(self, rows: list[tuple[int, dict[str, float]]], again: bool = False) -> None:
        """``rows`` of (step, {key: value}), in ascending steps, one batched write per 1000 values.

        ``again``: these rows may have reached the run already (a server that committed a
        batch and died before answering). Values at or below a key's highest logged step are
        then left out, so a resend never logs a step twice: batches go out in step order, so
        what the server holds of them is, for each key, a prefix of the steps.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for step, values in rows for k, v in values.items()]
        if again:
            logged = {key: self.last_step(key) for key in {m.key for m in items}}
            items = [m for m in items if m.step > logged[m.key]]
        for i in range(0, len(items), 1000):
            retry(self.client.log_batch, self.run_id, metrics=items[i : i + 1000])

    def last_step(self, key: str) -> int:
        """The highest step logged for metric ``key`` in this run (0 when none)."""
        history = retry(self.client.get_metric_history, self.run_id, key)
        return max((m.step for m in history), default=0)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        retry(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        retry(self.client.log_image, self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        retry(self.client.log_artifacts, self.run_id, str(folder), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            retry(self.client.set_terminated, self.run_id, status)


class NullTracker:
    """What ranks other than 0 use: the same calls, no effect."""

    run_id = None

    def start(
        self, params: dict[str, Any], tags: dict[str, str], run_id: str | None = None
    ) -> None:
        return None

    def attach(self, run_file: Path, tags: dict[str, str]) -> None:
        return None

    def log_metrics(self, rows: list[tuple[int, dict[str, float]]], again: bool = False) -> None:
        return None

    def last_step(self, key: str) -> int:
        return 0

    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_image(self, image: np.ndarray, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
