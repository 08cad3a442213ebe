"""The baseline's `dvc repro`, then ablations as DVC experiments: a queue run by two workers (in
copies under .dvc/tmp/exps, as `dvc exp run --temp`), every result in `dvc exp show` and in the
root MLflow store once, a diverging one marked failed, and `i2i compare` on the results."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import REPO, write_params
from tests.train_helpers import tiny_train_params

pytestmark = pytest.mark.slow  # DVC experiments and MLflow

BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
# Ablations of the README's recipes, on the tiny config.
QUEUE = {
    "munit": ["-S", "model.name=munit"],
    "diverges": ["-S", "train.lr=1e30"],
}
# And one run in the workspace, as `dvc exp run -S ...` without --queue: two ablations at once.
WORKSPACE = {"no-identity": ["-S", "loss.identity_w=0", "-S", "loss.vgg_w=1"]}
STAGES = (
    "params",
    "code",
    "backbones",
    "download",
    "preprocess",
    "train",
    "classify",
    "real_features",
    "sample",
    "evaluate",
)
# A library file -> the stages that run it (their code record, reports/code/<stage>.json, holds it).
CHANGED = {"i2i/data/preprocess.py": ["preprocess"], "i2i/sample.py": ["sample"]}
# The weights host as seen from a machine without network: nothing listens on this port.
OFFLINE_MIRROR = "http://127.0.0.1:9/"
# Seconds a queue worker gets to exit by itself once the queue is done (it checks every 10 s).
WORKER_GRACE = 60
# On PYTHONPATH for the baseline's `dvc repro`: each stage process, as it exits, writes the i2i
# modules it imported to $I2I_TEST_IMPORTS/<stage>.json (Python imports sitecustomize at start).
RECORD_IMPORTS = """
import atexit, json, os, sys
from pathlib import Path

def _dump():
    script = Path(sys.argv[0])
    if script.parent.name == "stages":
        files = sorted(m.__file__ for n, m in list(sys.modules.items())
                       if n.startswith("i2i") and getattr(m, "__file__", None))
        Path(os.environ["I2I_TEST_IMPORTS"], script.stem + ".json").write_text(json.dumps(files))

