"""What a training run sends to an MLflow tracking server, what logging there costs against a
local file, and how many experiments one server with a SQLite backend carries.

1. Traffic: the default configuration trains against an ``mlflow server`` (SQLite backend,
   artifacts proxied by the server) through a byte-counting HTTP relay; bytes are split into
   metrics (log-batch calls), other tracking calls (run, params, tags) and artifacts.
2. Overhead: the median time of one checkpoint's metrics write (``train.checkpoint_every /
   train.log_every`` rows of every logged key) to the local SQLite file and to the server.
3. Load: N clients each write such a batch as fast as they can for a while; the server's
   throughput and latency at each N give the number of experiments it carries at the default
   cadence (one batch per checkpoint).

    python benchmarks/tracking_load.py --out reports/tracking-load.md
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_server(folder: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder}/server.db",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mlflow server did not start")


class Relay(http.server.ThreadingHTTPServer):
    """Forwards every request to ``target`` and counts the bytes both ways, by kind."""

    def __init__(self, target: str):
        self.target = target.removeprefix("http://")
        self.counts: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", free_port()), RelayHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RelayHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None: ...

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection(self.server.target, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request(self.command, self.path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if "mlflow-artifacts" in self.path:
            kind = "artifacts: model" if "/model/" in self.path else "artifacts: samples, reports"
        elif "log-batch" in self.path and b'"metrics"' in body:
            kind = "metrics"
        else:
            kind = "run, params, tags, lookups"
        size = len(body) + len(data) + sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        with self.server.lock:
            self.server.counts[kind] = self.server.counts.get(kind, 0) + size
            self.server.calls[kind] = self.server.calls.get(kind, 0) + 1

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


def traffic(work: Path, iterations: int) -> dict:
    """Train the default configuration for ``iterations`` through the relay."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["iterations"] = iterations
    server, url = mlflow_server(work, workers=2)
    relay = Relay(url)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    params["tracking"]["uri"] = relay.url
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "I2I_QUIET": "1"}

    def i2i(*args: str) -> None:
        subprocess.run(
            [str(BIN / "i2i"), *args],
            cwd=work,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    i2i("download", "--params", "params.yaml", "--out", "data/raw")
    i2i("preprocess", "--params", "params.yaml", "--raw", "data/raw", "--out", "data/prepared")
    began = time.perf_counter()
    i2i("train", "--params", "params.yaml")
    seconds = time.perf_counter() - began
    relay.shutdown()
    os.killpg(server.pid, 9)
    summary = json.loads((work / "reports" / "train" / "summary.json").read_text())
    t = params["train"]
    return {
        "counts": relay.counts,
        "calls": relay.calls,
        "iterations": iterations,
        "rows": iterations // t["log_every"],
        "train_seconds": summary["seconds"],
        "checkpoints": iterations // t["checkpoint_every"],
        "wall": seconds,
        "keys": len(_keys(work)),
    }


def _keys(work: Path) -> list[str]:
    with open(work / "reports" / "train" / "losses.csv") as f:
        return f.readline().strip().split(",")[1:]


def batch(keys: int, rows: int, step0: int = 0):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(f"loss/k{j}", 0.5, now, step0 + i) for i in range(rows) for j in range(keys)]


def overhead(work: Path, keys: int, rows: int, repeats: int) -> dict[str, float]:
    """Median ms of one checkpoint's metrics write: local SQLite file vs the server."""
    from mlflow.tracking import MlflowClient

    server, url = mlflow_server(work / "overhead", workers=2)
    out = {}
    for name, uri in (("local SQLite file", f"sqlite:///{work}/local.db"), ("server", url)):
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment(f"overhead-{name}")).info.run_id
        times = []
        for r in range(repeats):
            began = time.perf_counter()
            client.log_batch(run, metrics=batch(keys, rows, r * rows))
            times.append(1000 * (time.perf_counter() - began))
        out[name] = statistics.median(times)
    os.killpg(server.pid, 9)
    return out


