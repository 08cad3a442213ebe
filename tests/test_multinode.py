"""Multi-node training with torchrun's c10d rendezvous, on one host as 2 nodes x 1 process
(gloo, 127.0.0.1): the same result as 1 node x 2 processes at the same global batch, and exact
resume after one node dies, by an elastic restart or by launching again. Both "nodes" share the
project folder, as nodes share storage in a cluster (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from i2i.distributed import STALE_STORE_WARNING
from tests.conftest import REPO
from tests.train_helpers import project, run_stage, tiny_train_params

pytestmark = pytest.mark.slow  # torchrun launches

BIN = Path(sys.executable).parent
ITERATIONS = 60
PARAMS = tiny_train_params(
    iterations=ITERATIONS, checkpoint_every=6, log_every=6, sample_every=ITERATIONS
)
# Long enough that a node is killed mid-run (after checkpoint 12), not after its worker ended.
PARAMS["model"]["cyclegan"]["dropout"] = True  # random numbers on both ranks


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(fresh_store: bool = True) -> dict[str, str]:
    """The nodes' environment: docs/scaling.md's recipe sets TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    (a fresh rendezvous store for the workers of every round, see i2i.distributed)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    if fresh_store:
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    else:
        env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)
    return env


def _nodes(
    root: Path, restarts: int = 0, fresh_store: bool = True, second: Path | None = None
) -> list[subprocess.Popen]:
    """Two torchrun agents of one job, as on two machines, each in its own session; node 1 in
    ``second`` when given (storage that is not shared), in ``root`` otherwise."""
    port = _port()
    env = _env(fresh_store)
    launch = [
        str(BIN / "torchrun"),
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        f"i2i-{port}",
        "--max-restarts",
        str(restarts),
        str(REPO / "stages" / "train.py"),
        "--params",
        "params.yaml",
    ]
    # Node 0 is the machine at the rendezvous endpoint: it hosts the store, as in a cluster.
    first = _launch(launch, root, env, root / "node-0.log")
    _wait_for_listener(port, first)
    second = second or root
    return [first, _launch(launch, second, env, second / "node-1.log")]


def _wait_for_listener(port: int, node: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert node.poll() is None and time.monotonic() < deadline, "no rendezvous store"
        time.sleep(0.1)


def _launch(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """A node's agent, its output in ``log`` (a pipe would fill up and stall it)."""
    node = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "a"),
        start_new_session=True,
    )
    node.log = log
    return node


def _wait(nodes: list[subprocess.Popen]) -> list[int]:
    codes = []
    for node in nodes:
        node.wait(timeout=300)
        codes.append(node.returncode)
        node.stderr_text = node.log.read_text()
    return codes


def _wait_for_checkpoint(root: Path, iteration: int, nodes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 180
    while not list((root / "checkpoints").glob(f"*/ckpt-{iteration:08d}.pt")):
        assert all(n.poll() is None for n in nodes), "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def _worker_of(node: subprocess.Popen) -> psutil.Process:
    (worker,) = [
        c for c in psutil.Process(node.pid).children(recursive=True) if "RANK" in c.environ()
    ]
    return worker


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "models" / "generator.pt")["generators"]


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> Path:
    """The reference: one node, two processes, uninterrupted."""
    root = project(tmp_path_factory.mktemp("one-node"), PARAMS)
    launcher = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2"]
    run_stage(root, launcher=launcher)
    return root


def test_two_nodes_give_the_one_node_result(one_node, tmp_path):
    """Launched without the recipe's fresh store and with restarts allowed: rank 0 says so."""
    root = project(tmp_path / "two-nodes", PARAMS)
    nodes = _nodes(root, restarts=1, fresh_store=False)
    assert _wait(nodes) == [0, 0], [n.stderr_text[-2000:] for n in nodes]
    assert sum(STALE_STORE_WARNING in n.stderr_text for n in nodes) == 1
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert summary["world_size"] == 2
    a, b = _weights(one_node), _weights(root)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (root / "reports" / "train" / "losses.csv").read_text() == (
        one_node / "reports" / "train" / "losses.csv"
    ).read_text()


def test_an_elastic_restart_after_a_node_dies_resumes_exactly(one_node, tmp_path):
    root = project(tmp_path / "elastic", PARAMS)
    nodes = _nodes(root, restarts=3)
    _wait_for_checkpoint(root, 12, nodes)
    _worker_of(nodes[1]).kill()  # the worker dies; its agent survives and re-forms the group
    assert _wait(nodes) == [0, 0], [n.stderr_text[-2000:] for n in nodes]
    assert not any(STALE_STORE_WARNING in n.stderr_text for n in nodes)
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert 12 <= summary["resumed_from"] < ITERATIONS
    a, b = _weights(one_node), _weights(root)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_launching_again_after_a_node_is_lost_resumes_exactly(one_node, tmp_path):
    root = project(tmp_path / "relaunch", PARAMS)
    nodes = _nodes(root)
    _wait_for_checkpoint(root, 12, nodes)
    # A whole machine lost (not the endpoint's): its agent and its worker (in its own session).
    for proc in [_worker_of(nodes[1]), psutil.Process(nodes[1].pid)]:
        proc.kill()
    codes = _wait(nodes)
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL  # the survivor stops, it does not hang
    assert not (root / "models" / "generator.pt").exists()
    nodes = _nodes(root)  # the same two commands again
    assert _wait(nodes) == [0, 0], [n.stderr_text[-2000:] for n in nodes]
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert 12 <= summary["resumed_from"] < ITERATIONS
    a, b = _weights(one_node), _weights(root)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nodes_that_see_different_checkpoints_stop_naming_them(tmp_path):
    """Each node in its own folder, one of them with a checkpoint the other lacks: the storage is
    not shared, and training would silently diverge."""
    import shutil

    first = project(tmp_path / "node-a", PARAMS)
    nodes = _nodes(first)
    _wait_for_checkpoint(first, 12, nodes)
    for node in nodes:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
    second = tmp_path / "node-b"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("checkpoints", "node-*.log"))
    nodes = _nodes(first, second=second)
    codes = _wait(nodes)
    assert codes == [1, 1] or all(c != 0 for c in codes)
    err = nodes[0].stderr_text + nodes[1].stderr_text
    assert "the ranks see different (data hash, resume iteration)" in err
    assert "shared storage" in err
