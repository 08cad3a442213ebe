"""The ``i2i`` command line. DVC's stage scripts in ``stages/`` call these same commands."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

import click

from i2i.config import load_params, to_dict
from i2i.errors import I2IError
from i2i.io import write_bytes, write_json

# Each command imports the code it runs inside its function: `i2i --help` and the always-run
# stages stay torch-free, and a stage's code record (i2i.sources) holds its own command's code.

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Params file to read.",
)


def weights_fix(params_path: Path) -> str:
    """The command a stage's missing-weights warning names: fetch what these params need."""
    return f"i2i weights --params {params_path}"


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except I2IError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="i2i")
def main() -> None:
    """i2i: unpaired image-to-image translation (CycleGAN, MUNIT) as a DVC + MLflow pipeline.

    Run the whole pipeline with `dvc repro`; these commands run single stages by hand.
    """


@main.command()
@params_option
@click.option(
    "--ok",
    "ok_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Only validate; then write this file (the `params` DVC stage's output, whose "
    "content never changes, so stages that depend on it never re-run for it).",
)
@user_errors
def params(params_path: Path, ok_file: Path | None) -> None:
    """Validate a params file and print it resolved, as JSON."""
    from i2i import params_check
    from i2i.model_registry import resolve

    resolved = resolve(load_params(params_path))
    params_check.validate(resolved, str(params_path))  # what other stages check when they use it
    if ok_file is None:
        click.echo(json.dumps(to_dict(resolved), indent=2))
    elif not ok_file.is_file() or ok_file.read_text() != "valid\n":
        write_bytes(ok_file, b"valid\n")


@main.command()
@click.argument("preset", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@user_errors
def preset(preset: Path, params_path: Path) -> None:
    """Set a preset's keys (presets/*.yaml: a paper's setting) in the params file, keeping its
    other keys and comments; nothing is written unless the result is valid."""
    from i2i.presets import apply

    changed = apply(preset, params_path)
    for key, (old, new) in changed.items():
        click.echo(f"{key}: {old!r} -> {new!r}")
    click.echo(f"{params_path}: {len(changed)} values set from {preset}")


@main.command()
def datasets() -> None:
    """List the datasets data.dataset can name."""
    from i2i.data.registry import DATASETS

    for spec in DATASETS.values():
        where = {"synthetic": "generated locally", "folder": "your folder (data.path)"}.get(
            spec.source, spec.url()
        )
        click.echo(f"{spec.name:24s} {spec.layout:9s} {where}")


@main.command()
@params_option
@click.option(
    "--out",
    default="data/raw",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder to write the raw dataset to (replaced whole).",
)
@user_errors
def download(params_path: Path, out: Path) -> None:
    """Fetch or generate the dataset named by data.dataset."""
    from i2i.data.download import download as run

    info = run(load_params(params_path).data, out)
    click.echo(f"{info['name']} ({info['layout']}) from {info['origin']} -> {out}")


@main.command()
@params_option
@click.option("--raw", default="data/raw", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--report",
    default="reports/preprocess.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@user_errors
def preprocess(params_path: Path, raw: Path, out: Path, report: Path) -> None:
    """Decode, convert and resize the raw images into the fast training cache."""
    from i2i.data.preprocess import preprocess as run

    result = run(raw, out, load_params(params_path).data)
    write_json(report, result)
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    click.echo(f"{counts}; {len(result['skipped'])} skipped (see {report}) -> {out}")


@main.command()
@params_option
@click.option(
    "--data",
    default="data/prepared",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The preprocessed data.",
)
@click.option(
    "--checkpoints",
    default="checkpoints",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Checkpoint root; each configuration trains in its own sub-folder.",
)
@click.option(
    "--out",
    "models",
    default="models",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the exported generators and the MLflow run id go.",
)
@click.option(
    "--reports",
    default="reports/train",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where losses.csv (DVC plots), metrics.json (DVC metrics) and summary.json go.",
)
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Resume from this checkpoint (refused if made with other params, data or backbones).",
)
@user_errors
def train(
    params_path: Path,
    data: Path,
    checkpoints: Path,
    models: Path,
    reports: Path,
    resume: Path | None,
) -> None:
    """Train the model; an interrupted run resumes from its last checkpoint when run again."""
    from i2i.train import TrainPaths
    from i2i.train import train as run

    summary = run(load_params(params_path), TrainPaths(data, checkpoints, models, reports), resume)
    click.echo(
        f"trained {summary['iterations']} iterations on {summary['device']} "
        f"({summary['iterations_per_second']} it/s) -> {models}"
    )


@main.command()
@params_option
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    default="classifiers",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for a.pt / b.pt (replaced whole).",
)
@click.option(
    "--report",
    default="reports/classifiers.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out accuracy per domain (DVC metrics).",
)
@user_errors
def classify(params_path: Path, data: Path, out: Path, report: Path) -> None:
    """Train the domain classifiers (IS/CIS/mode coverage) on each labelled domain's classes."""
    from i2i.metrics.classifier import classify as run
    from i2i.devices import pick_device

    p = load_params(params_path)
    result = run(
        data,
        out,
        p.data.crop_size,
        p.evaluate.classifier_steps,
        p.evaluate.seed,
        pick_device(p.evaluate.device),
    )
    write_json(report, result)
    for domain, r in result.items():
        click.echo(
            f"domain {domain.upper()}: "
            + (
                f"{r['classes']} classes, held-out accuracy {r['test_accuracy']}"
                if r["trained"]
                else f"no classifier ({r['reason']})"
            )
        )