atexit.register(_dump)
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        **(extra or {}),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(env), capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def run_queue(root: Path, jobs: int) -> None:
    """`dvc exp run --run-all -j N`: it starts N detached queue workers and returns once every
    queued experiment has ended. Its output goes to a file, not a pipe: the workers' launchers
    inherit it, and reading a pipe to its end would wait for them too. A worker exits once the
    queue has been empty for about 10 s, but with two workers DVC's file-system broker can lose
    one's shutdown message, and that worker then waits forever (dvc#8165, dvc-task#77). The
    queue's work is done by then: a worker still there after WORKER_GRACE s is stopped."""
    with (root.parent / "run-all.log").open("w") as out:
        subprocess.run(
            [str(BIN / "dvc"), "exp", "run", "--run-all", "-j", str(jobs)],
            cwd=root,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    celery = root / ".dvc" / "tmp" / "exps" / "celery"
    deadline = time.monotonic() + WORKER_GRACE
    while (left := _live_workers(celery)) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(pid)  # its launcher's: DVC starts each in a group of its own
            if group == os.getpgid(0):
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
    (root.parent / "workers-stopped.txt").write_text(" ".join(map(str, left)))


def _live_workers(celery: Path) -> list[int]:
    """The queue workers whose launcher has not recorded an exit code yet and that still run."""
    pids = []
    for record in celery.glob("dvc-exp-worker-*.json"):
        info = json.loads(record.read_text())
        if info.get("returncode") is None:
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                continue
            pids.append(info["pid"])
    return pids


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Path:
    """A committed project whose baseline ran, then QUEUE queued and run with -j 2, then WORKSPACE,
    all offline under the default backbones.policy (fallback), with an empty weights cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        yield _experiments(tmp_path_factory.mktemp("experiments") / "repo")


def _experiments(root: Path) -> Path:
    root.mkdir()
    for name in ("i2i", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = tiny_train_params()
    params["backbones"].update(policy="fallback", mirror=OFFLINE_MIRROR)
    write_params(root / "params.yaml", params)
    (root / ".gitignore").write_text(
        "mlflow.db\nmlartifacts/\n.mlflow.lock\ncheckpoints/\n__pycache__/\n"
    )
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    # The project's DVC config: analytics off, the offline plot page.
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / "plots", root / "plots")
    recorder = root.parent / "recorder"
    recorder.mkdir()
    (recorder / "sitecustomize.py").write_text(RECORD_IMPORTS)
    (root.parent / "imports").mkdir()
    record = {"PYTHONPATH": str(recorder), "I2I_TEST_IMPORTS": str(root.parent / "imports")}
    repro = run([str(BIN / "dvc"), "repro"], root, env=record)
    again = run([str(BIN / "dvc"), "repro"], root)
    (root.parent / "repro.log").write_text(repro.stdout + repro.stderr)
    (root.parent / "repro-again.log").write_text(again.stdout + again.stderr)
    for module in CHANGED:  # a comment is a code change to DVC: the stages that run it re-run
        with (root / module).open("a") as f:
            f.write("# changed\n")
        changed = run([str(BIN / "dvc"), "repro"], root)
        (root.parent / f"repro-{module}.log".replace("/", "-")).write_text(
            changed.stdout + changed.stderr
        )
    run(GIT + ["add", "-A"], root)
    run(GIT + ["commit", "-qm", "baseline"], root)
    for name, overrides in QUEUE.items():
        run([str(BIN / "dvc"), "exp", "run", "--queue", "-n", name, *overrides], root)
    # --run-all starts the queue's workers and waits for the experiments (dvc queue start -j 2
    # returns at once).
    run_queue(root, 2)
    for name, overrides in WORKSPACE.items():
        run([str(BIN / "dvc"), "exp", "run", "-n", name, *overrides], root)
    return root


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("i2i").experiment_id])


def test_baseline_repro_runs_every_stage_then_only_the_three_checks(experiments: Path):
    out = (experiments.parent / "repro.log").read_text()
    assert [s for s in STAGES if f"Running stage '{s}'" in out] == list(STAGES)
    again = (experiments.parent / "repro-again.log").read_text()
    always = ["params", "code", "backbones"]
    assert [s for s in STAGES if f"Running stage '{s}'" in again] == always
    assert all(f"Stage '{s}' didn't change" in again for s in STAGES[3:])
    shown = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], experiments).stdout)
    scores = shown[""]["data"]["reports/metrics.json"]["data"]
    assert isinstance(scores["metric/content_iou/ab"], float) and isinstance(
        scores["metric/cis/ab"], float
    )
    assert (
        "metric/cis/ba" not in scores
    )  # skipped (null): DVC leaves it out, `dvc exp show` prints -
    # Offline: backbones, real_features and evaluate each say it once, with the fix (train loads
    # no backbone at vgg_w = 0), and the run goes on.
    assert out.count("WARNING: pretrained weights not available: ") == 3
    assert out.count("Fix: i2i weights --params params.yaml") == 3
    assert f"cannot reach {OFFLINE_MIRROR}" in out
    report = json.loads((experiments / "reports" / "preprocess.json").read_text())
    assert report["counts"] == {"train_a": 8, "test_a": 2, "train_b": 8, "test_b": 2}
    assert (experiments / "data" / "prepared" / "manifest.json").is_file()


def test_every_i2i_module_a_stage_runs_is_in_its_code_record(experiments: Path):
    """A stage re-runs when library code it runs changes: its code record (the `code` stage's
    reports/code/<stage>.json, a DVC dependency) holds every i2i file the stage imported when the
    baseline's `dvc repro` ran it, read from the code, not listed by hand."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    recorded = set()
    for name, stage in stages.items():
        assert stage["cmd"].startswith("python stages/"), name
        assert not any(d.startswith(("i2i/", "stages/")) for d in stage.get("deps", [])), name
        script = stage["cmd"].split()[1]
        imported = json.loads(
            (experiments.parent / "imports" / f"{Path(script).stem}.json").read_text()
        )
        assert "i2i/cli.py" in {str(Path(m).relative_to(experiments)) for m in imported}, name
        if stage.get("always_changed"):
            continue  # runs on every dvc repro: it needs no record
        assert f"reports/code/{name}.json" in stage["deps"], name
        record = json.loads((experiments / "reports" / "code" / f"{name}.json").read_text())
        files = set(record["files"])
        imported = {str(Path(m).relative_to(experiments)) for m in imported}
        assert imported <= files, f"stage {name}: not recorded {imported - files}"
        assert script in files and "i2i/cli.py" in files
        recorded.add(name)
    outs = {next(iter(o)) for o in stages["code"]["outs"]}
    assert outs == {f"reports/code/{n}.json" for n in recorded}
    # The checkpoint fingerprint hashes i2i.train's closure: training code the stage runs.
    from i2i import sources

    train = json.loads((experiments / "reports" / "code" / "train.json").read_text())["files"]
    assert {str(f.relative_to(REPO)) for f in sources.closure("i2i.train")} <= set(train)


def test_a_code_change_reruns_exactly_the_stages_that_run_that_code(experiments: Path):
    """After a change to preprocess.py, preprocess re-runs; its output is the same, so nothing
    downstream does. After one to sample.py, sample alone re-runs."""
    for module, stages in CHANGED.items():
        out = (experiments.parent / f"repro-{module}.log".replace("/", "-")).read_text()
        ran = [s for s in STAGES if f"Running stage '{s}'" in out]
        assert ran == ["params", "code", "backbones", *stages], (module, ran)


def test_every_finished_experiment_is_in_dvc_exp_show_with_its_scores(experiments: Path):
    shown = json.loads(run([str(BIN / "dvc"), "exp", "show", "--json"], experiments).stdout)
    found, failed = {}, []
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                if rev.get("error"):
                    failed.append(rev["name"])
                else:
                    found[rev["name"]] = rev["data"]["metrics"]["reports/metrics.json"]["data"]
    assert set(found) == {"no-identity", "munit"} and failed == ["diverges"]
    queue = run([str(BIN / "dvc"), "queue", "status"], experiments).stdout
    assert [line.split()[-1] for line in queue.splitlines() if "diverges" in line] == ["Failed"]
    trained = next(
        rev["data"]["metrics"]["reports/train/metrics.json"]["data"]
        for b in shown
        for exp in b.get("experiments") or []
        for rev in exp["revs"]
        if rev.get("name") == "no-identity"
    )
    assert trained["iterations_per_second"] > 0
    assert set(trained["final"]) == {"loss/G/total", "loss/D/total"}
    for scores in found.values():
        assert isinstance(scores["metric/content_iou/ab"], float)
        assert isinstance(scores["uncalibrated/fid/ab"], float)
        assert not any(k.startswith(("metric/fid", "metric/kid", "metric/lpips")) for k in scores)
    lpips = "uncalibrated/lpips_diversity/ab"
    assert found["munit"][lpips] > 0 == found["no-identity"][lpips]


def test_every_experiment_is_one_mlflow_run_named_and_tagged_by_dvc(experiments: Path):
    client, runs = _runs(experiments)
    # `mlflow ui` opens the experiment on its table of training runs, not the GenAI view.
    kind = client.get_experiment_by_name("i2i").tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
    names = [r.data.tags.get("dvc_exp_name") for r in runs if r.data.tags.get("dvc_exp_name")]
    assert sorted(names) == sorted(
        [*QUEUE, *WORKSPACE]
    )  # one run each: nothing lost, nothing duplicated
    assert len(runs) == len(QUEUE) + len(WORKSPACE) + 1  # and the baseline's `dvc repro`
    by_name = {r.data.tags.get("dvc_exp_name", "baseline"): r for r in runs}
    assert by_name["diverges"].info.status == "FAILED"
    assert (
        by_name["baseline"].info.run_name == "cyclegan"
    )  # not a random name (repro ran before any commit)
    for name in ("no-identity", "munit", "baseline"):
        r = by_name[name]
        assert r.info.status == "FINISHED" and "metric/content_iou/ab" in r.data.metrics, name
        assert {a.path for a in client.list_artifacts(r.info.run_id, "samples")} >= {
            "samples/index.html"
        }
        assert [a.path for a in client.list_artifacts(r.info.run_id, "model/artifacts")] == [
            "model/artifacts/generator.pt"
        ], name
    assert by_name["no-identity"].data.params["loss.identity_w"] == "0.0"
    assert by_name["no-identity"].data.params["loss.vgg_w"] == "1.0"
    # Offline: the perceptual loss ran on a random VGG16, and the run says so.
    assert by_name["no-identity"].data.tags["backbone/vgg16"] == "random"
    assert "backbone/vgg16" not in by_name["munit"].data.tags  # vgg_w = 0: no VGG at all
    for r in runs:
        assert r.data.tags.get("backbone/inception_fid", "random") == "random"
        calibrated = ("metric/fid", "metric/kid", "metric/lpips")
        assert not any(k.startswith(calibrated) for k in r.data.metrics)
    head = run(["git", "rev-parse", "HEAD"], experiments).stdout.strip()
    for name in ("no-identity", "munit"):  # in the workspace, and in a copy under .dvc/tmp/exps
        assert by_name[name].data.tags["dvc_exp_baseline"] == head, name
    assert not list(
        (experiments / ".dvc" / "tmp").rglob("mlflow.db")
    )  # the copies' runs reached the root


def test_dvc_exp_show_leads_with_the_scores(experiments: Path):
    """The columns after the experiment's name and date: the scores of both directions, then the
    values they are read by, then the training's it/s and total losses, then the params."""
    csv = run([str(BIN / "dvc"), "exp", "show", "--csv"], experiments).stdout
    columns = csv.splitlines()[0].split(",")
    meta = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    first = next(i for i, c in enumerate(columns) if c not in meta)
    scores = [c for c in columns[first:] if c.startswith(("metric/", "uncalibrated/"))]
    assert columns[first : first + 4] == scores[:4]
    is_reference = [
        c.split("/")[1].endswith("_real") or c.split("/")[1] in ("classifier_accuracy", "num_modes")
        for c in scores
    ]
    assert is_reference == sorted(is_reference)  # every score before every reference value
    after = columns.index(scores[-1]) + 1
    training = ["config_id", "iterations_per_second", "final.loss/G/total", "final.loss/D/total"]
    assert columns[after : after + 4] == training  # then the configuration, speed and losses
    assert columns[after + 4].startswith("data.")  # then the params: no other metrics


def test_compare_writes_a_sorted_table_of_differing_params_and_a_chart(experiments: Path):
    out = run([str(BIN / "i2i"), "compare", "--sort", "metric/content_iou/ab"], experiments).stdout
    md = (experiments / "reports" / "compare.md").read_text().split("## Runs")[1]
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for param in ("loss.identity_w", "loss.vgg_w", "model.name"):
        assert param in columns
    assert "train.iterations" not in columns  # the same in every run: not a difference
    rows = [
        line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| run")
    ]
    assert len(rows) == 3 and "diverges" not in md  # finished runs only, by default
    iou = [float(r.strip("|").split("|")[columns.index("metric/content_iou/ab")]) for r in rows]
    assert iou == sorted(iou, reverse=True)  # higher is better: best first
    assert header in out
    image = Image.open(experiments / "reports" / "compare.png")
    assert image.format == "PNG" and image.width > 400

    failed = run(
        [
            str(BIN / "i2i"),
            "compare",
            "--all",
            "--tag",
            "dvc_exp_name=diverges",
            "--out",
            "one.md",
            "--plot",
            "one.png",
        ],
        experiments,
    ).stdout
    assert "FAILED" in failed and "diverges" in failed


def test_compare_errors_name_what_is_missing(experiments: Path):
    proc = run([str(BIN / "i2i"), "compare", "--sort", "metric/nope/ab"], experiments, check=False)
    assert proc.returncode == 1 and "metric/nope/ab" in proc.stderr
    assert "uncalibrated/fid/ab" in proc.stderr
    proc = run([str(BIN / "i2i"), "compare", "--experiment", "other"], experiments, check=False)
    assert proc.returncode == 1 and "'other' not found" in proc.stderr and "i2i" in proc.stderr


def test_comparison_table_keeps_only_differing_params():
    from i2i.compare import comparison
    from i2i.runs import RunRecord

    runs = [
        RunRecord(
            "a" * 32, "x", "FINISHED", 1, {"p": "1", "q": "same"}, {"metric/fid/ab": 3.0}, {}
        ),
        RunRecord(
            "b" * 32, "y", "FINISHED", 2, {"p": "2", "q": "same"}, {"metric/fid/ab": 1.0}, {}
        ),
    ]
    table = comparison(runs, sort="metric/fid/ab")
    assert list(table.columns) == ["run", "status", "run_id", "p", "metric/fid/ab"]
    assert table["run"].tolist() == ["y", "x"]  # FID: lower is better
    assert isinstance(table, pd.DataFrame)


def test_compare_ranks_scores_and_puts_reference_values_in_the_caption(tmp_path: Path):
    from i2i.compare import compare
    from i2i.errors import I2IError
    from i2i.runs import RunRecord

    def scores(cis: float, accuracy: float) -> dict[str, float]:
        return {
            "metric/cis/ab": cis,
            "metric/inception_score_real/ab": 3.78,
            "metric/num_modes/ab": 4.0,
            "metric/classifier_accuracy/ab": accuracy,
        }

    runs = [
        RunRecord("a" * 32, "x", "FINISHED", 1, {"p": "1"}, scores(1.5, 0.2), {}),
        RunRecord("b" * 32, "y", "FINISHED", 2, {"p": "2"}, scores(2.5, 0.1), {}),
    ]
    table = compare(runs, tmp_path / "c.md", tmp_path / "c.png", sort="metric/cis/ab").runs
    assert list(table.columns) == ["run", "status", "run_id", "p", "metric/cis/ab"]
    assert table["run"].tolist() == ["y", "x"]  # CIS: higher is better
    md = (tmp_path / "c.md").read_text()
    assert "- `metric/inception_score_real/ab`: 3.78\n" in md  # the same in every run: one value
    assert "- `metric/classifier_accuracy/ab`: 0.1 to 0.2\n" in md
    assert "- `metric/num_modes/ab`: 4\n" in md
    with pytest.raises(I2IError, match="a reference value, not a score"):
        compare(runs, tmp_path / "d.md", tmp_path / "d.png", sort="metric/classifier_accuracy/ab")


def test_scores_of_random_backbones_get_their_own_columns_and_are_never_ranked_with_calibrated():
    from i2i.compare import comparison
    from i2i.runs import RunRecord

    runs = [
        RunRecord("a" * 32, "online", "FINISHED", 1, {}, {"metric/fid/ab": 30.0}, {}),
        RunRecord("b" * 32, "offline", "FINISHED", 2, {}, {"uncalibrated/fid/ab": 1.0}, {}),
        RunRecord("c" * 32, "online2", "FINISHED", 3, {}, {"metric/fid/ab": 20.0}, {}),
    ]
    table = comparison(runs, sort="metric/fid/ab")
    assert list(table.columns) == [
        "run",
        "status",
        "run_id",
        "metric/fid/ab",
        "uncalibrated/fid/ab",
    ]
    assert table["run"].tolist() == ["online2", "online", "offline"]  # no calibrated FID: last
    assert comparison(runs, sort="uncalibrated/fid/ab")["run"].tolist()[0] == "offline"


def test_dvc_plots_diff_draws_two_experiments_loss_curves_together(experiments: Path):
    out = run(
        [str(BIN / "dvc"), "plots", "diff", "no-identity", "munit", "--json"], experiments
    ).stdout
    plots = json.loads(out)["data"]["Training losses"]
    assert [p["revisions"] for p in plots] == [["no-identity", "munit"]]
    points = plots[0]["content"]["data"]["values"]
    for field in ("loss/G/total", "loss/D/total"):
        steps = {
            rev: [int(v["step"]) for v in points if v["rev"] == rev and v["field"] == field]
            for rev in ("no-identity", "munit")
        }
        assert steps["no-identity"] == steps["munit"] == list(range(1, 7)), (
            field
        )  # every logged step


def test_dvc_plots_show_writes_a_page_that_draws_offline(experiments: Path):
    run([str(BIN / "dvc"), "plots", "show", "-o", "plots-page"], experiments)
    page = experiments / "plots-page" / "index.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing to fetch: Vega is in the page
    assert "vegaEmbed(" in html and "loss/G/total" in html
    browser = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if browser is None:
        pytest.skip("no headless Chromium to draw the page with")
    # Every host name resolves to nothing: the page has no network, as on an offline machine.
    proc = run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        experiments,
    )
    drawn = re.findall(r'<div id="[^"]*">\s*<canvas|class="vega-embed', proc.stdout)
    assert drawn, proc.stdout[-2000:]


def test_translate_takes_a_dvc_experiment_or_an_mlflow_run_as_the_model(experiments: Path):
    """The munit experiment's generators, read from the DVC cache by the experiment's name and
    from its MLflow run, translate an image the same way (with MUNIT's style codes)."""
    image = next((experiments / "data" / "raw" / "testA").rglob("*.png"))
    _, runs = _runs(experiments)
    run_id = next(r.info.run_id for r in runs if r.data.tags.get("dvc_exp_name") == "munit")
    outputs = []
    for model, out in (("munit", "by-name"), (f"runs:/{run_id}", "by-run")):
        cmd = [str(BIN / "i2i"), "translate", str(image), "--model", model, "--direction", "ab"]
        run([*cmd, "--styles", "2", "--out", out], experiments)
        outputs.append(
            [(experiments / out / f"{image.stem}_style_{k:02d}.png").read_bytes() for k in range(2)]
        )
    assert outputs[0] == outputs[1] and outputs[0][0] != outputs[0][1]
