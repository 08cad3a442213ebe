"""MLflow tracking: runs, their metrics and artifacts, and the Model Registry. The other modules
that import mlflow are ``serving`` (the model flavour) and ``translate`` (fetching a model).

The store is the repository root's, also when DVC runs a stage in a copy of the repository
(``dvc exp run --temp`` and queued experiments run under ``<root>/.dvc/tmp/exps/``, where a
relative URI would write into the copy and lose the run). Its default is
``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts``. Store creation is
serialised with a file lock and SQLite waits for a busy database instead of failing, so
experiments running in parallel (``dvc queue start -j 2``) all land.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from i2i.config import TrackingConfig
from i2i.io import atomic_path, follow_umask

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


def _retry(fn, *args: Any, **kwargs: Any) -> Any:
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
                # MLflow 3's UI opens an experiment of this kind on its runs table (training runs),
                # not on its GenAI traces view.
                self.experiment_id = self.client.create_experiment(
                    cfg.experiment,
                    artifact_location=location,
                    tags={"mlflow.experimentKind": "custom_model_development"},
                )
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
            _retry(self.client.update_run, run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self.run_id = run_id
            self.set_tags({"resumed": "true", **tags})
            return run_id
        run = _retry(
            self.client.create_run, self.experiment_id, tags=tags, run_name=name or run_name(tags)
        )
        self.run_id = run.info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            _retry(self.client.log_batch, self.run_id, params=items[i : i + 100])
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
                _retry(self.client.get_run, run_id)
                self.run_id = run_id
                self.set_tags(tags)
                return run_id
            except Exception as e:  # MLflow raises its own error type for an unknown run
                if "not found" not in str(e).lower() and "RESOURCE_DOES_NOT_EXIST" not in str(e):
                    raise
        run = _retry(
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
            _retry(self.client.log_batch, self.run_id, metrics=items[i : i + 1000])

    def last_step(self, key: str) -> int:
        """The highest step logged for metric ``key`` in this run (0 when none)."""
        history = _retry(self.client.get_metric_history, self.run_id, key)
        return max((m.step for m in history), default=0)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        _retry(
            self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        _retry(self.client.log_image, self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifacts, self.run_id, str(folder), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            _retry(self.client.set_terminated, self.run_id, status)


@dataclass(frozen=True)
class RunRecord:
    """One run, read back for comparison."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each
    tags: dict[str, str]


def find_runs(
    cfg: TrackingConfig,
    experiment: str | None = None,
    tags: dict[str, str] | None = None,
    run_ids: list[str] | None = None,
    root: Path | None = None,
) -> list[RunRecord]:
    """Runs of ``experiment`` (default ``cfg.experiment``) carrying every tag in ``tags``, or the
    given ``run_ids``; oldest first. Unknown experiments and run ids, a missing store and one
    that cannot be read are errors naming them; nothing is written to the store."""
    from i2i.errors import I2IError

    uri = tracking_uri(cfg, root or repository_root())
    if uri.startswith("sqlite:///"):
        store = Path(uri[len("sqlite:///") :].split("?")[0])
        if not store.is_file():
            raise I2IError(
                f"no MLflow store at {store}: nothing has been tracked there yet (run "
                f"`dvc repro` or `i2i train` first), or set tracking.uri"
            )
    try:
        return _find_runs(uri, cfg, experiment, tags, run_ids)
    except I2IError:
        raise
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's and MLflow's many kinds
        first = (str(e).strip().splitlines() or [""])[0][:200]
        if "database is locked" in str(e):
            raise I2IError(
                f"the MLflow store {uri} stayed locked by another process (one holding "
                f"a long write); try again when it is done"
            ) from None
        raise I2IError(
            f"cannot read the MLflow store {uri} ({type(e).__name__}: {first}); if the "
            f"file is damaged, move it aside (the next run starts a new one)"
        ) from None


