"""Shared fixtures: a real HTTP server on 127.0.0.1, tiny params files, small image helpers."""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# One thread, whatever the caller's shell exports: PyTorch's, OpenMP's and MKL's thread pools
# follow OMP_NUM_THREADS, here and in every process the tests start. The thread count decides
# how float sums are split and so how they round: two runs compared bit for bit must use the same
# count on both sides, and a lab shell's OMP_NUM_THREADS=2 must not reach one side only. With
# pytest-xdist (make test's -n 2) it also keeps the two workers off each other's cores.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"


# The longest files, roughly longest first as measured on 2 cores (re-measure with
# --durations=0 when tests change), ahead of the rest in their own order. make test runs each
# file whole on one of two workers (--dist loadfile, with --no-loadscope-reorder so this order
# is kept): a long file started last would run on alone after the other worker ran out of work.
LONGEST_FIRST = (
    "test_train.py",
    "test_experiments.py",
    "test_backbones.py",
    "test_two_machines.py",
    "test_sweep.py",
    "test_multinode.py",
    "test_tracking_server.py",
    "test_sample_evaluate_stages.py",
    "test_bench.py",
    "test_registry.py",
    "test_resume.py",
    "test_cut.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as found


class FileServer(ThreadingHTTPServer):
    """Serves files from ``root``; honours Range unless ``ranges`` is False; can drop connections.

    ``cut[path] = [n1, n2, ...]`` makes the next responses for ``path`` stop after n bytes of
    body (then close the socket), one entry per request. Every request is logged.
    """

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.ranges = True
        self.cut: dict[str, list[int]] = {}
        self.log: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def sent(self, path: str) -> int:
        return sum(r["sent"] for r in self.log if r["path"] == path)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv: FileServer = self.server  # type: ignore[assignment]
        entry = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
        srv.log.append(entry)
        f = srv.root / self.path.lstrip("/")
        if not f.is_file():
            self.send_error(404, "Not Found")
            return
        data = f.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            start = 0
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cuts = srv.cut.get(self.path)
        if cuts:
            body = body[: cuts.pop(0)]
            self.close_connection = True
        entry["sent"] = len(
            body
        )  # before writing: the client may finish before this thread resumes
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "served"
    root.mkdir()
    srv = FileServer(root)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real caches: datasets and weights go under tmp_path."""
    monkeypatch.setenv("I2I_CACHE", str(tmp_path / "i2i-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("I2I_QUIET", "1")


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri():
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, so a test that calls it would
    send every later test's `i2i` processes in this worker to its store: undo it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow

        mlflow.set_tracking_uri(before)  # None: unset, which also removes the variable
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(**data_overrides: object) -> dict:
    """The default params with a tiny synthetic dataset, as a dict to edit or dump."""
    p = default_params()
    p["data"].update(load_size=32, crop_size=32, num_workers=0)
    p["data"]["shapes"].update(image_size=32, num_train=6, num_test=3)
    p["data"].update(data_overrides)
    return p


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def save_image(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def solid(h: int, w: int, value: int | tuple[int, int, int]) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)
