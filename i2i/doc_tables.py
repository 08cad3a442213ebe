"""The result tables of the README and docs/, rendered from the committed reports.

A generated table sits between ``<!-- table NAME -->`` and ``<!-- /table -->`` in a markdown
file; ``i2i tables`` rewrites each from the report files its renderer reads, and
``i2i tables --check`` lists the tables that differ from their reports (the test suite runs it,
so a number typed by hand, or a report regenerated without its table, fails). Each table names
the machine its numbers come from, as the reports record it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from i2i.errors import I2IError
from i2i.io import write_bytes

DOCUMENTS = ("README.md", "docs/evaluation.md", "docs/experiments.md", "docs/training.md")
BLOCK = re.compile(r"(<!-- table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _read(root: Path, name: str) -> dict:
    path = root / name
    if not path.is_file():
        raise I2IError(f"{path}: the report this table is rendered from does not exist")
    return json.loads(path.read_text())


def machine_line(machine: dict, source: str) -> str:
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    return (
        f"Measured on {machine['cpu']}{gpu}, {machine['threads']} threads, torch "
        f"{machine['torch']} (`{source}`)."
    )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def timings(root: Path) -> str:
    """The default run's costs: from reports/timings.json (``benchmarks/fresh_clone.py``), the
    training summary and the evaluation report."""
    t = _read(root, "reports/timings.json")
    summary = _read(root, "reports/train/summary.json")
    evaluation = _read(root, "reports/evaluate.json")
    metrics = _read(root, "reports/metrics.json")
    iou = metrics["metric/content_iou/ab"]
    rows = [
        (
            "`make repro` on a fresh clone: install, then every stage",
            _duration(t["make_repro_s"]),
            "`reports/timings.json`",
        ),
        (
            f"training, {summary['iterations']} iterations",
            f"{summary['seconds']:.0f} s, {summary['iterations_per_second']} it/s",
            "`reports/train/summary.json`",
        ),
        ("evaluation", f"{evaluation['seconds']['total']:.0f} s", "`reports/evaluate.json`"),
        (
            "a second `dvc repro`, nothing changed",
            _duration(t["dvc_repro_again_s"]),
            "`reports/timings.json`",
        ),
        (
            "A→B content IoU, untrained → trained CycleGAN",
            f"{t['content_iou_untrained']:.3f} → {iou:.3f}",
            "`reports/timings.json`, `reports/metrics.json`",
        ),
        (
            f"the ablation queue below ({t['ablation_runs']} runs, one at a time)",
            _duration(t["ablation_queue_s"]),
            "`reports/timings.json`",
        ),
    ]
    lines = [machine_line(t["machine"], "reports/timings.json"), "", "| what | result | from |"]
    lines += ["|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


ABLATION_SCORES = (
    ("metric/content_iou/ab", "content IoU A→B"),
    ("metric/content_iou/ba", "content IoU B→A"),
    ("metric/inception_score/ab", "IS A→B (domain classifier)"),
)


def _estimate(score: dict) -> str:
    if score["n"] == 0 or score["mean"] is None:
        return "-"
    if score["low"] is None:
        return f"{score['mean']:.3g} (n = 1)"
    return f"{score['mean']:.3g} ± {(score['high'] - score['low']) / 2:.2g}"


def ablation(root: Path) -> str:
    """The headline ablation (``loss.vgg_w`` 0 and 1, three seeds each): mean ± 95 % t interval
    per setting, and the verdicts against ``loss.vgg_w=0``."""
    data = _read(root, "reports/ablation/compare.json")
    t = _read(root, "reports/timings.json")
    shown = [(k, label) for k, label in ABLATION_SCORES if k in data["configurations"][0]["scores"]]
    lines = [
        machine_line(t["machine"], "reports/ablation/compare.json"),
        "",
        "| setting | n | " + " | ".join(label for _, label in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for c in data["configurations"]:
        cells = [_estimate(c["scores"][k]) for k, _ in shown]
        lines.append(f"| `{c['setting']}` | {c['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| against `loss.vgg_w=0` | score | difference (95 % Welch interval) | verdict |"]
    lines.append("|---|---|---|---|")
    labels = dict(shown)
    for d in data["differences"] or []:
        if d["score"] not in labels:
            continue
        interval = "" if d["low"] is None else f" [{d['low']:+.2g}, {d['high']:+.2g}]"
        lines.append(
            f"| `{d['setting']}` | {labels[d['score']]} | {d['difference']:+.2g}{interval} | "
            f"{d['verdict']} |"
        )
    return "\n".join(lines) + "\n"


TABLES: dict[str, Callable[[Path], str]] = {"timings": timings, "ablation": ablation}


def render(text: str, root: Path, source: str) -> str:
    """``text`` with every generated table rendered anew."""

    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise I2IError(f"{source}: unknown table {name!r}; known: {', '.join(TABLES)}")
        return m.group(1) + TABLES[name](root) + m.group(4)

    return BLOCK.sub(one, text)


def update(root: Path, check: bool = False) -> list[str]:
    """Render every document's tables; return the documents that were (``check``: would be)
    changed. ``check`` writes nothing."""
    changed = []
    for name in DOCUMENTS:
        path = root / name
        text = path.read_text()
        new = render(text, root, name)
        if new != text:
            changed.append(name)
            if not check:
                write_bytes(path, new.encode())
    return changed
