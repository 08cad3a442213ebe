"""`i2i compare` on configurations: runs logged to a real MLflow store, grouped by configuration
id, and the verdicts against a baseline as the command writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from i2i.configuration import RUN_ONLY_KEYS, configuration_id, flatten
from tests.conftest import write_params
from tests.train_helpers import tiny_train_params

BIN = Path(sys.executable).parent


def test_the_configuration_id_ignores_the_seed_and_run_only_keys_only():
    p = flatten(tiny_train_params())
    base = configuration_id(p)
    assert configuration_id(p | {"train.seed": 7}) == base
    for key in RUN_ONLY_KEYS:
        assert key in p, f"{key} is not a params key"
        assert configuration_id(p | {key: "elsewhere"}) == base, key
    for key in ("loss.vgg_w", "train.iterations", "data.seed", "evaluate.cis_samples"):
        assert configuration_id(p | {key: 12345}) != base, key
    # a run's MLflow params are the same values as strings: the same id
    assert configuration_id({k: str(v) for k, v in p.items()}) == base


def _log_runs(root: Path, runs: list[tuple[str, dict, dict[str, float]]]) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("i2i", artifact_location=(root / "art").as_uri())
    for name, params, metrics in runs:
        run = client.create_run(experiment, run_name=name)
        client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        )
        client.set_terminated(run.info.run_id)


@pytest.fixture
def three_settings(tmp_path: Path) -> Path:
    """vgg_w 0 (3 seeds, one of them on another device), vgg_w 1 (3 seeds), vgg_w 2 (1 run)."""
    (tmp_path / ".git").mkdir()
    params = tiny_train_params()
    write_params(tmp_path / "params.yaml", params)
    flat = flatten(params)
    iou = {0: [0.90, 0.91, 0.92], 1: [0.95, 0.96, 0.97], 2: [0.99]}
    fid = {0: [50.0, 52.0, 54.0], 1: [40.0, 41.0, 42.0], 2: [30.0]}
    kid = {0: [0.010, 0.020, 0.030], 1: [0.012, 0.022, 0.028], 2: [0.01]}
    runs = []
    for w in (0, 1, 2):
        for seed in range(len(iou[w])):
            p = flat | {"loss.vgg_w": float(w), "train.seed": seed}
            if seed == 2:
                p |= {"train.device": "cuda", "evaluate.batch_size": 7}  # run-only: same config
            scores = {
                "metric/content_iou/ab": iou[w][seed],
                "metric/fid/ab": fid[w][seed],
                "metric/kid/ab": kid[w][seed],
            }
            runs.append((f"w{w}-s{seed}", p, scores))
    _log_runs(tmp_path, runs)
    return tmp_path


def _rows(md: str, first_column: str) -> list[list[str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_compare_groups_seeds_and_gives_verdicts_against_a_baseline(three_settings: Path):
    proc = subprocess.run(
        [
            str(BIN / "i2i"),
            "compare",
            "--baseline",
            "loss.vgg_w=0",
            "--sort",
            "metric/content_iou/ab",
        ],
        cwd=three_settings,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    md = (three_settings / "reports" / "compare.md").read_text()
    assert proc.stdout.startswith(md[:200])  # the console shows the same tables
    assert md.startswith("# Comparison of 3 configurations (7 runs)")

    # one row per configuration, best content IoU first; n = 1 is stated, not an interval
    configs = _rows(md, "config")
    assert [(r[1], r[2]) for r in configs] == [
        ("loss.vgg_w=2.0", "1"),
        ("loss.vgg_w=1.0", "3"),
        ("loss.vgg_w=0.0", "3"),
    ]
    header = next(line for line in md.splitlines() if line.startswith("| config |"))
    iou = [c.strip() for c in header.strip("|").split("|")].index("metric/content_iou/ab")
    assert configs[0][iou] == "0.99 (n = 1)"
    # 0.96 +- t(0.975, 2) * 0.01 / sqrt(3) = 4.303 * 0.005774 = 0.02484
    assert configs[1][iou] == "0.96 ± 0.025"

    verdicts = {(r[0], r[1]): r[4] for r in _rows(md, "setting")}
    assert verdicts[("loss.vgg_w=1.0", "metric/content_iou/ab")] == "better"
    assert verdicts[("loss.vgg_w=1.0", "metric/fid/ab")] == "better"  # lower FID
    assert verdicts[("loss.vgg_w=1.0", "metric/kid/ab")] == (
        "no difference detectable with n = 3 vs 3"
    )
    assert verdicts[("loss.vgg_w=2.0", "metric/fid/ab")] == "n = 1 vs 3: no interval, no verdict"
    assert "## Against the baseline" in md and "loss.vgg_w=0.0, n = 3" in md
    assert (three_settings / "reports" / "compare.png").stat().st_size > 10_000
    # compare.json: the same tables for programs (the README's generated table reads it)
    data = json.loads((three_settings / "reports" / "compare.json").read_text())
    vgg1 = data["configurations"][1]["scores"]["metric/content_iou/ab"]
    assert vgg1["n"] == 3 and vgg1["mean"] == pytest.approx(0.96)
    assert (vgg1["low"], vgg1["high"]) == pytest.approx((0.96 - 0.02484, 0.96 + 0.02484), abs=1e-5)
    assert data["configurations"][0]["scores"]["metric/content_iou/ab"]["low"] is None  # n = 1
    assert {(d["setting"], d["score"]): d["verdict"] for d in data["differences"]} == {
        (s, k): v for (s, k), v in verdicts.items()
    }


def test_a_baseline_that_names_nothing_or_several_configurations_is_refused(three_settings):
    for spec, what in (
        ("loss.vgg_w=5", "matches no run"),
        ("train.lr=0.0002", "matches 3 configurations"),
    ):
        proc = subprocess.run(
            [str(BIN / "i2i"), "compare", "--baseline", spec],
            cwd=three_settings,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and what in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "loss.vgg_w=1.0" in proc.stderr
    # an experiment (run) name picks that run's configuration
    proc = subprocess.run(
        [str(BIN / "i2i"), "compare", "--baseline", "w1-s0"],
        cwd=three_settings,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "(loss.vgg_w=1.0, n = 3)" in proc.stdout


def test_a_seed_counts_once_and_model_sections_are_compared_within_their_model():
    """A second run of one configuration at one seed (a re-run) replaces the first: n counts
    seeds. Between models, ``model.name`` says what differs, not every key of their sections."""
    from i2i.compare import comparison, configurations
    from i2i.runs import RunRecord

    def run(t: int, model: str, section: dict, seed: int, iou: float) -> RunRecord:
        params = {"model.name": model, "train.seed": str(seed), "loss.vgg_w": "0.0"}
        params |= {f"model.{model}.{k}": str(v) for k, v in section.items()}
        return RunRecord(f"r{t}", f"id{t}", "FINISHED", t, params, {"iou": iou}, {})

    runs = [
        run(1, "cyclegan", {"ngf": 16, "n_blocks": 6}, 0, 0.90),
        run(2, "cyclegan", {"ngf": 16, "n_blocks": 6}, 1, 0.80),
        run(3, "cut", {"ngf": 16, "n_blocks": 6}, 0, 0.70),
        run(4, "cut", {"ngf": 32, "n_blocks": 6}, 0, 0.60),
        run(5, "cyclegan", {"ngf": 16, "n_blocks": 6}, 0, 0.95),  # seed 0 again
        run(6, "cut", {"ngf": 16, "n_blocks": 6}, 1, 0.65),
    ]
    configs = configurations(runs)
    assert [c.label for c in configs] == [
        "model.name=cyclegan",
        "model.cut.ngf=16, model.name=cut",
        "model.cut.ngf=32, model.name=cut",
    ]
    assert [len(c.runs) for c in configs] == [2, 2, 1]
    assert [c.repeated for c in configs] == [1, 0, 0]
    assert sorted(configs[0].values("iou")) == [0.80, 0.95]  # the latest seed-0 run counts
    columns = list(comparison(runs).columns)
    assert "model.cut.ngf" in columns and "model.name" in columns and "train.seed" in columns
    assert "model.cyclegan.ngf" not in columns and "model.cut.n_blocks" not in columns
