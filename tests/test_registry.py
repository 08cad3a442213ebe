"""The trained generators as an MLflow model: logged by the train stage, registered by
`i2i register` under an alias, served by `mlflow models serve` (a real server process on
127.0.0.1) and read back by `i2i translate --model models:/...`."""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from i2i.data.loader import prepare
from i2i.grids import to_uint8
from i2i.models import load_generators
from i2i.serving import RequestRefused
from tests.conftest import save_image, write_params
from tests.train_helpers import project, run_stage, tiny_train_params

pytestmark = pytest.mark.slow  # trainings, a model server

BIN = Path(sys.executable).parent


def _env(root: Path) -> dict[str, str]:
    store = f"sqlite:///{root}/mlflow.db"
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}


def i2i(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "i2i"), *args], cwd=root, capture_output=True, text=True, env=_env(root)
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """Two finished CycleGAN runs and a MUNIT one in one project: {run id: final G loss}."""
    root = project(tmp_path_factory.mktemp("registry"), tiny_train_params("cyclegan"))
    for name, seed in (("cyclegan", 0), ("cyclegan", 1), ("munit", 0)):
        write_params(root / "params.yaml", tiny_train_params(name, seed=seed))
        run_stage(root)
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    found = client.search_runs([client.get_experiment_by_name("i2i").experiment_id])
    return root, {
        r.info.run_id: r.data.metrics["loss/G/total"]
        for r in found
        if r.data.params["model.name"] == "cyclegan"
    }


def test_the_train_stage_logs_a_pyfunc_with_signature_example_and_pinned_requirements(runs):
    root, losses = runs
    run_id = next(iter(losses))
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["image"]
    assert signature.outputs.input_names() == ["image"]
    assert {p.name: p.default for p in signature.params} == {"direction": "ab", "seed": 0}
    example = model.input_example
    assert list(example.columns) == ["image"]
    out = model.predict(example, params={"direction": "ba"})
    image = Image.open(io.BytesIO(base64.b64decode(out["image"][0])))
    assert image.size == Image.open(io.BytesIO(base64.b64decode(example["image"][0]))).size
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/requirements.txt"))
    pins = dict(line.split("==") for line in local.read_text().split() if "==" in line)
    for dist in ("torch", "numpy", "pillow", "pandas", "mlflow"):
        assert pins[dist] == importlib.metadata.version(dist).split("+")[0], dist


def test_register_picks_the_best_run_by_the_metric_and_sets_the_alias(runs):
    root, losses = runs
    best = min(losses, key=losses.get)
    assert len(set(losses.values())) == 2  # the seeds differ: a choice is made
    out = i2i(
        root, "register", "--name", "zebra", "--metric", "loss/G/total", "--tag", "model=cyclegan"
    )
    assert out.returncode == 0, out.stderr
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    version = client.get_model_version_by_alias("zebra", "champion")
    assert version.run_id == best and f"registered as zebra version {version.version}" in out.stdout
    again = i2i(
        root, "register", "--name", "zebra", "--metric", "loss/G/total", "--tag", "model=cyclegan"
    )
    assert f"version {version.version}," in again.stdout  # one version per run
    # higher is better for iterations per second: the choice follows the metric's kind
    fast = i2i(root, "register", "--name", "fast", "--metric", "train/iterations_per_second")
    assert fast.returncode == 0, fast.stderr
    speeds = {
        r.info.run_id: r.data.metrics["train/iterations_per_second"]
        for r in client.search_runs([client.get_experiment_by_name("i2i").experiment_id])
    }
    assert len(set(speeds.values())) == len(speeds)  # a choice is made
    chosen = client.get_model_version_by_alias("fast", "champion").run_id
    assert chosen == max(speeds, key=speeds.get) and "(highest of 3" in fast.stdout


def test_register_names_a_metric_no_run_has(runs):
    root, _ = runs
    out = i2i(root, "register", "--name", "x", "--metric", "metric/fid/ab")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "no run has the metric 'metric/fid/ab'" in out.stderr and "loss/G/total" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: dict | bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# What the served model answers each bad request, under the limits the test's server sets.
_REFUSALS = {
    "rows": "3 images in one request, more than the 2 allowed (I2I_SERVE_MAX_ROWS)",
    "bytes": "21,000 base64 characters in one request, more than the 20,000 allowed "
    "(I2I_SERVE_MAX_BYTES)",
    "pixels": "row 1: 41x40 = 1,640 pixels, more than the 1,600 allowed (I2I_SERVE_MAX_PIXELS)",
    "base64": "row 0: not valid base64",
    "not an image": "row 0: not an image PIL can identify",
    "direction": "direction 'xy': expected one of ab, ba",
    # MLflow's own checks of the request's shape, before the model sees it
    "seed": "Can not safely convert `<class 'str'>` to `DataType.long` for value `abc`",
    "column": "Model is missing inputs ['image']",
    "json": "Invalid input. Ensure that input is a valid JSON formatted string",
}


def _bad_requests(photo: str, tmp_path: Path) -> dict[str, dict]:
    big = save_image(tmp_path / "big.png", np.zeros((40, 41, 3), np.uint8))
    rows = lambda *cells: [{"image": c} for c in cells]  # noqa: E731
    return {
        "rows": {"dataframe_records": rows(photo, photo, photo)},
        "bytes": {"dataframe_records": rows("A" * 21_000)},
        "pixels": {"dataframe_records": rows(photo, base64.b64encode(big.read_bytes()).decode())},
        "base64": {"dataframe_records": rows("not base64!")},
        "not an image": {"dataframe_records": rows(base64.b64encode(b"GIF89 nope").decode())},
        "direction": {"dataframe_records": rows(photo), "params": {"direction": "xy"}},
        "seed": {"dataframe_records": rows(photo), "params": {"seed": "abc"}},
        "column": {"dataframe_records": [{"picture": photo}]},
        "json": b'{"dataframe_records": [{"image": ',
    }


