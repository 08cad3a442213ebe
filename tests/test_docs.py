"""The README stays a front door (short, its links resolve) and the docs link to real files and
headings."""

from __future__ import annotations

import re

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short():
    assert (REPO / "README.md").stat().st_size <= 12 * 1024


def test_every_relative_link_reaches_a_file_and_heading():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.is_file(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}"


def _code_lines(page) -> list[str]:
    """The lines of a page's fenced code blocks, continuation lines joined."""
    lines, inside = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line)
    return lines


def test_every_i2i_command_and_option_the_docs_show_exists():
    """A reader's copy-paste works: `i2i <command> --option` in any code block is a real
    command with that option (e.g. `i2i translate --params` would not be)."""
    from i2i.cli import main

    checked = 0
    for page in PAGES:
        for line in _code_lines(page):
            line = line.split(" #")[0]  # not the comment
            for m in re.finditer(r"(?:^|[\s;&|(])i2i ([a-z]+)([^;|&]*)", line):
                command, rest = m.group(1), m.group(2)
                assert command in main.commands, f"{page.name}: `i2i {command}` is no command"
                params = main.commands[command].params
                options = {o for p in params for o in (*p.opts, *p.secondary_opts)}
                for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                    where = f"{page.name}: `i2i {command} {option}`"
                    assert option in options, f"{where}: no such option"
                checked += 1
    assert checked > 20


def test_no_page_installs_the_unrelated_pypi_package_named_i2i():
    for page in [*PAGES, REPO / "Makefile"]:
        assert not re.search(r"pip install\s+['\"]?i2i\b", page.read_text()), page.name


def test_every_page_gives_the_one_cpu_recipe_for_parallel_jobs():
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"dvc queue start -j 2\b", text):
            assert text[: m.start()].endswith("I2I_JOBS=2 "), f"{page.name}: {m.group(0)}"


def test_mlflow_ui_commands_name_the_runs_table():
    """A fresh browser may open MLflow 3's GenAI view; the direct link does not."""
    for page in PAGES:
        for line in _code_lines(page):
            if line.startswith("mlflow ui"):
                assert "#/experiments/" in line, f"{page.name}: {line}"


def test_make_installs_a_newly_asked_torch_into_an_existing_venv():
    import subprocess

    out = subprocess.run(
        ["make", "-n", "setup", "TORCH=torch==0.0.1 torchvision==0.0.2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet --disable-pip-version-check torch==0.0.1 torchvision==0.0.2" in out


def test_the_generated_tables_match_the_committed_reports():
    from i2i.doc_tables import update

    assert update(REPO, check=True) == [], "run `i2i tables` (or regenerate the reports)"


def _write_reports(root):
    """Reports as the pipeline writes them, with numbers chosen to render recognisably; returns
    the writer, to change one later."""
    import json

    def put(name: str, data: dict) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))

    machine = {"cpu": "Test CPU 9000", "threads": 2, "torch": "2.99.0"}
    put(
        "reports/timings.json",
        {
            "make_repro_s": 754.2,
            "dvc_repro_again_s": 4.87,
            "content_iou_untrained": 0.1713,
            "ablation_queue_s": 3725.0,
            "ablation_runs": 6,
            "machine": machine,
        },
    )
    put(
        "reports/train/summary.json",
        {"iterations": 600, "seconds": 342.6, "iterations_per_second": 1.751, "machine": machine},
    )
    put("reports/evaluate.json", {"seconds": {"total": 71.4}})
    put("reports/metrics.json", {"metric/content_iou/ab": 0.96831})
    score = {"n": 3, "mean": 0.955, "sd": 0.01, "low": 0.93016, "high": 0.97984}
    put(
        "reports/ablation/compare.json",
        {
            "configurations": [
                {
                    "config": "aaa",
                    "setting": "loss.vgg_w=0.0",
                    "n": 3,
                    "scores": {"metric/content_iou/ab": score},
                },
                {
                    "config": "bbb",
                    "setting": "loss.vgg_w=1.0",
                    "n": 1,
                    "scores": {
                        "metric/content_iou/ab": {
                            "n": 1,
                            "mean": 0.944,
                            "sd": None,
                            "low": None,
                            "high": None,
                        }
                    },
                },
            ],
            "differences": [
                {
                    "setting": "loss.vgg_w=1.0",
                    "score": "metric/content_iou/ab",
                    "difference": -0.011,
                    "low": None,
                    "high": None,
                    "verdict": "n = 1 vs 3: no interval, no verdict",
                }
            ],
        },
    )
    return put


def test_each_number_in_a_generated_table_is_the_reports_and_a_changed_report_is_caught(
    tmp_path,
):
    from i2i.doc_tables import update

    put = _write_reports(tmp_path)
    for name in ("docs/evaluation.md", "docs/experiments.md", "docs/training.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("no tables\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "a\n<!-- table timings -->\n<!-- /table -->\nb\n<!-- table ablation -->\n"
        "old\n<!-- /table -->\n"
    )
    assert update(tmp_path) == ["README.md"]
    text = readme.read_text()
    for expected in (
        "Measured on Test CPU 9000, 2 threads, torch 2.99.0",
        "| 12 min 34 s |",  # 754.2 s
        "| 343 s, 1.751 it/s |",
        "| 71 s |",
        "| 4.9 s |",
        "| 0.171 → 0.968 |",
        "| 62 min 5 s |",
        "| `loss.vgg_w=0.0` | 3 | 0.955 ± 0.025 |",  # the half-width (0.97984 - 0.93016) / 2
        "| `loss.vgg_w=1.0` | 1 | 0.944 (n = 1) |",
        "| -0.011 | n = 1 vs 3: no interval, no verdict |",
    ):
        assert expected in text, expected
    assert text.startswith("a\n") and "old" not in text and text.endswith("<!-- /table -->\n")
    assert update(tmp_path, check=True) == []
    put("reports/evaluate.json", {"seconds": {"total": 90.0}})
    assert update(tmp_path, check=True) == ["README.md"]
    assert "| 71 s |" in readme.read_text()  # --check writes nothing


def test_the_compare_outputs_are_never_committed():
    """`i2i compare` writes from the local store; a committed copy would go stale."""
    import subprocess

    for name in ("reports/compare.md", "reports/compare.json", "reports/compare.png"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO)
        assert ignored.returncode == 0, name


def test_every_measured_number_in_a_docs_table_is_in_the_report_the_page_cites():
    """A table of measurements cites its reports (in the lines before it); each decimal number
    in it must be found in them, so a hand-typed or stale number fails. Generated tables
    (`i2i tables`) are checked against their reports by the test above."""
    for page in PAGES:
        if page.name == "references.md":  # the papers' numbers, cited by section
            continue
        text = re.sub(r"<!-- table [\w-]+ -->.*?<!-- /table -->", "", page.read_text(), flags=re.S)
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("|") or set(line) <= set("|-: "):
                continue
            cells = re.sub(r"`[^`]*`", "", line.split("|", 2)[-1])  # not commands or addresses
            numbers = re.findall(r"(?<![\w.])\d[\d,]*\.\d+", cells)
            if not numbers:
                continue
            start = i
            while start > 0 and lines[start - 1].startswith("|"):
                start -= 1
            cited = set(
                re.findall(r"reports/[\w./-]+\.(?:json|md)", "\n".join(lines[start - 20 : i + 1]))
            )
            assert cited, f"{page.name}:{i + 1}: measured numbers {numbers} cite no report"
            reports = " ".join((REPO / c).read_text() for c in cited)
            for n in numbers:
                assert n in reports, f"{page.name}:{i + 1}: {n} is not in {sorted(cited)}"
