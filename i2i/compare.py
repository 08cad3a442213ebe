"""``i2i compare``: configurations, not single runs, side by side (``reports/compare.md``, a
chart with error bars in ``reports/compare.png``, the same table on the console).

Runs are grouped by configuration (``i2i.configuration``: the params without the seed and the
run-only keys), so the seeds of one setting become one row with n, mean, standard deviation and
the 95 % Student-t interval of every score (``i2i.statistics``). With a baseline, every other
configuration's difference from it gets Welch's interval and a verdict: better, worse, or no
difference detectable with the runs there are. The table of single runs follows. The runs are
read back from the store the pipeline writes (``i2i.runs.find_runs``); a DVC experiment's run
is named after the experiment, so run names match ``dvc exp show``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from i2i import statistics
from i2i.configuration import SEED_KEYS, configuration_id, defining
from i2i.errors import I2IError
from i2i.io import atomic_path, write_bytes, write_json
from i2i.metrics import registry
from i2i.runs import RunRecord

SCORES = ("metric/", "uncalibrated/")  # calibrated scores, and those from random backbones


def is_score(key: str) -> bool:
    """``metric/<name>/<direction>`` or ``uncalibrated/...``, not a reference value."""
    parts = key.split("/")
    return key.startswith(SCORES) and len(parts) == 3 and not registry.is_reference(parts[1])


def lower_is_better(key: str) -> bool:
    """``metric/<name>/<direction>``, ``uncalibrated/...`` or ``loss/...``: whether smaller is
    better."""
    parts = key.split("/")
    return key.startswith("loss/") or (len(parts) == 3 and registry.lower_is_better(parts[1]))


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
    differing = _shown(sorted(params.columns), [r.params for r in runs])
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


def _model_section(key: str) -> str | None:
    """``m`` for a key of a model's params section, ``model.<m>.<field>``; else None."""
    parts = key.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "model" else None


def _shown(keys: list[str], params: list[dict]) -> list[str]:
    """The keys whose values differ between ``params``. A key of a model's section
    (``model.<m>.*``) is compared among the ones that select that model only: between models,
    ``model.name`` says what differs."""
    shown = []
    for key in keys:
        section = _model_section(key)
        peers = [p for p in params if section is None or p.get("model.name") == section]
        if len({str(p.get(key, "-")) for p in peers}) > 1:
            shown.append(key)
    return shown


@dataclass(frozen=True)
class Configuration:
    """The runs of one configuration (seeds of one setting): one run per seed, the latest."""

    config_id: str
    runs: tuple[RunRecord, ...]
    label: str  # the defining params that differ from the other configurations, k=v, ...
    repeated: int = 0  # earlier runs of a seed that a later run of it replaced

    def values(self, key: str) -> list[float]:
        return [r.metrics[key] for r in self.runs if math.isfinite(r.metrics.get(key, math.nan))]


def run_configuration(run: RunRecord) -> str:
    """The run's configuration id: its ``config_id`` tag, else computed from its params (runs
    logged before the tag existed)."""
    return run.tags.get("config_id") or configuration_id(run.params)


def configurations(runs: list[RunRecord]) -> list[Configuration]:
    """The runs grouped by configuration, in the order of each configuration's first run.

    A seed counts once: the same configuration at the same seed computes the same thing (a
    re-run after a code change, a second ``dvc repro``), so its latest run stands for it, and
    ``n`` counts seeds, not runs."""
    groups: dict[str, dict[tuple, RunRecord]] = {}
    repeated: dict[str, int] = {}
    for r in sorted(runs, key=lambda r: r.start_time):
        seed, cid = tuple(r.params.get(k) for k in SEED_KEYS), run_configuration(r)
        group = groups.setdefault(cid, {})
        repeated[cid] = repeated.get(cid, 0) + (seed in group)
        group.pop(seed, None)
        group[seed] = r  # the latest run of a seed, in the order of the seeds' latest runs
    first = {cid: defining(next(iter(rs.values())).params) for cid, rs in groups.items()}
    keys = _shown(sorted({k for d in first.values() for k in d}), list(first.values()))
    labels = {
        cid: ", ".join(
            f"{k}={d.get(k, '-')}" for k in keys if _model_section(k) in (None, d.get("model.name"))
        )
        for cid, d in first.items()
    }
    order = {cid: i for i, cid in enumerate(dict.fromkeys(run_configuration(r) for r in runs))}
    return [
        Configuration(cid, tuple(rs.values()), labels[cid] or cid, repeated[cid])
        for cid, rs in sorted(groups.items(), key=lambda g: order[g[0]])
    ]


