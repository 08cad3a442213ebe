"""The shared services of a team, as real processes on 127.0.0.1: an MLflow tracking server and
an S3-compatible object store (moto in server mode)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, what: str) -> None:
    began = time.monotonic()
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() - began < 120, f"{what} did not start"
            time.sleep(0.3)


class MlflowServer:
    """`mlflow server` with a sqlite backend and proxied artifacts, restartable on its port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder}/server.db",
                "--serve-artifacts",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "server.log", "a"),
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        wait_for(f"{self.url}/health", self.proc, self.folder / "server.log", "mlflow server")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its workers, no goodbye
        self.proc.wait()


class S3Server:
    """moto's S3 in server mode, with one bucket; ``env`` holds what a client needs."""

    def __init__(self, folder: Path, bucket: str = "i2i"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = folder / "s3.log"
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "a"),
            start_new_session=True,
        )
        wait_for(self.url, self.proc, log, "moto server")
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        request = urllib.request.Request(f"{self.url}/{bucket}", method="PUT")  # create bucket
        urllib.request.urlopen(request, timeout=10)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class AnswerLosingProxy:
    """An HTTP proxy in front of ``upstream`` that can lose answers: after :meth:`lose_answers`,
    the next ``count`` requests whose path contains ``path`` reach the upstream server, which
    carries them out, and then the client's connection is closed with no answer, as when a
    server dies between committing a request and replying."""

    def __init__(self, upstream: str):
        import http.server
        import threading

        proxy = self
        self.upstream, self.path, self.count, self.lost = upstream, "", 0, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=body or None,
                    headers=headers,
                    method=self.command,
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        status, answer, kinds = r.status, r.read(), r.headers.items()
                except urllib.error.HTTPError as e:
                    status, answer, kinds = e.code, e.read(), e.headers.items()
                if proxy.count and proxy.path in self.path:
                    proxy.count -= 1
                    proxy.lost += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(status)
                for k, v in kinds:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None: ...

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lose_answers(self, path: str, count: int) -> None:
        self.path, self.count = path, count

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
