"""The classify, sample and evaluate stages run as DVC runs them, after a real tiny training."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from i2i.config import load_params
from i2i.metrics.registry import METRICS
from i2i.model_registry import resolve
from i2i.data.loader import DomainImages, centre_crop, to_model_input
from i2i.grids import to_uint8
from i2i.metrics import shapes
from i2i.models import build_networks, load_generators
from i2i.sample import translate_direction
from i2i.weights import WEIGHTS
from tests.conftest import REPO, FileServer, write_params
from tests.train_helpers import project, run_stage, tiny_train_params

pytestmark = pytest.mark.slow  # the stages as processes, after a real training


def _pipeline(root: Path) -> dict[str, str]:
    out = {}
    for stage in ("train", "classify", "sample", "evaluate"):
        out[stage] = run_stage(root, stage=stage).stdout
    return out


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlflow.db")


@pytest.fixture(scope="module", params=["cyclegan", "munit"])
def evaluated(request, tmp_path_factory) -> tuple[str, Path, dict[str, str]]:
    params = tiny_train_params(request.param)
    params["data"]["shapes"].update(num_train=16, num_test=4)
    # a validation split, and the best-on-validation generators scored beside the final ones
    params["train"].update(validation=4, validation_every=2)
    params["evaluate"]["best_on_validation"] = True
    root = project(tmp_path_factory.mktemp(request.param), params)
    return request.param, root, _pipeline(root)


def test_metrics_json_holds_every_metric_for_both_directions_with_stable_keys(evaluated):
    name, root, out = evaluated
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    # backbones.policy: random. What depends on a random backbone is named apart; what does not
    # (the domain classifier's IS, CIS and modes; content IoU) is calibrated all the same.
    random_backbone = {"lpips_diversity", "fid", "kid"}
    for metric in METRICS:
        for direction in ("ab", "ba"):
            kind, other = "uncalibrated", "metric"
            if metric not in random_backbone:
                kind, other = other, kind
            assert f"{kind}/{metric}/{direction}" in metrics
            assert f"{other}/{metric}/{direction}" not in metrics
    # A -> B has the synthetic modes as classes; A has none, so B -> A skips the classifier metrics.
    for metric in ("inception_score", "cis", "mode_coverage", "content_iou"):
        assert isinstance(metrics[f"metric/{metric}/ab"], float), metric
    for metric in random_backbone:
        assert isinstance(metrics[f"uncalibrated/{metric}/ab"], float), metric
    details = json.loads((root / "reports" / "evaluate.json").read_text())
    for metric in ("inception_score", "cis", "mode_coverage"):
        assert (
            metrics[f"metric/{metric}/ba"] is None
            and "no class labels" in details["skipped"][f"{metric}/ba"]
        )
    assert set(details["uncalibrated"]) == random_backbone
    # the run's own uncertainty: a bootstrap interval over the test inputs beside each score that
    # has one (not FID, whose bias moves with the number of distinct images; not LPIPS)
    intervals = details["intervals"]
    assert intervals["level"] == 0.95 and "200 resamples" in intervals["method"]
    bootstrapped = {k for k in intervals if k.count("/") == 2 and not k.endswith("_best")}
    assert bootstrapped == {
        "metric/content_iou/ab",
        "metric/content_iou/ba",
        "metric/inception_score/ab",
        "metric/cis/ab",
        "metric/mode_coverage/ab",
        "uncalibrated/kid/ab",
        "uncalibrated/kid/ba",
    }
    for key in ("metric/content_iou/ab", "metric/content_iou/ba"):
        low, high = intervals[key]
        assert low <= metrics[key] <= high, key
    assert details["machine"]["torch"] == torch.__version__
    # the best-on-validation model's scores, each under its own name
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert details["best_on_validation"]["iteration"] == summary["validation"]["best_iteration"]
    for key in [k for k in metrics if not k.endswith("_best")]:
        assert f"{key}_best" in metrics, key
    assert {f"{k}_best" for k in bootstrapped} <= set(intervals)
    assert details["backbones"] == {"alexnet": "random", "inception_fid": "random"}
    assert (
        metrics["metric/classifier_accuracy/ab"]
        == json.loads((root / "reports" / "classifiers.json").read_text())["b"]["test_accuracy"]
    )
    if name == "cyclegan":  # deterministic: no diversity, CIS 1, one mode per input
        assert metrics["uncalibrated/lpips_diversity/ab"] == 0.0
        assert metrics["metric/cis/ab"] == pytest.approx(1.0)
        assert metrics["metric/mode_coverage/ab"] == 1.0
    else:
        assert metrics["uncalibrated/lpips_diversity/ab"] > 0
        # The stored CIS, against exp(mean KL(p(y|x2) || p(y|x1))) worked out here in numpy from
        # the same protocol's posteriors.
        from i2i.metrics.context import DirectionContext, MetricNetworks

        cfg = load_params(root / "params.yaml")
        data, cpu = root / "data" / "prepared", torch.device("cpu")
        ctx = DirectionContext(
            load_generators(root / "models" / "generator.pt"),
            "ab",
            DomainImages(data / "test_a"),
            DomainImages(data / "test_b"),
            cfg.data.crop_size,
            cfg.evaluate,
            MetricNetworks(cfg.evaluate, root / "classifiers", cpu),
        )
        ev = cfg.evaluate
        p = ctx.posteriors("domain", ev.cis_inputs, ev.cis_samples).double().numpy()  # [n, m, K]
        kl = (p * (np.log(p + 1e-12) - np.log(p.mean(1, keepdims=True) + 1e-12))).sum(-1)
        assert metrics["metric/cis/ab"] == pytest.approx(float(np.exp(kl.mean())), rel=1e-9)
    assert "uncalibrated/fid/ab" in out["evaluate"]


def test_scores_land_in_the_training_run_with_the_gallery(evaluated):
    name, root, _ = evaluated
    client = _client(root)
    runs = client.search_runs([client.get_experiment_by_name("i2i").experiment_id])
    assert len(runs) == 1  # sample and evaluate log into the training's run, they open none
    run = runs[0]
    assert run.info.run_id == json.loads((root / "models" / "run.json").read_text())["run_id"]
    assert run.info.status == "FINISHED" and run.data.tags["metrics_calibrated"] == "false"
    assert run.data.tags["backbone/inception_fid"] == "random"
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert any(k.startswith("uncalibrated/") for k in metrics)
    for key, value in metrics.items():
        if value is not None:
            assert run.data.metrics[key] == pytest.approx(value), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert {"samples/index.html", "samples/grid_ab.png", "samples/grid_ba.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")} == {
        "evaluate/metrics.json",
        "evaluate/evaluate.json",
    }


def test_sample_writes_the_predictable_layout_and_a_gallery_whose_images_exist(evaluated):
    name, root, out = evaluated
    samples = root / "reports" / "samples"
    html = (samples / "index.html").read_text()
    sources = re.findall(r'src="([^"]+)"', html)
    assert sources and all((samples / s).is_file() for s in sources)
    params = yaml.safe_load((root / "params.yaml").read_text())["sample"]
    for direction in ("ab", "ba"):
        inputs = sorted(p.name for p in (samples / direction).iterdir() if p.name != "examples")
        assert inputs == [f"{i:05d}" for i in range(4)]  # every test image
        files = sorted(p.name for p in (samples / direction / "00000").iterdir())
        if name == "cyclegan":
            assert files == ["input.png", "output.png"]
        else:
            styles = [f"style_{k:02d}.png" for k in range(params["num_styles"])]
            examples = [f"example_{k:02d}.png" for k in range(params["num_examples"])]
            assert files == sorted(["input.png", *styles, *examples])
            assert sorted(p.name for p in (samples / direction / "examples").iterdir()) == examples
    assert "ab: 4 inputs" in out["sample"]


@pytest.mark.parametrize("evaluated", ["munit"], indirect=True)
def test_munit_style_columns_mean_the_same_style_for_every_input(evaluated):
    """Column k is one style code shared by all inputs: re-sampling gives the same images, and
    translating an input alone under code k gives that column's image."""
    _, root, _ = evaluated
    p = resolve(load_params(root / "params.yaml"))
    nets = load_generators(root / "models" / "generator.pt")
    a, b = (
        DomainImages(root / "data" / "prepared" / "test_a"),
        DomainImages(root / "data" / "prepared" / "test_b"),
    )
    _, outputs, columns, _ = translate_direction(nets, a, b, "ab", p, torch.device("cpu"))
    g = torch.Generator().manual_seed(p.sample.seed)
    styles = torch.randn(p.sample.num_styles, p.model.munit.style_dim, 1, 1, generator=g)
    x = to_model_input(torch.from_numpy(centre_crop(a.image(1), 32)[None]), "cpu")
    with torch.no_grad():
        alone = to_uint8(nets.translate(x, "ab", styles[2:3])[:, 0])[0]
    assert np.abs(alone.astype(int) - outputs[1, 2].astype(int)).max() <= 1
    saved = np.asarray(Image.open(root / "reports" / "samples" / "ab" / "00001" / "style_02.png"))
    assert np.array_equal(saved, outputs[1, 2]) and columns[2] == "style_02"