@main.command()
@params_option
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--models",
    default="models",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The train stage's output (generator.pt, run.json).",
)
@click.option(
    "--out",
    default="reports/samples",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the translations and index.html (replaced whole).",
)
@click.option("--raw", is_flag=True, help="The trained weights, not their moving average.")
@user_errors
def sample(params_path: Path, data: Path, models: Path, out: Path, raw: bool) -> None:
    """Translate the test split both ways; write the images, grids and an HTML gallery."""
    from i2i.sample import sample as run

    counts = run(load_params(params_path), data, models, out, raw)
    for direction, c in counts.items():
        click.echo(f"{direction}: {c['inputs']} inputs x {c['outputs_per_input']} outputs")
    click.echo(f"gallery: {out / 'index.html'}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--model",
    default="models/generator.pt",
    show_default=True,
    help="A generator file, a DVC experiment (or git revision) of this repository, or an "
    "MLflow URI: runs:/<run id> or models:/<name>/<version or @alias>.",
)
@click.option("--direction", required=True, type=click.Choice(["ab", "ba"]))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=click.IntRange(1), help="Resize the shorter side to this first.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--styles",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="MUNIT: this many random styles, the same for every input.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="MUNIT: the seed of the random styles.",
)
@click.option(
    "--example",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MUNIT: take the style of this image of the target domain.",
)
@click.option("--grid", is_flag=True, help="Also write grid.png: inputs down, outputs across.")
@click.option("--raw", is_flag=True, help="The trained weights, not their moving average.")
@user_errors
def translate(
    inputs: tuple[str, ...],
    model: str,
    direction: str,
    out: Path,
    size: int | None,
    batch_size: int,
    device: str,
    styles: int,
    seed: int,
    example: Path | None,
    grid: bool,
    raw: bool,
) -> None:
    """Translate images (files, folders or globs) with a trained generator."""
    from i2i.devices import pick_device
    from i2i.tracking import repository_root
    from i2i.translate import translate_cli

    report = translate_cli(
        list(inputs),
        model,
        direction,
        out,
        repository_root(),
        size=size,
        batch_size=batch_size,
        device=pick_device(device),
        styles=styles,
        seed=seed,
        example=example,
        grid=grid,
        raw=raw,
    )
    for name, why in report.skipped.items():
        click.echo(f"skipped {name}: {why}", err=True)
    click.echo(f"{len(report.written)} images written under {out}")


@main.command("export")
@click.option(
    "--model",
    default="models/generator.pt",
    show_default=True,
    help="A generator file, a DVC experiment of this repository, or an MLflow URI.",
)
@click.option("--direction", required=True, type=click.Choice(["ab", "ba"]))
@click.option("--format", "fmt", required=True, type=click.Choice(["torchscript", "onnx"]))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: exported/generator_<direction>.pt or .onnx (models/ is the train "
    "stage's DVC output).",
)
@click.option("--raw", is_flag=True, help="The trained weights, not their moving average.")
@user_errors
def export_model(model: str, direction: str, fmt: str, out: Path | None, raw: bool) -> None:
    """Export one direction as TorchScript or ONNX, checked against PyTorch at two sizes."""
    import tempfile

    from i2i.export import export
    from i2i.tracking import repository_root
    from i2i.translate import load_translator, model_file

    out = out or Path("exported") / f"generator_{direction}.{'onnx' if fmt == 'onnx' else 'pt'}"
    with tempfile.TemporaryDirectory(prefix="i2i-model-") as tmp:
        nets = load_translator(model_file(model, repository_root(), Path(tmp)), "cpu", raw)
        worst = export(nets, direction, fmt, out)
    click.echo(f"{out}: {fmt}, max |difference| from PyTorch {worst:.1e} at two input sizes")


