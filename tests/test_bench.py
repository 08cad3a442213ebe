"""`benchmarks/bench.py` runs on a tiny setting and reports what it measured; the fast training
paths (channels-last, torch.compile) give the baseline's losses; paired runs report a speedup
per pair.
Speed itself is not tested: it goes in reports/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # benchmark processes

BIN = Path(sys.executable).parent
MODES = ["fp32", "channels_last", "bf16", "fp16", "compile", "batch4x"]


def bench(out: Path, modes: list[str], *options: str) -> tuple[dict, str, str]:
    """`bench.py --tiny` of ``modes`` on the CPU: its JSON, its markdown table and its stdout."""
    args = [
        sys.executable,
        "benchmarks/bench.py",
        "--tiny",
        "--steps",
        "2",
        "--warmup",
        "2",
        "--device",
        "cpu",
        "--paired",
        "--json",
        str(out / "b.json"),
        "--md",
        str(out / "b.md"),
        *options,
    ]
    for m in modes:
        args += ["--mode", m]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "b.json").read_text()), (out / "b.md").read_text(), proc.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str, str]:
    return bench(tmp_path_factory.mktemp("bench"), MODES, "--profile", "tiny/fp32")


def test_every_mode_runs_or_says_why_not(report):
    data, md, stdout = report
    runs = {r["mode"]: r for r in data["training"]}
    assert list(runs) == MODES
    assert runs["fp16"]["status"] == "skipped" and runs["fp16"]["reason"] == "needs CUDA"
    for mode in set(MODES) - {"fp16"}:
        r = runs[mode]
        assert r["status"] == "ok", (mode, r["reason"])
        x = r["result"]
        assert x["iterations_per_second"] > 0 and x["images_per_second"] == pytest.approx(
            x["iterations_per_second"] * 2 * x["batch_size"]
        )
        assert (
            0 <= x["loader_share"] < 1
            and x["peak_rss_mb"] > 0
            and x["cuda_max_allocated_mb"] is None
        )
        assert x["repeats_images_per_second"] == [x["images_per_second"]]
    assert runs["batch4x"]["result"]["batch_size"] == 4 * runs["fp32"]["result"]["batch_size"]
    # FLOP rates count the model's convolutions as such: compiled code is not counted on its own
    for mode in ("compile",):
        assert (
            runs[mode]["result"]["flops_per_iteration"]
            == runs["fp32"]["result"]["flops_per_iteration"]
            > 0
        )
    assert "tiny" in stdout and "it/s" in stdout and "repeat" not in stdout


def test_repeats_keep_the_fastest_run_and_pool_every_pair(tmp_path):
    data, md, stdout = bench(
        tmp_path, ["fp32", "channels_last"], "--repeats", "2", "--no-evaluation"
    )
    for r in data["training"]:
        x = r["result"]
        assert len(x["repeats_images_per_second"]) == 2 and x["images_per_second"] == max(
            x["repeats_images_per_second"]
        )
    second = data["training"][1]
    assert (
        second["mode"] == "channels_last" and second["paired"]["pairs"] == 2 * 2
    )  # --steps 2 in each of --repeats 2
    assert (
        "(repeat 1/2)" in stdout
        and "(repeat 2/2)" in stdout
        and stdout.count("paired with fp32:") == 2
    )


def test_paired_runs_time_each_mode_beside_the_baseline(report):
    data, md, stdout = report
    runs = {r["mode"]: r for r in data["training"]}
    for mode in ("channels_last", "bf16", "compile"):
        p = runs[mode]["paired"]
        assert p["pairs"] == 2, mode  # --steps 2
        assert (
            p["q25"] <= p["speedup"] <= p["q75"] and p["step_ms"] > 0 and p["baseline_step_ms"] > 0
        )
    # nothing to pair: the baseline itself, a skipped mode, another batch size
    assert (
        runs["fp32"]["paired"] is None
        and runs["fp16"]["paired"] is None
        and runs["batch4x"]["paired"] is None
    )
    assert "paired with fp32:" in stdout and "| paired vs fp32 (quartiles; pairs) |" in md
    assert f"{runs['compile']['paired']['speedup']:.2f}x (" in md


def test_paired_summary_is_the_median_ratio_with_quartiles():
    from benchmarks.harness.training import paired_summary

    s = paired_summary(
        [[2.0, 1.0], [3.0, 1.0], [1.0, 1.0], [4.0, 2.0], [1.0, 2.0]]
    )  # ratios 2, 3, 1, 2, 0.5
    assert (s["speedup"], s["q25"], s["q75"], s["pairs"]) == (2.0, 1.0, 2.0, 5)
    assert (s["baseline_step_ms"], s["step_ms"]) == (2000.0, 1000.0)


def test_fast_fp32_paths_match_the_baselines_losses(report):
    runs = {r["mode"]: r for r in report[0]["training"]}
    for mode in ("channels_last", "compile"):
        assert runs[mode]["step1_rel_diff"] < 1e-5, mode  # the same weights: rounding alone
        assert runs[mode]["loss_rel_diff"] < 1e-4, mode  # the same math in fp32
    assert runs["bf16"]["loss_rel_diff"] < 0.05  # bf16 rounding, same model
    assert runs["batch4x"]["loss_rel_diff"] is None  # other batches: nothing to compare


def test_report_has_device_command_tables_and_profile(report):
    data, md, _ = report
    assert data["environment"]["torch"]
    assert data["command"].startswith("python benchmarks/bench.py --tiny")
    assert "Device:" in md and f"`{data['command']}`" in md
    assert "| setting | mode | it/s |" in md and "| tiny | fp16 | skipped: needs CUDA |" in md
    ev = data["evaluation"]
    assert (
        ev["lpips_pairs_per_second"] > 0
        and ev["inception_images_per_second"] > 0
        and ev["protocol_seconds"] > 0
    )
    assert ev["scores"]["lpips_diversity"] >= 0 and ev["scores"]["cis"] >= 1 - 1e-6
    assert "pairs/s" in md and "aten::" in data["profile"] and "Where the time goes" in md


def test_unknown_setting_is_named():
    from benchmarks.harness.training import bench_params
    from i2i.errors import I2IError

    with pytest.raises(
        I2IError, match="unknown benchmark setting 'huge'; choose from tiny, default"
    ):
        bench_params({}, "huge", "fp32", "cpu")


def test_a_slow_mode_stops_early_after_one_step_of_each(tmp_path):
    """--max-seconds: bf16 on a CPU without bf16 instructions must not hold the benchmark up."""
    import yaml

    from benchmarks.harness.training import MODES, bench_params, prepared_data, run_one
    from i2i.config import params_from_dict

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    params = params_from_dict(bench_params(base, "tiny", "fp32", "cpu"))
    data = prepared_data(params, tmp_path)
    full = run_one(params, MODES["fp32"], data, steps=3, warmup=2)
    assert (full["warmup_steps"], full["timed_steps"], len(full["first_losses"])) == (2, 3, 2)
    cut = run_one(params, MODES["fp32"], data, steps=3, warmup=2, max_seconds=1e-9)
    assert (cut["warmup_steps"], cut["timed_steps"], len(cut["first_losses"])) == (1, 1, 1)
    assert cut["iterations_per_second"] > 0 and cut["first_losses"][0] == full["first_losses"][0]