def _find_runs(
    uri: str,
    cfg: TrackingConfig,
    experiment: str | None,
    tags: dict[str, str] | None,
    run_ids: list[str] | None,
) -> list[RunRecord]:
    from mlflow.tracking import MlflowClient

    from i2i.errors import I2IError

    client = MlflowClient(tracking_uri=uri)
    if run_ids:
        runs = []
        for rid in run_ids:
            try:
                runs.append(_retry(client.get_run, rid))
            except Exception as e:
                raise I2IError(f"run {rid!r} not found in {uri} ({type(e).__name__})") from None
    else:
        name = experiment or cfg.experiment
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = [e.name for e in client.search_experiments()]
            raise I2IError(
                f"experiment {name!r} not found in {uri}; it has: {', '.join(known) or 'none'}"
            )
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items())
        runs = _retry(
            client.search_runs, [exp.experiment_id], filter_string=query, max_results=50000
        )
    records = [
        RunRecord(
            r.info.run_id,
            r.data.tags.get("dvc_exp_name") or r.info.run_name or r.info.run_id[:8],
            r.info.status,
            r.info.start_time,
            dict(r.data.params),
            dict(r.data.metrics),
            dict(r.data.tags),
        )
        for r in runs
    ]
    return sorted(records, key=lambda r: r.start_time)


def register(cfg: TrackingConfig, run: RunRecord, name: str, alias: str | None) -> int:
    """Register ``run``'s MLflow model (``runs:/<id>/model``) as a version of ``name`` in the
    project's Model Registry (one version per run: registering a run again reuses its version),
    point ``alias`` at it; return the version."""
    from mlflow.tracking import MlflowClient

    from i2i.errors import I2IError

    client = MlflowClient(tracking_uri=tracking_uri(cfg, repository_root()))
    if not any(a.path == "model/MLmodel" for a in client.list_artifacts(run.run_id, "model")):
        raise I2IError(
            f"run {run.name} ({run.run_id}) has no MLflow model: it was trained before the train "
            f"stage logged one, or did not finish"
        )
    if not client.search_registered_models(f"name = '{name}'"):
        _retry(client.create_registered_model, name)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.run_id}'")
    if versions:
        version = int(versions[0].version)
    else:
        source = f"runs:/{run.run_id}/model"
        created = _retry(client.create_model_version, name, source, run_id=run.run_id)
        version = int(created.version)
    if alias:
        _retry(client.set_registered_model_alias, name, alias, str(version))
    return version


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


def write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    """``rows`` of {"step": n, key: value} as a CSV (DVC's plots file), written atomically."""
    keys = ["step"] + sorted({k for r in rows for k in r} - {"step"})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in r.items()})