@main.command()
@params_option
@click.option(
    "--out",
    default="reports/backbones",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the records train.json, real_features.json and evaluate.json.",
)
@user_errors
def backbones(params_path: Path, out: Path) -> None:
    """Get the pretrained backbones the params need (backbones.policy); record what each stage
    will load ({name: sha256 | random}) for DVC to track."""
    from i2i import weights
    from i2i.backbones import write_records

    records = write_records(load_params(params_path), out, weights_fix(params_path))
    for stage, record in records.items():
        used = ", ".join(f"{n} {v if v == weights.RANDOM else v[:12]}" for n, v in record.items())
        click.echo(f"{stage}: {used or 'no pretrained backbone'}")


@main.command()
@click.option(
    "--pipeline",
    default="dvc.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
@click.option(
    "--out",
    default="reports/code",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for one record per stage, <stage>.json.",
)
@user_errors
def code(pipeline: Path, out: Path) -> None:
    """Record the source files each DVC stage runs, with their hashes, for DVC to track (the
    `code` stage; a stage re-runs when a file of its record changes)."""
    from i2i.sources import write_stage_records

    for stage, record in write_stage_records(pipeline, out).items():
        click.echo(f"{stage}: {len(record['files'])} files ({record['command']})")


@main.command("real-features")
@params_option
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    default="real_features",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for test_a.npz / test_b.npz (replaced whole).",
)
@user_errors
def real_features(params_path: Path, data: Path, out: Path) -> None:
    """Inception features of the real test images, which every evaluation shares (FID, KID, IS)."""
    from i2i import backbones, weights
    from i2i.devices import pick_device
    from i2i.metrics.real_stage import real_features as run

    p = load_params(params_path)
    needed = backbones.for_real_features(p.evaluate)
    record = weights.resolve(needed, p.backbones, weights_fix(params_path))
    info = run(data, out, p.data.crop_size, p.evaluate, record, pick_device(p.evaluate.device))
    click.echo(
        ", ".join(f"{part} {n} images" for part, n in info["images"].items())
        or "evaluate.metrics use no Inception features"
    )


