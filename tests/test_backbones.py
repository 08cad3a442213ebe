"""Pretrained backbones under each backbones.policy, online (stand-in weight files served over
real HTTP on 127.0.0.1) and offline, in process and through real `dvc repro`: what is fetched,
what is recorded, how random-backbone scores are named, and which stages re-run when the files
appear."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from i2i import weights
from i2i.cache import weights_dir
from i2i.config import params_from_dict
from i2i.data.fetch import DownloadError
from i2i.evaluate import prefix
from tests.conftest import REPO, FileServer, tiny_params, write_params
from tests.train_helpers import prepare, tiny_train_params

BIN = Path(sys.executable).parent


def _standin_states() -> dict[str, dict[str, torch.Tensor]]:
    """Small state dicts in the layout of torchvision's files, with random values: only the
    parts i2i loads (a backbone's `features`, Inception without its auxiliary classifier), fp16."""
    from torchvision.models import alexnet, vgg16

    from i2i.metrics.inception import InceptionV3

    def inception(kind: str) -> dict[str, torch.Tensor]:
        net = InceptionV3(pretrained=False, kind=kind)  # batch norms calibrated: finite features
        return {k.removeprefix("trunk."): v.half() for k, v in net.state_dict().items()}

    torch.manual_seed(0)
    return {
        "alexnet": {f"features.{k}": v.half() for k, v in alexnet().features.state_dict().items()},
        "vgg16": {f"features.{k}": v.half() for k, v in vgg16().features.state_dict().items()},
        "inception_v3": inception("torchvision"),
        "inception_fid": inception("fid"),
    }


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """{name: (file under its torchvision name, the first 8 hex digits of its SHA-256)}."""
    folder = tmp_path_factory.mktemp("standins")
    found = {}
    for name, state in _standin_states().items():
        path = folder / weights.WEIGHTS[name].filename
        torch.save(state, path)
        found[name] = (path, hashlib.sha256(path.read_bytes()).hexdigest()[:8])
    return found


def use_standins(monkeypatch: pytest.MonkeyPatch, standins: dict[str, tuple[Path, str]]) -> None:
    for name, (path, prefix8) in standins.items():
        monkeypatch.setitem(weights.WEIGHTS, name, weights.WeightFile(name, path.name, prefix8))


def serve(server: FileServer, standins: dict[str, tuple[Path, str]], *names: str) -> None:
    for name in names:
        shutil.copy(standins[name][0], server.root / standins[name][0].name)


def backbones_cfg(policy: str, mirror: str):
    p = tiny_params()
    p["backbones"].update(policy=policy, mirror=mirror, timeout=5)
    return params_from_dict(p).backbones


@pytest.fixture
def closing_server():
    """A host that accepts connections and closes them at once, counting them: unreachable."""
    sock = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve_forever():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/", accepted
    sock.close()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"TORCH_HOME": "/x/th"},
        {"XDG_CACHE_HOME": "/x/xdg"},
        {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/x/xdg"},
    ],
)
def test_weights_dir_is_where_torch_hub_looks(env: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import torch.hub

    assert weights_dir() == Path(torch.hub.get_dir()) / "checkpoints"


def test_fallback_offline_records_random_and_warns_once_naming_files_and_fix(
    closing_server, capsys
):
    mirror, accepted = closing_server
    record = weights.resolve(
        ["alexnet", "inception_v3"],
        backbones_cfg("fallback", mirror),
        "i2i weights --params p.yaml",
    )
    assert record == {"alexnet": "random", "inception_v3": "random"}
    # The host is tried once, not once per file: a dead network costs one timeout.
    assert len(accepted) == 1
    err = capsys.readouterr().err
    assert err.count("WARNING: pretrained weights not available: alexnet, inception_v3") == 1
    assert f"cannot reach {mirror}{weights.WEIGHTS['alexnet'].filename}" in err
    assert "Fix: i2i weights --params p.yaml" in err and "uncalibrated/" in err


def test_an_unreachable_host_skips_only_its_own_files_and_each_file_names_its_own_url(
    closing_server, capsys, monkeypatch
):
    import dataclasses

    dead = "http://127.0.0.1:9/"  # nothing listens: refused at once
    served, accepted = closing_server
    for name, host in (("inception_fid", dead), ("alexnet", served), ("inception_v3", served)):
        monkeypatch.setitem(
            weights.WEIGHTS, name, dataclasses.replace(weights.WEIGHTS[name], host=host)
        )
    names = ["inception_fid", "alexnet", "inception_v3"]
    record = weights.resolve(names, backbones_cfg("fallback", ""), "i2i weights")
    assert set(record.values()) == {"random"}
    assert len(accepted) == 1  # the second host was tried, once, though the first was dead
    err = capsys.readouterr().err
    for name in names:
        line = next(x for x in err.splitlines() if x.strip().startswith(f"{name}:"))
        assert weights.WEIGHTS[name].url() in line, line


def test_strict_policy_fails_with_the_file_the_fix_and_the_fallback(closing_server):
    mirror, _ = closing_server
    with pytest.raises(weights.MissingWeightsError) as e:
        weights.resolve(
            ["inception_v3"], backbones_cfg("strict", mirror), "i2i weights --params p.yaml"
        )
    msg = str(e.value)
    assert weights.WEIGHTS["inception_v3"].filename in msg and "i2i weights --params p.yaml" in msg
    assert "backbones.policy: fallback" in msg and "backbones.mirror" in msg


def test_random_policy_never_asks_the_network(server: FileServer, capsys):
    record = weights.resolve(["vgg16", "alexnet"], backbones_cfg("random", server.url))
    assert record == {"vgg16": "random", "alexnet": "random"} and server.log == []
    assert capsys.readouterr().err == ""  # asked for: nothing to warn about


def test_fetched_weights_are_recorded_by_sha256_and_the_digest_is_kept(
    server, standins, monkeypatch, capsys
):
    use_standins(monkeypatch, standins)
    serve(server, standins, "alexnet")
    record = weights.resolve(["alexnet"], backbones_cfg("fallback", server.url))
    path, _ = standins["alexnet"]
    assert record == {"alexnet": hashlib.sha256(path.read_bytes()).hexdigest()}
    cached = weights_dir() / path.name
    assert cached.read_bytes() == path.read_bytes() and capsys.readouterr().err == ""
    sidecar = json.loads(cached.with_name(cached.name + ".sha256.json").read_text())
    assert sidecar["sha256"] == record["alexnet"] and sidecar["size"] == cached.stat().st_size
    # Cached: no request, and the digest is read from the sidecar, not recomputed.
    requests = len(server.log)
    cached.with_name(cached.name + ".sha256.json").write_text(
        json.dumps({**sidecar, "sha256": "kept"})
    )
    assert weights.resolve(["alexnet"], backbones_cfg("strict", server.url)) == {"alexnet": "kept"}
    assert len(server.log) == requests


def test_other_bytes_under_a_pinned_name_are_never_loaded(standins, monkeypatch):
    """torchvision publishes 8 hex digits of each digest; 2^32 tries forge such a prefix. The
    full digest pinned at first use is what stops a swapped file (here: any prefix passes)."""
    for name, (path, _) in standins.items():
        monkeypatch.setitem(weights.WEIGHTS, name, weights.WeightFile(name, path.name, ""))
    cached = weights_dir() / standins["vgg16"][0].name
    cached.parent.mkdir(parents=True)
    shutil.copy(standins["vgg16"][0], cached)
    first = weights.digest("vgg16")
    assert weights.load("vgg16", "features.")  # loads, and the digest is pinned
    torch.save({"features.0.weight": torch.zeros(1)}, cached)  # a shared cache overwritten
    with pytest.raises(DownloadError) as e:
        weights.load("vgg16", "features.")
    assert first in str(e.value) and str(cached) in str(e.value)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() in str(e.value)


def test_a_cached_file_that_is_not_what_its_name_says_is_never_used(
    server, standins, monkeypatch, capsys
):
    use_standins(monkeypatch, standins)
    cached = weights_dir() / standins["alexnet"][0].name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a truncated copy")
    record = weights.resolve(["alexnet"], backbones_cfg("fallback", server.url))
    assert record == {"alexnet": "random"} and str(cached) in capsys.readouterr().err
    with pytest.raises(weights.MissingWeightsError, match=re.escape(str(cached))):
        weights.resolve(["alexnet"], backbones_cfg("strict", server.url))


def test_lpips_loads_the_backbone_torchvision_and_lpips_would_load(tmp_path, monkeypatch):
    """SqueezeNet's nested Fire modules are the hardest case of the slice-to-features mapping."""
    import lpips
    from torchvision.models import squeezenet1_1

    from i2i.metrics.lpips_distance import LpipsDistance

    torch.manual_seed(3)
    w = weights.WEIGHTS["squeezenet1_1"]
    path = weights_dir() / w.filename
    path.parent.mkdir(parents=True)
    torch.save(squeezenet1_1().state_dict(), path)
    digits = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(weights.WEIGHTS, w.name, weights.WeightFile(w.name, w.filename, digits))
    reference = lpips.LPIPS(
        net="squeeze", pnet_rand=False, verbose=False
    ).eval()  # torchvision reads the cache
    ours = LpipsDistance("squeeze", pretrained=True)
    x, y = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(ours(x, y), reference(x, y).flatten())
    torch.manual_seed(4)
    assert not torch.equal(LpipsDistance("squeeze", pretrained=False)(x, y), ours(x, y))


def test_vgg_and_inception_load_only_what_they_run_from_a_file(standins, monkeypatch):
    from torchvision.models import vgg16

    from i2i.metrics.inception import InceptionV3
    from i2i.models.perceptual import PerceptualLoss

    use_standins(monkeypatch, standins)
    weights_dir().mkdir(parents=True)
    for name in ("vgg16", "inception_v3"):
        shutil.copy(standins[name][0], weights_dir() / standins[name][0].name)
    state = torch.load(standins["vgg16"][0], weights_only=True)
    loss = PerceptualLoss(pretrained=True)
    for k, v in loss.features.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"].float()), k
    assert len(loss.features.state_dict()) == len([k for k in state if int(k.split(".")[1]) < 30])
    assert len(vgg16().state_dict()) > len(state)  # the classifier's weights were never needed
    inception = InceptionV3(pretrained=True)
    expected = torch.load(standins["inception_v3"][0], weights_only=True)
    assert torch.equal(inception.fc.weight, expected["fc.weight"].float())
    features, _ = inception(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert torch.isfinite(features).all()


def test_a_score_is_named_uncalibrated_when_a_backbone_it_depends_on_was_random():
    p = params_from_dict(tiny_train_params())
    real = {"alexnet": "ab" * 32, "inception_fid": "cd" * 32}
    assert [prefix(m, p, real) for m in ("fid", "kid", "lpips_diversity", "cis")] == ["metric"] * 4
    half = {**real, "inception_fid": "random"}
    assert [prefix(m, p, half) for m in ("fid", "kid", "lpips_diversity")] == [
        "uncalibrated",
        "uncalibrated",
        "metric",
    ]
    # The domain classifier, content IoU and mode coverage need no ImageNet backbone.
    none = {"alexnet": "random", "inception_fid": "random"}
    assert [
        prefix(m, p, none) for m in ("inception_score", "cis", "content_iou", "mode_coverage")
    ] == ["metric"] * 4
    p = params_from_dict(
        {
            **tiny_train_params(),
            "evaluate": {**tiny_train_params()["evaluate"], "classifier": "inception"},
        }
    )
    assert (
        prefix("inception_score", p, none) == "uncalibrated"
        and prefix("inception_score", p, real) == "metric"
    )


def test_backbones_stage_never_imports_torch(tmp_path):
    """It runs on every `dvc repro`: importing torch alone would take it past a second."""
    write_params(tmp_path / "params.yaml", tiny_train_params())
    script = str(REPO / "stages" / "backbones.py")
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, '--params', 'params.yaml', '--out', 'b']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr
    assert json.loads((tmp_path / "b" / "evaluate.json").read_text()) == {
        "alexnet": "random",
        "inception_fid": "random",
    }


@pytest.mark.slow
def test_real_features_of_the_stage_give_the_same_scores_and_stale_ones_are_ignored(tmp_path):
    from i2i.data.loader import DomainImages
    from i2i.metrics.context import MetricNetworks
    from i2i.metrics.real_stage import real_features

    params = params_from_dict(tiny_train_params())
    data = prepare(tmp_path, tiny_train_params())
    cpu = torch.device("cpu")
    info = real_features(data, tmp_path / "real", 32, params.evaluate, {}, cpu)
    assert info["images"] == {"test_a": 2, "test_b": 2}
    part = DomainImages(data / "test_b")
    fresh = MetricNetworks(params.evaluate, tmp_path, cpu).real_inception(part, 32)
    stored = MetricNetworks(params.evaluate, tmp_path, cpu, real_features=tmp_path / "real")
    stored.__dict__["inception"] = None  # read from the stage's file: the network is never built
    features, probs = stored.real_inception(part, 32)
    assert np.array_equal(features, fresh[0]) and torch.equal(probs, fresh[1])
    assert stored.real_from == {"test_b": "real_features stage"}
    # Made for another crop, or another Inception: computed afresh, never used.
    other = MetricNetworks(params.evaluate, tmp_path, cpu, real_features=tmp_path / "real")
    assert not np.array_equal(other.real_inception(part, 24)[0][:, :4], fresh[0][:, :4])
    assert other.real_from == {"test_b": "computed"}
    calibrated = MetricNetworks(
        params.evaluate,
        tmp_path,
        cpu,
        {"inception_fid": "ab" * 32},
        real_features=tmp_path / "real",
    )
    calibrated.__dict__["inception"] = lambda x: (
        torch.zeros(len(x), 2048),
        torch.zeros(len(x), 1008),
    )
    assert not calibrated.real_inception(part, 32)[0].any()
    assert calibrated.real_from == {"test_b": "computed"}


def _ran(log: str) -> list[str]:
    """The stages a `dvc repro` ran, besides the params and code checks that run every time."""
    ran = re.findall(r"Running stage '(\w+)'", log)
    assert ran[:2] == ["params", "code"]
    return ran[2:]


def scratch_repo(root: Path, standins: dict[str, tuple[Path, str]], params: dict) -> Path:
    """A git repository holding this project's code and pipeline, whose weights table expects
    the stand-ins' checksums instead of torchvision's (the stage processes run this copy)."""
    root.mkdir()
    for name in ("i2i", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    table = (root / "i2i" / "weights.py").read_text()
    for name, (_, prefix8) in standins.items():
        table = table.replace(f'"{weights.WEIGHTS[name].sha256_prefix}"', f'"{prefix8}"')
    (root / "i2i" / "weights.py").write_text(table)
    write_params(root / "params.yaml", params)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def _run(root: Path, cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_stages_fetch_what_they_need_and_repro_reruns_exactly_what_the_weights_change(
    server: FileServer, standins, tmp_path: Path
):
    """Offline first (the mirror has no files), then the files appear on it: `dvc repro` re-runs
    the stages whose results change, and nothing else. With loss.vgg_w = 0 train does not use
    VGG16, so it does not re-run; with vgg_w > 0 it does."""
    params = tiny_train_params()
    params["backbones"].update(policy="fallback", mirror=server.url)
    root = scratch_repo(tmp_path / "repo", standins, params)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TORCH_HOME": str(tmp_path / "th"),
    }
    dvc = str(BIN / "dvc")
    _run(root, [dvc, "init", "-q"], env)

    out = _run(root, [dvc, "repro"], env)
    assert "WARNING: pretrained weights not available: alexnet, inception_fid" in out
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert "uncalibrated/fid/ab" in metrics and "metric/fid/ab" not in metrics

    serve(server, standins, "alexnet", "inception_fid")  # the files appear
    out = _run(root, [dvc, "repro"], env)
    assert _ran(out) == ["backbones", "real_features", "evaluate"]
    assert "WARNING" not in out
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert isinstance(metrics["metric/fid/ab"], float) and isinstance(
        metrics["metric/lpips_diversity/ab"], float
    )
    assert not any(k.startswith("uncalibrated/") for k in metrics)
    sha = {n: hashlib.sha256(standins[n][0].read_bytes()).hexdigest() for n in standins}
    assert json.loads((root / "reports" / "evaluate.json").read_text())["backbones"] == {
        "alexnet": sha["alexnet"],
        "inception_fid": sha["inception_fid"],
    }
    assert _ran(_run(root, [dvc, "repro"], env)) == ["backbones"]  # nothing changed: only the check

    params["loss"]["vgg_w"] = 1.0  # VGG16 is not on the mirror yet: a random one, and train says so
    write_params(root / "params.yaml", params)
    out = _run(root, [dvc, "repro"], env)
    assert _ran(out) == ["backbones", "train", "sample", "evaluate"]
    assert "WARNING: pretrained weights not available: vgg16" in out
    assert json.loads((root / "reports" / "train" / "summary.json").read_text())["backbones"] == {
        "vgg16": "random"
    }
    serve(server, standins, "vgg16")
    out = _run(root, [dvc, "repro"], env)
    assert _ran(out) == [
        "backbones",
        "train",
        "sample",
        "evaluate",
    ]  # not real_features: same Inception
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert summary["backbones"] == {"vgg16": sha["vgg16"]}
    # Trained afresh: the random-VGG run's checkpoints belong to another configuration.
    assert summary["resumed_from"] == 0


@pytest.mark.slow
def test_train_and_evaluate_fetch_their_backbones_themselves(
    server: FileServer, standins, tmp_path: Path
):
    """Run by hand, without the backbones stage: each stage gets what it loads, nothing more."""
    serve(server, standins, *standins)
    params = tiny_train_params()
    params["loss"]["vgg_w"] = 1.0
    params["backbones"].update(policy="strict", mirror=server.url)
    root = scratch_repo(tmp_path / "repo", standins, params)
    prepare(root, params)
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "th")}

    def stage(name: str) -> str:
        return _run(root, [sys.executable, f"stages/{name}.py", "--params", "params.yaml"], env)

    stage("train")
    assert [r["path"] for r in server.log] == ["/" + standins["vgg16"][0].name]
    stage("classify")
    stage("evaluate")
    assert sorted(r["path"] for r in server.log[1:]) == sorted(
        "/" + standins[n][0].name for n in ("alexnet", "inception_fid")
    )
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert isinstance(metrics["metric/fid/ab"], float) and not any(
        k.startswith("uncalibrated/") for k in metrics
    )