class TrainingLog:
    """Where a training run's numbers go: its MLflow run and the losses CSV (DVC plots).

    Rows stay pending until a checkpoint holds them (:meth:`saved`), so the CSV and MLflow
    never show iterations that a resume would run again. The rows travel in the checkpoint, so a
    kill between writing a checkpoint and flushing its rows loses nothing: on resume the CSV is
    rebuilt and MLflow is sent what it missed. Ranks other than 0 (``main=False``) log nothing.

    MLflow may be a server that goes away (``tracking.uri: http://...``). Nothing waits on it:
    the CSV is written first, and every MLflow call goes through an outbox, in order. When a
    call fails, it and everything after it stay in the outbox, training goes on, and the outbox
    is retried at later checkpoints (at most every ``retry_every`` seconds, doubling while the
    server stays away, up to a minute). :meth:`end` waits up to ``final_wait`` seconds for the
    server; whatever is still unsent then is named, and the rows reach MLflow at the next resume.
    """

    def __init__(
        self,
        cfg: TrackingConfig,
        losses_csv: Path,
        main: bool,
        retry_every: float = 2.0,
        final_wait: float = 120.0,
    ):
        self.tracker = Tracker(cfg) if main else NullTracker()
        if main and self.tracker.uri.startswith(("http:", "https:")):
            # A call to a server that is away fails in seconds, not after MLflow's default
            # seven retries (minutes): the outbox retries later instead. User settings win.
            for key, value in (("MAX_RETRIES", "1"), ("BACKOFF_FACTOR", "1"), ("TIMEOUT", "20")):
                os.environ.setdefault(f"MLFLOW_HTTP_REQUEST_{key}", value)
        self.csv, self.main = losses_csv, main
        self.rows: list[dict[str, float]] = []
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.run_id: str | None = None
        self.outbox: list[tuple[str, Any]] = []  # (what, a call), oldest first
        self.retry_every, self.final_wait = retry_every, final_wait
        self.failures, self.next_try = 0, 0.0

    def start(
        self, params: dict[str, Any], tags: dict[str, str], state: dict[str, Any] | None
    ) -> str | None:
        """A new MLflow run, or the one ``state`` (a checkpoint) continues, caught up."""
        self.run_id = self.tracker.start(params, tags, run_id=state["run_id"] if state else None)
        self.rows = list(state["rows"]) if state else []
        if self.main:
            write_rows(self.csv, self.rows)
            logged = self.tracker.last_step("loss/G/total") if state else 0
            self.tracker.log_metrics(
                [
                    (int(r["step"]), {k: v for k, v in r.items() if k != "step"})
                    for r in self.rows
                    if r["step"] > logged
                ]
            )
        return self.run_id

    def add(self, step: int, values: dict[str, float]) -> None:
        self.pending.append((step, values))

    def to_save(self) -> list[dict[str, float]]:
        """Every row so far, the pending ones included: what a checkpoint stores."""
        return self.rows + [{"step": step, **values} for step, values in self.pending]

    def saved(self) -> None:
        """A checkpoint now holds the pending rows: write them to the CSV, send them to MLflow."""
        if self.main:
            self.rows = self.to_save()
            write_rows(self.csv, self.rows)
            rows = list(self.pending)
            self._send(f"{len(rows)} rows of metrics", lambda: self._log_metrics(rows))
        self.pending = []

    def last(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {}

    def image(self, image: np.ndarray, artifact_file: str) -> None:
        self._send(artifact_file, lambda: self.tracker.log_image(image, artifact_file))

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._send(str(path), lambda: self.tracker.log_artifact(path, artifact_path))

    def model(self, generator_file: Path, example: np.ndarray) -> None:
        """The generators as the run's MLflow model ``model`` (:mod:`i2i.serving`)."""
        if not self.main:
            return
        import tempfile

        from i2i import serving

        folder = Path(tempfile.mkdtemp(prefix="i2i-mlflow-model-"))
        follow_umask(folder, folder=True)
        serving.save(generator_file, folder / "model", example)

        def send() -> None:
            self.tracker.log_artifacts(folder / "model", "model")
            shutil.rmtree(folder, ignore_errors=True)

        self._send("the MLflow model", send)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._send(f"{len(values)} metrics", lambda: self._log_metrics([(step, values)]))

    def _log_metrics(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        # After a failure, a call may be one the server carried out without answering.
        self.tracker.log_metrics(rows, again=self.failures > 0)

    def end(self, status: str) -> None:
        """Mark the run ended, after what the outbox holds (waiting up to ``final_wait`` s)."""
        self._send(f"the run's end ({status})", lambda: self.tracker.end(status))
        deadline = time.monotonic() + self.final_wait
        while self.outbox and time.monotonic() < deadline:
            time.sleep(max(0.0, min(self.next_try, deadline) - time.monotonic()))
            self._flush()
        if self.outbox:
            import sys

            print(
                f"WARNING: MLflow at {self.tracker.uri} is still unreachable; not sent: "
                f"{', '.join(what for what, _ in self.outbox)}. losses.csv and the checkpoint "
                f"hold every row; a resume (`i2i train --resume`) sends them.",
                file=sys.stderr,
            )

    def _send(self, what: str, call: Any) -> None:
        if self.main:
            self.outbox.append((what, call))
            self._flush()

    def _flush(self) -> None:
        """Send the outbox in order; on a failure keep the rest for later, never raise."""
        import sys

        if not self.outbox or time.monotonic() < self.next_try:
            return
        sent = 0
        while self.outbox:
            what, call = self.outbox[0]
            try:
                call()
            except Exception as e:  # noqa: BLE001 - any network or server error
                self.failures += 1
                wait = min(60.0, self.retry_every * 2 ** (self.failures - 1))
                self.next_try = time.monotonic() + wait
                if self.failures == 1:
                    first = (str(e).strip().splitlines() or [""])[0][:160]
                    print(
                        f"WARNING: cannot log to MLflow at {self.tracker.uri} ({first}); "
                        f"training goes on, and what it logs is kept and sent when the server "
                        f"is back",
                        file=sys.stderr,
                    )
                return
            self.outbox.pop(0)
            sent += 1
        if self.failures:
            print(f"MLflow is back: sent {sent} buffered item(s)", file=sys.stderr)
        self.failures, self.next_try = 0, 0.0