def _serve(root: Path, port: int, limits: dict[str, str]) -> subprocess.Popen:
    """`mlflow models serve` of the champion alias, with the request limits ``limits``."""
    return subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/zebra@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=root,
        env={**_env(root), **limits},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(server: subprocess.Popen, port: int) -> None:
    began = time.monotonic()
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() - began < 180, "the model server did not start"
            time.sleep(0.5)


def test_mlflow_models_serve_answers_with_the_translation_of_translate(runs, tmp_path: Path):
    root, losses = runs
    i2i(root, "register", "--name", "zebra", "--metric", "loss/G/total", "--tag", "model=cyclegan")
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    save_image(tmp_path / "in" / "photo.png", image)

    port = _free_port()
    limits = {
        "I2I_SERVE_MAX_ROWS": "2",
        "I2I_SERVE_MAX_PIXELS": str(40 * 40),
        "I2I_SERVE_MAX_BYTES": "20000",
    }
    server = _serve(root, port, limits)
    photo = base64.b64encode((tmp_path / "in" / "photo.png").read_bytes()).decode()
    try:
        _wait_ready(server, port)
        refused = {name: _post(port, body) for name, body in _bad_requests(photo, tmp_path).items()}
        good = {"dataframe_records": [{"image": photo}], "params": {"direction": "ba"}}
        status, text = _post(port, good)
        assert status == 200, text  # the server still answers a good request afterwards
        answer = json.loads(text)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name, (status, text) in refused.items():
        assert status == 400, (name, status, text)
        assert "\n" not in text.strip() and "Traceback" not in text, (name, text)
        assert _REFUSALS[name] in json.loads(text)["message"], (name, text)
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["predictions"][0]["image"]))))

    # the same alias through i2i translate
    out = i2i(
        root,
        "translate",
        str(tmp_path / "in"),
        "--model",
        "models:/zebra@champion",
        "--direction",
        "ba",
        "--out",
        str(tmp_path / "out"),
    )
    assert out.returncode == 0, out.stderr
    translated = np.asarray(Image.open(tmp_path / "out" / "photo.png"))

    # and worked out here from the best run's own generator file
    best = min(losses, key=losses.get)
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{best}/model/artifacts/generator.pt", dst_path=str(tmp_path)
    )
    nets = load_generators(local)
    x, (h, w) = prepare(Image.fromarray(image), None, nets.size_multiple, nets.min_size)
    with torch.no_grad():
        want = to_uint8(nets.translate(x[None], "ba")[0, :, :, :h, :w])[0]
    assert served.shape == (30, 45, 3)
    assert np.array_equal(served, want) and np.array_equal(translated, want)


def test_munit_serves_one_style_per_seed(runs):
    root, _ = runs
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    [munit] = client.search_runs(
        [client.get_experiment_by_name("i2i").experiment_id], "params.`model.name` = 'munit'"
    )
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{munit.info.run_id}/model")
    example = model.input_example
    a, b, c = (model.predict(example, params={"seed": s})["image"][0] for s in (0, 0, 1))
    assert a == b and a != c
    with pytest.raises(RequestRefused, match="direction 'xy': expected one of ab, ba"):
        model.predict(example, params={"direction": "xy"})


def _record(run_id: str, **metrics: float):
    from i2i.runs import RunRecord

    return RunRecord(run_id, run_id, "FINISHED", 0, {}, metrics, {})


@pytest.mark.parametrize(
    "metric, values, best",
    [
        ("metric/content_iou/ab", [0.91, 0.97, 0.62], "r1"),  # higher is better
        ("metric/inception_score/ab", [1.2, 1.1, 3.4], "r2"),
        ("metric/fid/ab", [55.0, 41.0, 70.0], "r1"),  # lower is better
        ("metric/kid/ba", [0.02, 0.05, 0.01], "r2"),
        ("loss/G/total", [3.0, 2.0, 2.5], "r1"),
    ],
)
def test_best_run_follows_each_metrics_direction(metric, values, best):
    from i2i.compare import best_run

    runs = [_record(f"r{i}", **{metric: v}) for i, v in enumerate(values)]
    assert best_run(runs, metric).run_id == best


def test_pinned_requirements_name_the_distributions_the_full_scan_names():
    """The quick lookup (a distribution named after the module, or declaring it in top_level.txt)
    finds what Python's scan of every installed package's files finds, for each module the
    serving code imports, and pins the installed version without a local label."""
    from i2i import serving

    everywhere = importlib.metadata.packages_distributions()
    for module in ("torch", "numpy", "PIL", "yaml", "pandas", "mlflow", "filelock"):
        found = everywhere[module]
        assert serving._distributions(module) == (
            [d for d in found if d.lower() == module] or found
        ), module
    pins = serving.requirements()
    assert "pillow==" + importlib.metadata.version("pillow").split("+")[0] in pins
    assert "pyyaml==" + importlib.metadata.version("pyyaml") in pins
    assert pins == sorted(pins) and all(p == p.lower() for p in pins)