def configuration_table(
    configs: list[Configuration], keys: list[str], sort: str | None = None
) -> pd.DataFrame:
    """One row per configuration: id, label, runs, then per score its n, mean, sd and 95 %
    t interval (``<key>``, ``<key>:n``, ``<key>:sd``, ``<key>:low``, ``<key>:high``)."""
    rows = []
    for c in configs:
        row: dict[str, object] = {"config": c.config_id, "setting": c.label, "n": len(c.runs)}
        for key in keys:
            values = c.values(key)
            e = statistics.t_interval(values) if values else None
            row |= {
                key: e.mean if e else math.nan,
                f"{key}:n": e.n if e else 0,
                f"{key}:sd": e.sd if e and e.sd is not None else math.nan,
                f"{key}:low": e.low if e and e.low is not None else math.nan,
                f"{key}:high": e.high if e and e.high is not None else math.nan,
            }
        rows.append(row)
    table = pd.DataFrame(rows)
    if sort:
        table = table.sort_values(
            sort, ascending=lower_is_better(sort), na_position="last", kind="stable"
        )
    return table.reset_index(drop=True)


def baseline_configuration(configs: list[Configuration], spec: str) -> Configuration:
    """The configuration ``spec`` names: ``KEY=VALUE`` (a param, else a tag, of its runs), or a
    run's name (a DVC experiment), run id or configuration id (or a prefix of the ids)."""

    def matches(r: RunRecord) -> bool:
        if "=" in spec:
            key, value = spec.split("=", 1)
            have = r.params.get(key, r.tags.get(key))
            return have is not None and (have == value or _same_number(have, value))
        return r.name == spec or r.run_id.startswith(spec) or run_configuration(r).startswith(spec)

    hits = [c for c in configs if any(matches(r) for r in c.runs)]
    if len(hits) != 1:
        listed = "; ".join(f"{c.config_id} ({c.label})" for c in (hits or configs))
        raise I2IError(
            f"--baseline {spec!r} "
            + ("matches no run" if not hits else f"matches {len(hits)} configurations")
            + f": use KEY=VALUE of a param or tag, an experiment name, a run id or a "
            f"configuration id; {'configurations' if not hits else 'they are'}: {listed}"
        )
    return hits[0]


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def difference_table(
    configs: list[Configuration], baseline: Configuration, keys: list[str]
) -> pd.DataFrame:
    """One row per (configuration other than the baseline, score): the difference of the
    means, its 95 % Welch interval and the verdict."""
    rows = []
    for c in configs:
        if c is baseline:
            continue
        for key in keys:
            values, base = c.values(key), baseline.values(key)
            if not values or not base:
                continue
            d = statistics.welch_difference(values, base)
            rows.append(
                {
                    "config": c.config_id,
                    "setting": c.label,
                    "score": key,
                    "difference": d.diff,
                    "low": math.nan if d.low is None else d.low,
                    "high": math.nan if d.high is None else d.high,
                    "verdict": statistics.verdict(d, lower_is_better(key)),
                }
            )
    return pd.DataFrame(
        rows, columns=["config", "setting", "score", "difference", "low", "high", "verdict"]
    )


def _estimate_cell(row: pd.Series, key: str) -> str:
    n = int(row[f"{key}:n"])
    if n == 0:
        return "-"
    if n == 1:
        return f"{_cell(row[key])} (n = 1)"
    half = (row[f"{key}:high"] - row[f"{key}:low"]) / 2
    return f"{_cell(row[key])} ± {half:.2g}"


def configurations_markdown(table: pd.DataFrame, keys: list[str]) -> str:
    shown = pd.DataFrame(
        {
            "config": table["config"],
            "setting": table["setting"],
            "n": table["n"],
            **{key: [_estimate_cell(row, key) for _, row in table.iterrows()] for key in keys},
        }
    )
    return to_markdown(shown)


def differences_markdown(table: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "setting": table["setting"],
            "score": table["score"],
            "difference": [f"{v:+.4g}" for v in table["difference"]],
            "95 % interval": [
                "-" if math.isnan(lo) else f"[{lo:+.3g}, {hi:+.3g}]"
                for lo, hi in zip(table["low"], table["high"])
            ],
            "verdict": table["verdict"],
        }
    )
    return to_markdown(shown)