def load(work: Path, keys: int, rows: int, clients: list[int], seconds: float) -> list[dict]:
    """N clients writing batches back to back: server throughput and latency at each N."""
    from mlflow.tracking import MlflowClient

    (work / "load").mkdir()
    server, url = mlflow_server(work / "load", workers=2)
    exp = MlflowClient(url).create_experiment("load")
    results = []
    for n in clients:
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def client_loop() -> None:
            client = MlflowClient(url)
            run = client.create_run(exp).info.run_id
            step = 0
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    client.log_batch(run, metrics=batch(keys, rows, step))
                except Exception:  # noqa: BLE001 - counted
                    with lock:
                        errors[0] += 1
                    continue
                step += rows
                with lock:
                    latencies.append(time.perf_counter() - began)

        threads = [threading.Thread(target=client_loop) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        latencies.sort()
        results.append(
            {
                "clients": n,
                "batches_per_s": len(latencies) / seconds,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)],
                "errors": errors[0],
            }
        )
    os.killpg(server.pid, 9)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "tracking-load.md")
    args = ap.parse_args()
    from i2i.io import write_bytes

    work = Path(tempfile.mkdtemp(prefix="i2i-tracking-load-"))
    try:
        (work / "traffic").mkdir()
        t = traffic(work / "traffic", args.iterations)
        p = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
        rows = p["checkpoint_every"] // p["log_every"]
        o = overhead(work, t["keys"], rows, repeats=30)
        loads = load(work, t["keys"], rows, args.clients, args.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds_per_checkpoint = t["train_seconds"] / max(1, t["checkpoints"])
    lines = [
        "# MLflow tracking: traffic, overhead, load",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores; MLflow server with a SQLite backend and "
        "proxied artifacts, on the same machine.",
        f"Command: `python benchmarks/tracking_load.py --iterations {args.iterations} "
        f"--seconds {args.seconds:g}`",
        "",
        f"## Traffic of one default training run ({t['iterations']} iterations, {t['rows']} "
        f"logged rows of {t['keys']} keys, {t['checkpoints']} checkpoints)",
        "",
        "| what | calls | bytes per run | bytes per logged row |",
        "|---|---|---|---|",
    ]
    for kind in sorted(t["counts"]):
        b = t["counts"][kind]
        per_row = f"{b / t['rows']:,.0f}" if kind == "metrics" else "-"
        lines.append(f"| {kind} | {t['calls'][kind]} | {b:,} | {per_row} |")
    total = sum(t["counts"].values())
    lines += [f"| total | {sum(t['calls'].values())} | {total:,} | |", ""]
    lines += [
        f"## One checkpoint's metrics write ({rows} rows x {t['keys']} keys), median of 30",
        "",
        "| store | ms | share of a checkpoint period on this machine |",
        "|---|---|---|",
        *[f"| {k} | {v:.1f} | {v / 10 / seconds_per_checkpoint:.2f} % |" for k, v in o.items()],
        "",
        f"## Load: N clients writing such batches back to back for {args.seconds:g} s",
        "",
        "| clients | batches/s | p50 ms | p95 ms | errors |",
        "|---|---|---|---|---|",
        *[
            f"| {r['clients']} | {r['batches_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['errors']} |"
            for r in loads
        ],
        "",
    ]
    best = max(r["batches_per_s"] for r in loads)
    lines.append(
        f"One server carries about throughput x checkpoint period experiments. A default "
        f"experiment writes one batch per checkpoint, every {seconds_per_checkpoint:.0f} s on "
        f"this CPU: at the best measured {best:.0f} batches/s that is "
        f"{best * seconds_per_checkpoint:,.0f} experiments; at one checkpoint a second (a GPU at "
        f"100 it/s) it is {best:,.0f}."
    )
    write_bytes(args.out, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
