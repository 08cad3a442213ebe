"""The benchmarks: training-step throughput and memory per setting and mode, the data loader's
share of a step, and the evaluation protocol's speed (docs/performance.md).

python benchmarks/bench.py --setting default --setting cyclegan-128 --steps 10

Benchmarks measure; they assert nothing. Results go to a JSON file and a Markdown table
(``reports/benchmarks.json``, ``reports/benchmarks.md``) with the device, versions and command.
The harness (``benchmarks/harness/``) is repository tooling, not part of the i2i package.
"""

import shlex
import sys
import tempfile
from pathlib import Path

import click
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness.evaluation import bench_evaluation  # noqa: E402
from benchmarks.harness.report import environment, write_reports  # noqa: E402
from benchmarks.harness.training import MODES, bench_training, profile_training  # noqa: E402
from i2i.config import load_params  # noqa: E402
from i2i.errors import I2IError  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Base params (the default setting).",
)
@click.option(
    "--setting",
    "settings",
    multiple=True,
    help="What to train (repeatable): tiny, default, "
    "cyclegan-128, cyclegan-256, munit-256. Default: default and cyclegan-128.",
)
@click.option(
    "--mode",
    "modes",
    multiple=True,
    help="How (repeatable): fp32 (the default "
    "trainer, the baseline), channels_last, bf16, fp16, compile, cudagraphs, batch4x, "
    "fast-gpu. Default: all; CUDA-only ones are skipped on a CPU.",
)
@click.option(
    "--steps",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Timed iterations per run.",
)
@click.option(
    "--warmup",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Untimed iterations first (compilation happens here; their losses are compared).",
)
@click.option(
    "--repeats",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Run the whole list this many times, round-robin; each run keeps its fastest repeat.",
)
@click.option(
    "--paired",
    is_flag=True,
    help="Also time each mode beside the fp32 baseline in one process, "
    "alternating iterations: a speedup that a noisy machine cannot fake.",
)
@click.option(
    "--max-seconds",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Per run: the warm-up and the timed steps each stop early (after one step) past half "
    "of this.",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--evaluation/--no-evaluation",
    default=True,
    show_default=True,
    help="Also LPIPS and Inception speeds and the diversity protocol's wall time.",
)
@click.option(
    "--eval-classifier",
    type=click.Choice(["domain", "inception"]),
    help="The protocol's CIS classifier (default: evaluate.classifier).",
)
@click.option(
    "--profile", "profile_run", metavar="SETTING/MODE", help="Also profile this run's step."
)
@click.option(
    "--tiny", is_flag=True, help="A smoke test: the tiny setting and a tiny evaluation protocol."
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the generated benchmark datasets here (default: a temporary folder).",
)
@click.option(
    "--json",
    "out_json",
    default="reports/benchmarks.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--md",
    "out_md",
    default="reports/benchmarks.md",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
def bench(
    params_path: Path,
    settings: tuple[str, ...],
    modes: tuple[str, ...],
    steps: int,
    warmup: int,
    repeats: int,
    paired: bool,
    max_seconds: float,
    device: str,
    evaluation: bool,
    eval_classifier: str | None,
    profile_run: str | None,
    tiny: bool,
    cache: Path | None,
    out_json: Path,
    out_md: Path,
) -> None:
    """Benchmark training steps, the data path and evaluation; write JSON and a Markdown table."""
    load_params(params_path)  # a clear error for a bad file before anything runs
    base = yaml.safe_load(params_path.read_text())
    settings = settings or (("tiny",) if tiny else ("default", "cyclegan-128"))
    modes = modes or tuple(MODES)
    with tempfile.TemporaryDirectory(prefix="i2i-bench-") as tmp:
        cache = cache or Path(tmp)
        results = bench_training(
            base,
            list(settings),
            list(modes),
            device,
            steps,
            warmup,
            cache,
            click.echo,
            max_seconds,
            repeats,
            paired,
        )
        ev = None
        if evaluation:
            ev = bench_evaluation(base, device, cache, eval_classifier, tiny=tiny)
            click.echo(
                f"evaluation: LPIPS {ev['lpips_pairs_per_second']:.1f} pairs/s, Inception "
                f"{ev['inception_images_per_second']:.1f} images/s, "
                f"protocol {ev['protocol_seconds']:.1f} s"
            )
        profile = None
        if profile_run:
            setting, _, mode = profile_run.partition("/")
            profile = profile_training(base, setting, mode or "fp32", device, steps, warmup, cache)
            click.echo(profile)
    write_reports(
        out_json,
        out_md,
        shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]]),
        environment(),
        results,
        ev,
        profile,
    )
    click.echo(f"-> {out_json}, {out_md}")


def main() -> None:
    try:
        bench(standalone_mode=False)
    except I2IError as e:
        raise SystemExit(f"Error: {e}") from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    main()
