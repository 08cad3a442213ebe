"""``i2i compare``: runs from MLflow side by side, as a table of the params that differ and the
scores (``reports/compare.md``) and a chart of every score (``reports/compare.png``).

The runs are read back from the store the pipeline writes (``i2i.tracking.find_runs``); a DVC
experiment's run is named after the experiment, so the table's rows match ``dvc exp show``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from i2i.config import LOWER_IS_BETTER, REFERENCE_VALUES
from i2i.errors import I2IError
from i2i.io import atomic_path, write_bytes
from i2i.tracking import RunRecord

SCORES = ("metric/", "uncalibrated/")  # calibrated scores, and those from random backbones


def is_score(key: str) -> bool:
    """``metric/<name>/<direction>`` or ``uncalibrated/...``, not a reference value."""
    parts = key.split("/")
    return key.startswith(SCORES) and len(parts) == 3 and parts[1] not in REFERENCE_VALUES


def lower_is_better(key: str) -> bool:
    """``metric/<name>/<direction>``, ``uncalibrated/...`` or ``loss/...``: whether smaller is
    better."""
    parts = key.split("/")
    return key.startswith("loss/") or (len(parts) == 3 and parts[1] in LOWER_IS_BETTER)


def best_run(runs: list[RunRecord], metric: str) -> RunRecord:
    """The run with the best value of ``metric`` (lower or higher by its kind); the earliest
    among equals."""
    having = [r for r in runs if math.isfinite(r.metrics.get(metric, math.nan))]
    if not having:
        known = sorted({k for r in runs for k in r.metrics})
        raise I2IError(
            f"no run has the metric {metric!r}"
            + (f"; they have: {', '.join(known)}" if known else " (no runs found)")
        )
    sign = 1 if lower_is_better(metric) else -1
    return min(having, key=lambda r: sign * r.metrics[metric])


def comparison(
    runs: list[RunRecord], metrics: list[str] | None = None, sort: str | None = None
) -> pd.DataFrame:
    """One row per run: its status, the params whose values differ between the runs, then the
    metrics (default: every score any run has, :func:`is_score`), sorted by the score ``sort``
    best first. A score from a random backbone has its own ``uncalibrated/`` column, so it is
    never ranked against a calibrated one; reference values are not scores and are never ranked."""
    if not runs:
        raise I2IError("no runs to compare: check the experiment name, tags or run ids")
    params = pd.DataFrame([r.params for r in runs], dtype=object)
    differing = [
        c for c in sorted(params.columns) if params[c].astype(str).nunique(dropna=False) > 1
    ]
    scores = pd.DataFrame([r.metrics for r in runs])
    keys = metrics or sorted(c for c in scores.columns if is_score(c))
    missing = [k for k in keys if k not in scores.columns]
    if missing:
        raise I2IError(
            f"no run has the metric(s) {', '.join(missing)}; "
            f"available: {', '.join(sorted(scores.columns))}"
        )
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "run": [r.name for r in runs],
                    "status": [r.status for r in runs],
                    "run_id": [r.run_id[:8] for r in runs],
                }
            ),
            params[differing].reset_index(drop=True),
            scores[keys].reset_index(drop=True),
        ],
        axis=1,
    )
    if sort:
        ranked = sorted(c for c in scores.columns if is_score(c))
        if sort not in ranked:
            why = "a reference value, not a score" if sort in scores.columns else "no run has it"
            raise I2IError(f"cannot sort by {sort!r}: {why}; scores: {', '.join(ranked)}")
        if sort not in table.columns:
            table[sort] = scores[sort].values
        table = table.sort_values(
            sort, ascending=lower_is_better(sort), na_position="last", kind="stable"
        )
    return table.reset_index(drop=True)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, keys: list[str], path: Path) -> None:
    """One horizontal bar chart per metric, runs in the table's order, the best bar marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(keys)) or 1
    rows = max(1, math.ceil(len(keys) / cols))
    height = 0.35 * len(table) + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height * rows), squeeze=False)
    names = table["run"].astype(str).tolist()
    for ax, key in zip(axes.flat, keys):
        values = pd.to_numeric(table[key], errors="coerce")
        colors = ["#9bb7d4"] * len(values)
        if values.notna().any():
            best = values.idxmin() if lower_is_better(key) else values.idxmax()
            colors[table.index.get_loc(best)] = "#1f5fa6"
        ax.barh(range(len(values)), values.fillna(0), color=colors)
        ax.set_yticks(range(len(values)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(
            f"{key} ({'lower' if lower_is_better(key) else 'higher'} is better)", fontsize=9
        )
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        for i, v in enumerate(values):
            ax.text(0, i, f" {_cell(v)}", va="center", fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def reference_caption(runs: list[RunRecord]) -> str:
    """The reference values (real-data scores, classifier accuracy, ...) as one line each: one
    value when every run has the same, else the range."""
    values: dict[str, set[float]] = {}
    for r in runs:
        for k, v in r.metrics.items():
            if k.startswith(SCORES) and not is_score(k) and v == v:
                values.setdefault(k, set()).add(v)
    lines = [
        f"- `{k}`: {_cell(min(v))}" + (f" to {_cell(max(v))}" if len(v) > 1 else "")
        for k, v in sorted(values.items())
    ]
    return (
        "\n\nReference values (what the scores are read by, not ranked):\n"
        + "\n".join(lines)
        + "\n"
        if lines
        else "\n"
    )


def compare(
    runs: list[RunRecord],
    markdown: Path,
    chart: Path,
    metrics: list[str] | None = None,
    sort: str | None = None,
) -> pd.DataFrame:
    """Write the table and the chart; return the table."""
    table = comparison(runs, metrics, sort)
    keys = [c for c in table.columns if c.startswith((*SCORES, "loss/", "train/"))]
    header = (
        f"# Comparison of {len(table)} runs\n\nParams that differ between the runs, then the "
        "scores"
        + (f", best `{sort}` first" if sort else "")
        + ". `-`: not computed (see the run's evaluate.json)."
        + (
            " `uncalibrated/...`: computed on random backbones (offline), comparable only with "
            "each other."
            if any(k.startswith("uncalibrated/") for k in keys)
            else ""
        )
        + "\n\n"
    )
    write_bytes(markdown, (header + to_markdown(table) + reference_caption(runs)).encode())
    if keys:
        plot(table, keys, chart)
    return table