@main.command()
@params_option
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--models", default="models", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--classifiers", default="classifiers", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--real-features",
    "real",
    type=click.Path(file_okay=False, path_type=Path),
    help="The real_features stage's folder (default: compute the real features here).",
)
@click.option(
    "--metrics",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The scores (DVC metrics). [default: reports/metrics.json; with --model "
    "reports/<model>/metrics.json]",
)
@click.option(
    "--details",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Skipped metrics and why, timings. [default: beside --metrics, evaluate.json]",
)
@click.option("--raw", is_flag=True, help="The trained weights, not their moving average.")
@click.option(
    "--model",
    help="Score this generator instead of the train stage's: a file (also a reference's "
    "latest_net_G_A.pth or gen_*.pt), a DVC experiment or an MLflow URI. Its scores go to an "
    "MLflow run of their own.",
)
@user_errors
def evaluate(
    params_path: Path,
    data: Path,
    models: Path,
    classifiers: Path,
    real: Path | None,
    metrics: Path | None,
    details: Path | None,
    raw: bool,
    model: str | None,
) -> None:
    """Compute evaluate.metrics for A->B and B->A; log them to the training's MLflow run."""
    import re
    import tempfile

    from i2i.evaluate import EvaluatePaths
    from i2i.evaluate import evaluate as run

    if metrics is None:  # another model's scores never replace the pipeline's
        name = re.sub(r"[^\w.-]+", "-", Path(model).stem) if model else ""
        metrics = Path("reports", name, "metrics.json")
    details = details or metrics.with_name("evaluate.json")
    with tempfile.TemporaryDirectory(prefix="i2i-model-") as tmp:
        source = None
        if model:  # imported here: the evaluate stage runs without it
            from i2i.tracking import repository_root
            from i2i.translate import model_file

            source = model_file(model, repository_root(), Path(tmp))
        paths = EvaluatePaths(data, models, classifiers, metrics, details, real, raw, source)
        result = run(load_params(params_path), paths, fix=weights_fix(params_path))
    width = max(len(k) for k in result)
    for k, v in result.items():
        click.echo(f"{k:{width}s}  {v if not isinstance(v, float) else f'{v:.4f}'}")


@main.command()
@click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where tracking.uri / experiment come from.",
)
@click.option("--experiment", help="MLflow experiment (default: tracking.experiment).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only runs with this tag (repeatable).",
)
@click.option(
    "--run-id", "run_ids", multiple=True, help="These runs instead of an experiment (repeatable)."
)
@click.option(
    "--metric", "metrics", multiple=True, help="Scores to show (default: every metric/... key)."
)
@click.option("--sort", help="Sort by this score, best first, e.g. metric/content_iou/ab.")
@click.option(
    "--baseline",
    help="Compare every configuration with this one: KEY=VALUE (a param or tag, e.g. "
    "loss.vgg_w=0), an experiment name, a run id or a configuration id.",
)
@click.option("--all", "include_all", is_flag=True, help="Also unfinished and failed runs.")
@click.option(
    "--out",
    default="reports/compare.md",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--plot",
    "chart",
    default="reports/compare.png",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@user_errors
def compare(
    params_path: Path,
    experiment: str | None,
    tags: tuple[str, ...],
    run_ids: tuple[str, ...],
    metrics: tuple[str, ...],
    sort: str | None,
    baseline: str | None,
    include_all: bool,
    out: Path,
    chart: Path,
) -> None:
    """Compare configurations (runs that differ only in their seed): n, mean and 95 % interval
    of every score, the difference from a baseline with a verdict, then the single runs."""
    from i2i.compare import compare as run
    from i2i.runs import find_runs

    bad = [t for t in tags if "=" not in t]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: expected KEY=VALUE", param_hint="--tag")
    runs = find_runs(
        load_params(params_path).tracking,
        experiment,
        dict(t.split("=", 1) for t in tags),
        list(run_ids),
    )
    if not include_all and not run_ids:
        runs = [r for r in runs if r.status == "FINISHED"]
    result = run(runs, out, chart, list(metrics) or None, sort, baseline)
    click.echo(result.markdown, nl=False)
    click.echo(f"-> {out}, {chart}")


@main.command()
@click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where tracking.uri / experiment come from.",
)
@click.option("--name", required=True, help="The registered model's name.")
@click.option("--metric", required=True, help="Pick the best run by this, e.g. metric/fid/ab.")
@click.option(
    "--alias", default="champion", show_default=True, help="Point this alias at the version."
)
@click.option("--experiment", help="MLflow experiment (default: tracking.experiment).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only runs with this tag.")
@user_errors
def register(
    params_path: Path,
    name: str,
    metric: str,
    alias: str,
    experiment: str | None,
    tags: tuple[str, ...],
) -> None:
    """Register the best finished run's model in the MLflow Model Registry, under an alias."""
    from i2i.compare import best_run, lower_is_better
    from i2i.runs import find_runs
    from i2i.runs import register as run

    bad = [t for t in tags if "=" not in t]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: expected KEY=VALUE", param_hint="--tag")
    cfg = load_params(params_path).tracking
    runs = find_runs(cfg, experiment, dict(t.split("=", 1) for t in tags))
    finished = [r for r in runs if r.status == "FINISHED"]
    best = best_run(finished, metric)
    version = run(cfg, best, name, alias)
    click.echo(
        f"{best.name} ({best.run_id}): {metric} = {best.metrics[metric]:.4g} "
        f"({'lowest' if lower_is_better(metric) else 'highest'} of {len(finished)} finished runs)\n"
        f"registered as {name} version {version}" + (f", alias @{alias}" if alias else "")
    )
    click.echo(f"serve it: mlflow models serve -m models:/{name}@{alias} --env-manager local")


@main.command()
@click.argument(
    "names",
    nargs=-1,
    type=click.Choice(["vgg16", "alexnet", "squeezenet1_1", "inception_v3", "inception_fid"]),
)
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fetch the weights these params need (instead of / besides NAMES).",
)
@click.option("--list", "list_only", is_flag=True, help="Only show which files are cached.")
@user_errors
def weights(names: tuple[str, ...], params_path: Path | None, list_only: bool) -> None:
    """Fetch pretrained backbone weights into torchvision's cache."""
    from i2i import backbones
    from i2i import weights as w

    mirror, timeout = "", 60.0
    wanted = list(names)
    if params_path is not None:
        p = load_params(params_path)
        mirror, timeout = p.backbones.mirror, max(p.backbones.timeout, 60.0)
        wanted += backbones.required(p)
    if list_only:
        for name, spec in w.WEIGHTS.items():
            path = w.weights_dir() / spec.filename
            click.echo(f"{name:15s} {'cached ' if path.is_file() else 'missing'} {path}")
        return
    if not wanted:
        click.echo("no weights needed")
    for name, path in w.ensure(list(dict.fromkeys(wanted)), mirror, timeout).items():
        click.echo(f"{name}: {path}")