@pytest.mark.parametrize("evaluated", ["cyclegan"], indirect=True)
def test_strict_policy_stops_on_missing_weights_naming_the_file_and_the_fallback(
    evaluated, server: FileServer, tmp_path: Path
):
    # A copy of a trained and classified project, without its scores.
    root = shutil.copytree(evaluated[1], tmp_path / "project")
    (root / "reports" / "metrics.json").unlink()
    params = yaml.safe_load((root / "params.yaml").read_text())
    # A mirror that has none of the files.
    params["backbones"].update(policy="strict", mirror=server.url)
    write_params(root / "params.yaml", params)
    proc = run_stage(root, stage="evaluate", check=False)
    assert proc.returncode == 1
    assert WEIGHTS["alexnet"].filename in proc.stderr and "HTTP 404" in proc.stderr
    assert "i2i weights --params params.yaml" in proc.stderr
    assert "backbones.policy: fallback" in proc.stderr and "Traceback" not in proc.stderr
    assert not (root / "reports" / "metrics.json").exists()


def test_trained_vs_untrained_benchmark_reproduces_the_evaluated_content_iou(evaluated):
    _, root, _ = evaluated
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "trained_vs_untrained.py")],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert result["content_iou_trained"] == round(metrics["metric/content_iou/ab"], 4)
    # The untrained number from the metric's definition. A freshly initialised generator
    # (weights ~ N(0, 0.02)) outputs about mid-grey everywhere, far darker than the white
    # background, so it paints every pixel; the filled foreground is then the whole image, and
    # its IoU with a mask, outside the mask's boundary band, is the mask's share of that area.
    params = load_params(root / "params.yaml")
    torch.manual_seed(params.train.seed)
    untrained = build_networks(params.model, discriminators=False).eval()
    source = DomainImages(root / "data" / "prepared" / "test_a")
    crop, shares = params.data.crop_size, []
    for i in range(len(source)):
        x = to_model_input(
            torch.from_numpy(centre_crop(source.image(i), crop)[None]), torch.device("cpu")
        )
        with torch.no_grad():
            y = to_uint8(untrained.translate(x, "ab")[:, 0])[0]
        assert (y.astype(int) < shapes.BACKGROUND - shapes.FOREGROUND_GAP).any(-1).all()
        mask = centre_crop(source.mask(i)[..., None], crop)[..., 0]
        keep = ~shapes.boundary_band(mask[None])[0]
        shares.append((mask & keep).sum() / keep.sum())
    assert 0.1 < np.mean(shares) < 0.3  # the shapes cover a minority of the image
    assert result["content_iou_untrained"] == round(float(np.mean(shares)), 4)