def plot_configurations(
    configs: list[Configuration], table: pd.DataFrame, keys: list[str], path: Path
) -> None:
    """One panel per score: each configuration's mean with its 95 % t interval as an error bar
    (none for n = 1) and its runs as dots, in the table's order."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_id = {c.config_id: c for c in configs}
    cols = min(3, len(keys)) or 1
    rows = max(1, math.ceil(len(keys) / cols))
    height = 0.4 * len(table) + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, height * rows), squeeze=False)
    names = [f"{s} (n={n})" for s, n in zip(table["setting"], table["n"])]
    for ax, key in zip(axes.flat, keys):
        for i, row in table.iterrows():
            dots = by_id[row["config"]].values(key)
            ax.plot(dots, [i] * len(dots), "o", color="#9bb7d4", markersize=3)
            if not math.isnan(row[f"{key}:low"]):
                err = [[row[key] - row[f"{key}:low"]], [row[f"{key}:high"] - row[key]]]
                ax.errorbar(row[key], i, xerr=err, fmt="s", color="#1f5fa6", capsize=3, ms=4)
            elif not math.isnan(row[key]):
                ax.plot(row[key], i, "s", color="#1f5fa6", ms=4)
        ax.set_yticks(range(len(table)), names, fontsize=8)
        ax.set_ylim(len(table) - 0.5, -0.5)
        ax.set_title(
            f"{key} ({'lower' if lower_is_better(key) else 'higher'} is better)", fontsize=9
        )
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class Comparison:
    runs: pd.DataFrame  # one row per run (:func:`comparison`)
    configurations: pd.DataFrame  # one row per configuration (:func:`configuration_table`)
    differences: pd.DataFrame | None  # against the baseline (:func:`difference_table`)
    markdown: str  # what compare.md holds and the console shows


def compare(
    runs: list[RunRecord],
    markdown: Path,
    chart: Path,
    metrics: list[str] | None = None,
    sort: str | None = None,
    baseline: str | None = None,
) -> Comparison:
    """Write the tables and the chart; return them."""
    table = comparison(runs, metrics, sort)
    keys = [c for c in table.columns if c.startswith((*SCORES, "loss/", "train/"))]
    configs = configurations(runs)
    per_config = configuration_table(configs, keys, sort if sort in keys else None)
    differences = None
    if baseline is not None:
        base = baseline_configuration(configs, baseline)
        differences = difference_table(configs, base, keys)
    seeds = ", ".join(f"`{k}`" for k in SEED_KEYS)
    repeats = sum(c.repeated for c in configs)
    text = (
        f"# Comparison of {len(configs)} configurations ({len(table)} runs)\n\n"
        f"A configuration is the runs whose params differ only in {seeds} or in keys that say "
        "where and how fast they ran (`i2i.configuration.RUN_ONLY_KEYS`). A cell is the mean "
        "over its runs ± the half-width of the 95 % Student-t interval; `(n = 1)`: one run, no "
        "interval. `-`: not computed (see the run's evaluate.json)."
        + (
            f" {repeats} run(s) repeated a configuration's seed: the latest run of each seed "
            "counts, so n counts seeds."
            if repeats
            else ""
        )
        + (
            " `uncalibrated/...`: computed on random backbones (offline), comparable only with "
            "each other."
            if any(k.startswith("uncalibrated/") for k in keys)
            else ""
        )
        + "\n\n"
        + configurations_markdown(per_config, keys)
    )
    if differences is not None:
        text += (
            f"\n## Against the baseline {base.config_id} ({base.label}, n = {len(base.runs)})\n\n"
            "The difference of the means, its 95 % Welch interval (unequal variances), and the "
            "verdict: better or worse when the interval excludes 0, in the score's own "
            "direction.\n\n" + differences_markdown(differences)
        )
    text += (
        "\n## Runs\n\nParams that differ between the runs, then the scores"
        + (f", best `{sort}` first" if sort else "")
        + ".\n\n"
        + to_markdown(table)
        + reference_caption(runs)
    )
    write_bytes(markdown, text.encode())
    write_json(markdown.with_suffix(".json"), as_json(configs, per_config, differences, keys))
    if keys:
        plot_configurations(configs, per_config, keys, chart)
    return Comparison(table, per_config, differences, text)


def as_json(
    configs: list[Configuration],
    per_config: pd.DataFrame,
    differences: pd.DataFrame | None,
    keys: list[str],
) -> dict:
    """compare.json: the same tables for programs (and the README's generated tables)."""

    def number(v: object) -> object:
        return None if isinstance(v, float) and math.isnan(v) else v

    runs = {c.config_id: [r.name for r in c.runs] for c in configs}
    rows = []
    for _, row in per_config.iterrows():
        rows.append(
            {
                "config": row["config"],
                "setting": row["setting"],
                "n": int(row["n"]),
                "runs": runs[row["config"]],
                "scores": {
                    k: {
                        "n": int(row[f"{k}:n"]),
                        "mean": number(row[k]),
                        "sd": number(row[f"{k}:sd"]),
                        "low": number(row[f"{k}:low"]),
                        "high": number(row[f"{k}:high"]),
                    }
                    for k in keys
                },
            }
        )
    diffs = None
    if differences is not None:
        diffs = [{k: number(v) for k, v in row.items()} for row in differences.to_dict("records")]
    return {"level": statistics.LEVEL, "configurations": rows, "differences": diffs}