@main.command()
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 when a table differs from its reports."
)
@user_errors
def tables(check: bool) -> None:
    """Render the result tables of README.md and docs/ from the committed reports."""
    from i2i.doc_tables import update
    from i2i.tracking import repository_root

    changed = update(repository_root(), check)
    if check and changed:
        raise click.ClickException(
            f"{', '.join(changed)}: generated tables differ from the reports; run `i2i tables`"
        )
    click.echo(f"rewrote: {', '.join(changed)}" if changed else "up to date")


if __name__ == "__main__":
    main()


@main.group(invoke_without_command=True)
@params_option
@click.option(
    "-S",
    "--set-param",
    "sets",
    multiple=True,
    metavar="KEY=V1,V2",
    help="A params key and its values, as `dvc exp run --queue -S`; the grid is every combination.",
)
@click.option("-n", "--name", "prefix", default="sweep", show_default=True, help="Name prefix.")
@click.option("--partition", help="sbatch --partition (default: cluster.partition).")
@click.option("--account", help="sbatch --account (default: cluster.account).")
@click.option("--time", "time_limit", help="sbatch --time of one attempt (default: cluster.time).")
@click.option("--gres", help="sbatch --gres, e.g. gpu:a100:1 (default: cluster.gres).")
@click.option("--cpus-per-task", type=click.IntRange(min=1), help="Default: cluster.cpus_per_task.")
@click.option("--mem", help="sbatch --mem (default: cluster.mem).")
@click.option(
    "--signal-before", type=click.IntRange(min=0), help="Default: cluster.signal_before (s)."
)
@click.option(
    "--sbatch", "extra", multiple=True, metavar="OPTION", help="More sbatch options (repeatable)."
)
@click.pass_context
@user_errors
def sweep(ctx: click.Context, params_path: Path, sets: tuple[str, ...], prefix: str, **given: Any):
    """Submit a grid of experiments to SLURM, one job each (docs/scaling.md): every job runs
    `dvc exp run` in its own clone of this commit and pushes the experiment to the git and DVC
    remotes. Submitting again skips what finished or is still queued. `i2i sweep status` shows
    where each experiment stands."""
    import dataclasses

    from i2i import sweep as sweeps

    cluster = load_params(params_path).cluster
    extra = given.pop("extra")
    given["time"] = given.pop("time_limit")
    given = {k: v for k, v in given.items() if v is not None}
    cluster = dataclasses.replace(cluster, **given, sbatch=cluster.sbatch + extra)
    ctx.obj = (params_path, cluster)
    if ctx.invoked_subcommand is not None:
        return
    if not sets:
        raise click.UsageError("give the grid as -S KEY=V1,V2 (e.g. -S train.seed=0,1,2)")
    for d in sweeps.submit(Path.cwd(), params_path, cluster, prefix, sets):
        what = {"submitted": "submitted as job", "finished": "finished", "queued": "still in job"}
        job = f" {d.job}" if d.action != "finished" else ""
        click.echo(f"{d.experiment.name}  {' '.join(d.experiment.settings)}  {what[d.action]}{job}")


@sweep.command("status")
@click.option("--lines", default=10, show_default=True, help="Log lines shown per failed job.")
@click.pass_obj
@user_errors
def sweep_status(obj: tuple[Path, Any], lines: int) -> None:
    """Each experiment of this commit's sweeps: pending, running, requeued, finished or failed
    (with the end of its job's log)."""
    from i2i import sweep as sweeps

    _, cluster = obj
    rows = sweeps.status(Path.cwd(), cluster, tail=lines)
    if not rows:
        click.echo("no sweep at this commit")
        return
    for r in rows:
        job = r.job or "-"
        click.echo(
            f"{r.experiment.name}  {' '.join(r.experiment.settings)}  {r.state}  job {job}  "
            f"attempts {r.attempts}"
        )
        for line in r.detail.splitlines():
            click.echo(f"    {line}")
    done = [r.experiment.name for r in rows if r.state == "finished"]
    if done:
        click.echo(f"finished ones come home with: dvc exp pull {cluster.remote} {' '.join(done)}")