def test_evaluate_scores_a_reference_generator_file_in_a_run_of_its_own(evaluated, tmp_path):
    """`i2i evaluate --model` with junyanz's lone pretrained generator (A->B only)."""
    from tests.test_reference_models import JunyanzResnetGenerator, randomised

    name, root, _ = evaluated
    if name != "cyclegan":
        pytest.skip("one reference file is enough")
    pipeline_scores = (root / "reports" / "metrics.json").read_bytes()
    torch.save(randomised(JunyanzResnetGenerator(), 0).state_dict(), tmp_path / "latest_net_G.pth")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "i2i"),
            "evaluate",
            "--model",
            str(tmp_path / "latest_net_G.pth"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "reports" / "metrics.json").read_bytes() == pipeline_scores
    metrics = json.loads((root / "reports" / "latest_net_G" / "metrics.json").read_text())
    details = json.loads((root / "reports" / "latest_net_G" / "evaluate.json").read_text())
    assert isinstance(metrics["metric/content_iou/ab"], float)
    # one generator: B -> A keeps its keys (dvc exp show lines runs up by them), all null
    assert metrics["metric/content_iou/ba"] is None
    assert all(v is None for k, v in metrics.items() if k.endswith("/ba"))
    assert details["skipped"]["content_iou/ba"] == "the model has no generator for this direction"
    client = _client(root)
    exp = client.get_experiment_by_name("i2i").experiment_id
    [run] = client.search_runs([exp], "attributes.run_name = 'file:latest_net_G.pth'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_source"] == str(tmp_path / "latest_net_G.pth")
    assert run.data.metrics["metric/content_iou/ab"] == pytest.approx(
        metrics["metric/content_iou/ab"]
    )
