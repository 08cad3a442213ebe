"""What a newcomer's first hour costs, measured on a fresh clone, and the README's headline
ablation: writes reports/timings.json and reports/ablation/ (compare.md, .json, .png).

    git clone <this repository> /tmp/fresh
    python3 /tmp/fresh/benchmarks/fresh_clone.py /tmp/fresh

Steps, each timed: `make repro` (install, then every stage), a second `dvc repro` (nothing to
do), the untrained-vs-trained content IoU, then the ablation as the README gives it: CycleGAN
with loss.vgg_w 0 and 1, train.seed 0, 1, 2, on one DVC queue run one experiment at a time, and
`i2i compare` of the six runs against loss.vgg_w=0. The seed-0 loss.vgg_w=0 experiment is the
workspace's own run (DVC restores it from its run cache); its MLflow run is the workspace's.
Afterwards, in the clone: `i2i tables` renders the README's tables from these reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

GRID = ["-S", "loss.vgg_w=0,1", "-S", "train.seed=range(0,3)"]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode:
        tail = proc.stdout[-3000:] + proc.stderr[-3000:]
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return seconds, proc.stdout


def wait_for_queue(clone: Path, env: dict[str, str], dvc: str) -> None:
    while True:
        status = subprocess.run(
            [dvc, "queue", "status"], cwd=clone, env=env, capture_output=True, text=True
        ).stdout
        if not any(word in status for word in ("Queued", "Running")):
            if "Failed" in status:
                sys.exit(f"an experiment failed:\n{status}")
            return
        time.sleep(10)


def main(clone: Path) -> None:
    env = dict(os.environ)
    results: dict[str, object] = {}
    results["make_repro_s"] = round(timed(["make", "repro"], clone, env)[0], 1)
    bin_ = clone / ".venv" / "bin"
    env["PATH"] = f"{bin_}{os.pathsep}{env['PATH']}"
    dvc, python, i2i = str(bin_ / "dvc"), str(bin_ / "python"), str(bin_ / "i2i")
    results["dvc_repro_again_s"] = round(timed([dvc, "repro"], clone, env)[0], 2)
    out = timed(
        [
            python,
            "benchmarks/trained_vs_untrained.py",
            "--params",
            "params.yaml",
            "--model",
            "models/generator.pt",
        ],
        clone,
        env,
    )[1]
    results["content_iou_untrained"] = json.loads(out)["content_iou_untrained"]

    timed([dvc, "exp", "run", "--queue", *GRID], clone, env)
    began = time.perf_counter()
    timed([dvc, "queue", "start", "-j", "1"], clone, env)
    wait_for_queue(clone, env, dvc)
    results["ablation_queue_s"] = round(time.perf_counter() - began, 1)
    commit = timed(["git", "rev-parse", "HEAD"], clone, env)[1].strip()
    folder = clone / "reports" / "ablation"
    folder.mkdir(parents=True, exist_ok=True)
    timed(
        [
            i2i,
            "compare",
            "--tag",
            f"git_commit={commit}",
            "--baseline",
            "loss.vgg_w=0",
            "--out",
            str(folder / "compare.md"),
            "--plot",
            str(folder / "compare.png"),
        ],
        clone,
        env,
    )
    runs = json.loads((folder / "compare.json").read_text())["configurations"]
    results["ablation_runs"] = sum(c["n"] for c in runs)
    summary = json.loads((clone / "reports" / "train" / "summary.json").read_text())
    results["machine"] = summary["machine"]
    results["commit"] = commit
    (clone / "reports" / "timings.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
