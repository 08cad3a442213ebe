"""A training run's log: the losses CSV (DVC plots) and its MLflow run, through an outbox that
never lets a tracking server that is away stop training."""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from i2i.config import TrackingConfig
from i2i.io import atomic_path, follow_umask
from i2i.tracking import NullTracker, Tracker


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
