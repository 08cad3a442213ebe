"""The shared services of a team, as real processes on 127.0.0.1: an MLflow tracking server and
an S3-compatible object store (moto in server mode)."""

from __future__ import annotations

import contextlib
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
            # Without MLflow's job runner (a pool of Huey consumers for its own server-side jobs,
            # which i2i does not use): each would import MLflow at every start and poll after.
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
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


class SlurmCluster:
    """A one-node SLURM cluster on 127.0.0.1 (munged, slurmctld, slurmd from Debian's
    ``slurm-wlm`` and ``munge``), all state under ``folder``; ``env`` points the client commands
    (sbatch, squeue, scontrol, scancel) at it. The node has 2 CPUs and 2 GPUs as far as SLURM
    knows (``gres`` backed by /dev/null and /dev/zero), so ``--gres=gpu:1`` is scheduled as on a
    real cluster; there is no CUDA behind them, and the jobs run on the CPU."""

    DAEMONS = ("munged", "slurmctld", "slurmd")

    @staticmethod
    def which(name: str) -> str | None:
        """A daemon's path: Debian puts them in /usr/sbin, which a user's PATH may lack."""
        import shutil

        return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")

    @staticmethod
    def unavailable() -> str | None:
        missing = [d for d in (*SlurmCluster.DAEMONS, "sbatch") if SlurmCluster.which(d) is None]
        if missing:
            return (
                f"no SLURM here ({', '.join(missing)} not found): apt-get install slurm-wlm "
                f"munge (.ci/run does)"
            )
        if os.geteuid() != 0:
            return "slurmd launches jobs as root in this one-node setup; run as root"
        return None

    def __init__(self, folder: Path, cpus: int = 2):
        self.folder = folder
        for sub in ("state", "spool", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o711)
        key = folder / "munge" / "key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = folder / "munge" / "sock"
        conf = folder / "slurm.conf"
        conf.write_text(
            "\n".join(
                [
                    "ClusterName=i2itest",
                    "SlurmctldHost=localhost(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "SlurmUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={sock}",
                    f"StateSaveLocation={folder / 'state'}",
                    f"SlurmdSpoolDir={folder / 'spool'}",
                    f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                    f"SlurmdPidFile={folder / 'slurmd.pid'}",
                    f"SlurmctldLogFile={folder / 'slurmctld.log'}",
                    f"SlurmdLogFile={folder / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "JobRequeue=1",
                    "GresTypes=gpu",
                    "KillWait=5",
                    "MinJobAge=600",
                    "InactiveLimit=0",
                    "SchedulerParameters=sched_interval=2",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    f"NodeName=i2inode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} "
                    "Gres=gpu:2 State=UNKNOWN",
                    "PartitionName=debug Nodes=i2inode Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (folder / "gres.conf").write_text(
            "NodeName=i2inode Name=gpu File=/dev/null\nNodeName=i2inode Name=gpu File=/dev/zero\n"
        )
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        log = open(folder / "daemons.log", "a")
        munged = [
            self.which("munged"),
            "-F",
            "-f",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--log-file={folder / 'munge' / 'log'}",
            f"--pid-file={folder / 'munge' / 'pid'}",
            f"--seed-file={folder / 'munge' / 'seed'}",
        ]
        self.procs = [
            subprocess.Popen(munged, stdout=log, stderr=log, env=self.env, start_new_session=True)
        ]
        self._wait(lambda: sock.exists(), "munged")
        for cmd in (
            [self.which("slurmctld"), "-D", "-i"],
            [self.which("slurmd"), "-D", "-N", "i2inode"],
        ):
            self.procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env, start_new_session=True)
            )
        self._wait(self._idle, "the node")

    def _idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True
        )
        return out.stdout.strip() == "idle"

    def _wait(self, ready, what: str) -> None:
        began = time.monotonic()
        while not ready():
            for p in self.procs:
                assert p.poll() is None, (self.folder / "daemons.log").read_text()[-3000:]
            assert time.monotonic() - began < 60, f"{what} did not come up"
            time.sleep(0.3)

    def run(self, *cmd: str) -> str:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
        return done.stdout

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
