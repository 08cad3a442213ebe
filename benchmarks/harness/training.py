"""Training-step benchmark: iterations/s, images/s, peak memory and the loader's share of a step.

A *setting* is what is trained (model, resolution, batch: the small default config, the
references' 256 px CycleGAN and MUNIT, CycleGAN at 128 px); a *mode* is how (precision, memory
layout, compiler, CUDA graphs, batch size). Each (setting, mode) runs in a fresh process (so
compile caches and memory peaks do not leak between runs) through :func:`i2i.train.train_step`,
the function the training loop runs, fed by the real loader from a preprocessed cache of
synthetic images at the setting's resolution. Every run starts from the same seed, so the losses
of its first steps can be checked against the fp32 eager baseline's.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from i2i import distributed, presets
from i2i.config import Params, params_from_dict
from i2i.errors import I2IError

PRESETS = Path(__file__).resolve().parents[2] / "presets"


def _preset(name: str) -> Callable[[dict], dict]:
    def load(base: dict) -> dict:
        return presets.overlay(base, presets.read(PRESETS / name))

    return load


def _tiny(base: dict) -> dict:
    p = copy.deepcopy(base)
    p["data"].update(load_size=32, crop_size=32, num_workers=0)
    p["model"]["cyclegan"].update(ngf=4, n_blocks=1, ndf=4)
    p["train"]["batch_size"] = 2
    return p


def _cyclegan_128(base: dict) -> dict:
    p = _preset("cyclegan_horse2zebra.yaml")(base)
    p["data"].update(load_size=143, crop_size=128)
    p["model"]["cyclegan"]["n_blocks"] = 6  # the reference's generator for 128 px
    return p


# Setting name -> params dict from the base params (params.yaml).
SETTINGS: dict[str, Callable[[dict], dict]] = {
    "tiny": _tiny,
    "default": copy.deepcopy,
    "cyclegan-128": _cyclegan_128,
    "cyclegan-256": _preset("cyclegan_horse2zebra.yaml"),
    "munit-256": _preset("munit_edges2shoes.yaml"),
}


@dataclass(frozen=True)
class Mode:
    """How a setting is trained: train.* overrides of the default trainer (fp32 eager, the
    baseline), a torch.compile mode, a batch multiplier."""

    doc: str
    train: dict[str, Any] = field(default_factory=dict)  # train.* overrides
    compile_mode: str | None = None  # torch.compile mode, with train.compile
    batch_factor: int = 1
    cuda_only: bool = False


MODES: dict[str, Mode] = {
    "fp32": Mode("fp32 eager, the default trainer: the baseline"),
    "channels_last": Mode("fp32 + channels-last memory format", {"channels_last": True}),
    "bf16": Mode("bf16 autocast", {"precision": "bf16"}),
    "fp16": Mode("fp16 autocast and gradient scaler", {"precision": "fp16"}, cuda_only=True),
    "compile": Mode("fp32 + torch.compile", {"compile": True}),
    "cudagraphs": Mode(
        "torch.compile with CUDA graphs (mode reduce-overhead)",
        {"compile": True},
        compile_mode="reduce-overhead",
        cuda_only=True,
    ),
    "batch4x": Mode("fp32, 4x the batch", batch_factor=4),
    "fast-gpu": Mode(
        "bf16 + channels-last + torch.compile",
        {"precision": "bf16", "channels_last": True, "compile": True},
        cuda_only=True,
    ),
}


def bench_params(base: dict, setting: str, mode: str, device: str) -> dict:
    """The params of one run: the setting's, on synthetic data of its resolution, with the
    mode's changes."""
    if setting not in SETTINGS:
        raise I2IError(f"unknown benchmark setting {setting!r}; choose from {', '.join(SETTINGS)}")
    if mode not in MODES:
        raise I2IError(f"unknown benchmark mode {mode!r}; choose from {', '.join(MODES)}")
    p = SETTINGS[setting](base)
    m = MODES[mode]
    p["data"]["dataset"] = "shapes"
    p["data"]["shapes"].update(
        image_size=p["data"]["load_size"],
        num_train=16 * p["train"]["batch_size"] * m.batch_factor,
        num_test=2,
    )
    p["backbones"]["policy"] = "random"  # the same compute as the ImageNet networks, no download
    p["train"].update(device=device, precision="fp32", channels_last=False, compile=False)
    p["train"].update(m.train)
    p["train"]["batch_size"] *= m.batch_factor
    return p


def prepared_data(params: Params, cache: Path) -> Path:
    """A preprocessed cache of synthetic images for ``params.data``, made once per resolution."""
    from i2i.data.download import download
    from i2i.data.preprocess import preprocess

    cfg = params.data
    folder = (
        cache
        / f"shapes-{cfg.shapes.image_size}-{cfg.load_size}-{cfg.crop_size}-{cfg.shapes.num_train}"
    )
    if not (folder / "prepared" / "manifest.json").is_file():
        download(cfg, folder / "raw")
        preprocess(folder / "raw", folder / "prepared", cfg)
    return folder / "prepared"


def reset_peak_rss() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on a CPU), so that a clock read after it is
    exact."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(params: Params, mode: Mode, iterations: int, group: distributed.Dist) -> tuple:
    """What a benchmark run trains: the device, the mode's Trainables (compiled when asked) and a
    NaN guard read once at the end."""
    from i2i.devices import pick_device
    from i2i.train import FiniteGuard, Trainables

    tp = params.train
    device = pick_device(tp.device, group.local_rank)
    t = Trainables.build(params, device, random_vgg=True)
    if tp.compile:
        t.nets.compile_each(mode.compile_mode)
    return device, t, FiniteGuard(device, group, every=iterations)


def _batches(params: Params, data: Path):
    """The real loader's batches for ``params``."""
    from i2i.data.loader import train_loader

    return iter(train_loader(data, params.data, params.train.batch_size, params.train.seed))


def _capped(n: int, seconds: float, step: Callable[[int], None], start: int = 0) -> int:
    """``step(start)``, ``step(start + 1)``, ... ``n`` times, or fewer (at least one) once they have
    taken ``seconds``; returns how many ran."""
    began, done = time.perf_counter(), 0
    while done < n and not (done and time.perf_counter() - began > seconds):
        step(start + done)
        done += 1
    return done


def run_one(
    params: Params,
    mode: Mode,
    data: Path,
    steps: int,
    warmup: int,
    max_seconds: float = float("inf"),
) -> dict[str, Any]:
    """Train ``warmup`` + ``steps`` iterations in this process; time the last ``steps`` (on a CPU
    by their median step time, on an accelerator over the whole window). A very slow mode (bf16
    on a CPU without bf16 instructions) does not hold the run up: the warmup and the timed steps
    each end early, after at least one step, once they have taken half of ``max_seconds``; the
    result says how many of each ran."""
    from torch.utils.flop_counter import FlopCounterMode

    from i2i.data.loader import to_real_images
    from i2i.train import train_step

    tp, group = params.train, distributed.Dist()
    device, t, guard = _trainer(params, mode, warmup + steps, group)
    batches = _batches(params, data)
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[list[float]] = []
    step_times: list[float] = []
    flops = None
    began = time.perf_counter()
    warmup_s = loader_s = 0.0

    def step(i: int, warm: bool) -> None:
        nonlocal loader_s, flops
        t0 = time.perf_counter()
        real = to_real_images(next(batches), device, tp.channels_last)
        loader_s += time.perf_counter() - t0
        # Count once, eagerly: compiled code hides its operators, so a compiled run is credited
        # with the fp32 run's count (bench_training), the same math.
        if i == 0 and not tp.compile:
            with FlopCounterMode(display=False) as counter:
                g, dphase = train_step(t, real, i, tp.precision, guard, group)
            flops = counter.get_total_flops()
        else:
            g, dphase = train_step(t, real, i, tp.precision, guard, group)
        if warm:  # reading them waits for the device: only outside the timed steps
            losses.append([g.terms["loss/G/total"].item(), dphase.terms["loss/D/total"].item()])
        else:
            step_times.append(time.perf_counter() - t0)

    warmup = _capped(warmup, max_seconds / 2, lambda i: step(i, warm=True))
    sync(device)
    warmup_s, loader_s, began = time.perf_counter() - began, 0.0, time.perf_counter()
    steps = _capped(steps, max_seconds / 2, lambda i: step(i, warm=False), start=warmup)
    sync(device)
    seconds = time.perf_counter() - began
    loader_share, loader_ms = loader_s / seconds, 1000 * loader_s / steps
    if device.type == "cpu":
        # A CPU step ends when its last operation does, so each step's time is exact: the median
        # keeps one slow step (another process, the collector) from moving the result.
        seconds = statistics.median(step_times) * steps
    guard.check()
    images = steps * tp.batch_size * 2
    cuda_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "flops_per_iteration": flops,
        "achieved_tflops": flops * steps / seconds / 1e12 if flops else None,
        "iterations_per_second": steps / seconds,
        "images_per_second": images / seconds,
        "step_ms": 1000 * seconds / steps,
        "loader_share": loader_share,
        "loader_ms": loader_ms,
        "warmup_s": warmup_s,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_max_allocated_mb": cuda_mb,
        "first_losses": losses,
        "batch_size": tp.batch_size,
        "device": str(device),
        "warmup_steps": warmup,
        "timed_steps": steps,
        "threads": torch.get_num_threads(),
    }


def run_paired(
    params: Params,
    mode: Mode,
    baseline_params: Params,
    baseline: Mode,
    data: Path,
    steps: int,
    warmup: int,
    max_seconds: float = float("inf"),
) -> dict[str, Any]:
    """The mode and the baseline trained side by side in this process, alternating iterations on
    the same batches (which of the two goes first swaps every iteration), each iteration timed on
    its own. A slow spell of a shared machine then slows both members of a pair alike, so the
    ratios baseline time / mode time are paired measurements: their median is the speedup and
    their quartiles its spread, far tighter than a comparison of separate runs. ``max_seconds``:
    as in :func:`run_one`, for the warm-up and the timed pairs."""
    from i2i.data.loader import to_real_images
    from i2i.train import train_step

    group = distributed.Dist()
    device, t, guard = _trainer(params, mode, warmup + steps, group)
    _, t0, guard0 = _trainer(baseline_params, baseline, warmup + steps, group)
    batches = _batches(params, data)
    runners = [(t0, guard0, baseline_params.train), (t, guard, params.train)]
    pairs: list[list[float]] = []

    def step(i: int, timed: bool) -> None:
        batch = next(batches)
        times = [0.0, 0.0]
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            tr, g, tp = runners[k]
            real = to_real_images(batch, device, tp.channels_last)
            sync(device)
            began = time.perf_counter()
            train_step(tr, real, i, tp.precision, g, group)
            sync(device)
            times[k] = time.perf_counter() - began
        if timed:
            pairs.append(times)

    warmup = _capped(warmup, max_seconds / 2, lambda i: step(i, timed=False))
    _capped(steps, max_seconds / 2, lambda i: step(i, timed=True), start=warmup)
    guard.check()
    guard0.check()
    return {"pairs": pairs, "warmup_steps": warmup}


def paired_summary(pairs: list[list[float]]) -> dict[str, Any]:
    """Speedup (median of baseline / mode time per pair), its quartiles, and both median step
    times."""
    ratios = sorted(b / m for b, m in pairs)
    q = (
        statistics.quantiles(ratios, n=4, method="inclusive")
        if len(ratios) > 1
        else [ratios[0]] * 3
    )
    return {
        "speedup": statistics.median(ratios),
        "q25": q[0],
        "q75": q[2],
        "pairs": len(pairs),
        "baseline_step_ms": 1000 * statistics.median(b for b, _ in pairs),
        "step_ms": 1000 * statistics.median(m for _, m in pairs),
    }


def profile_one(
    params: Params, mode: Mode, data: Path, steps: int, warmup: int, rows: int = 20
) -> str:
    """torch.profiler's table of the operators that take the most time over ``steps`` iterations."""
    from torch.profiler import ProfilerActivity, profile

    from i2i.data.loader import to_real_images
    from i2i.train import train_step

    tp, group = params.train, distributed.Dist()
    device, t, guard = _trainer(params, mode, warmup + steps, group)
    batches = _batches(params, data)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def step(i: int) -> None:
        train_step(
            t,
            to_real_images(next(batches), device, tp.channels_last),
            i,
            tp.precision,
            guard,
            group,
        )

    for i in range(warmup):
        step(i)
    with profile(activities=activities, record_shapes=True) as prof:
        for i in range(warmup, warmup + steps):
            step(i)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    # By input shapes: each convolution layer on its own line, so the table says which layers cost
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by=key, row_limit=rows, max_name_column_width=34, max_shapes_column_width=64
    )


def profile_training(
    base: dict, setting: str, mode: str, device: str, steps: int, warmup: int, cache: Path
) -> str:
    """The profile table of one (setting, mode), from its own process."""
    p = bench_params(base, setting, mode, device)
    data = prepared_data(params_from_dict(p, f"benchmark {setting}/{mode}"), cache)
    request = {
        "params": p,
        "mode": mode,
        "data": str(data),
        "steps": steps,
        "warmup": warmup,
        "profile": True,
    }
    try:
        profile = _in_worker(request)["profile"]
    except I2IError as e:
        raise I2IError(f"profiling {setting}/{mode} failed: {e}") from None
    return f"{setting}, mode {mode}, {steps} iterations:\n" + profile


def _in_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Run ``request`` in a fresh process (:func:`_worker`) and return what it printed last; on a
    failure, an I2IError with the last line of its error output."""
    root = str(PRESETS.parent)  # the harness is the repository's, not the package's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness.training"],
        env=env,
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise I2IError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class TrainResult:
    setting: str
    mode: str
    status: str  # ok | skipped | failed
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    loss_rel_diff: float | None = (
        None  # max relative difference of the warm-up losses to the baseline's
    )
    step1_rel_diff: float | None = None  # the same for the first iteration alone (the same weights)
    paired: dict[str, Any] | None = (
        None  # speedup over the baseline in one process (paired_summary)
    )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def loss_differences(losses: list[list[float]], baseline: list[list[float]]) -> tuple[float, float]:
    """Max relative difference of (G, D) losses to the baseline's: over every warm-up iteration,
    and in the first. The first iteration runs on identical weights, so it shows the mode's
    rounding alone; after it, Adam's first steps move each weight by about lr times the sign of
    its gradient, so gradients that are rounding noise (a conv bias before instance norm has a
    zero gradient in exact arithmetic) move weights by a full lr either way, and later losses
    differ by more than the rounding of one step."""

    def rel(a: list[float], b: list[float]) -> float:
        return max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))

    return max(rel(a, b) for a, b in zip(losses, baseline)), rel(losses[0], baseline[0])


def _run(
    base: dict,
    setting: str,
    mode: str,
    device: str,
    steps: int,
    warmup: int,
    cache: Path,
    max_seconds: float,
    paired_with: str | None = None,
) -> TrainResult:
    """One run in its own process; ``paired_with``: a baseline mode trained beside it
    (run_paired)."""
    p = bench_params(base, setting, mode, device)
    if MODES[mode].cuda_only and not (device != "cpu" and torch.cuda.is_available()):
        return TrainResult(setting, mode, "skipped", "needs CUDA")
    data = prepared_data(params_from_dict(p, f"benchmark {setting}/{mode}"), cache)
    request = {
        "params": p,
        "mode": mode,
        "data": str(data),
        "steps": steps,
        "warmup": warmup,
        "max_seconds": max_seconds,
    }
    if paired_with:
        request |= {
            "baseline": paired_with,
            "baseline_params": bench_params(base, setting, paired_with, device),
        }
    try:
        return TrainResult(setting, mode, "ok", result=_in_worker(request))
    except I2IError as e:
        return TrainResult(setting, mode, "failed", str(e))


def bench_training(
    base: dict,
    settings: list[str],
    modes: list[str],
    device: str,
    steps: int,
    warmup: int,
    cache: Path | None = None,
    echo: Callable[[str], None] = print,
    max_seconds: float = float("inf"),
    repeats: int = 1,
    paired: bool = False,
) -> list[TrainResult]:
    """Every (setting, mode), each in its own process; the losses compared to the setting's fp32
    run.

    ``paired``: each mode that trains the baseline's batch size also runs beside the fp32 baseline
    in one process (:func:`run_paired`, after its own run, in every repeat); the ratios of all its
    pairs give its speedup and spread.

    ``repeats``: the whole list runs this many times, round-robin, so that a slow spell of a shared
    machine hits every mode alike; each (setting, mode) keeps its fastest repeat (noise only ever
    slows a run down, as timeit's documentation argues) and lists every repeat's images/s.
    ``max_seconds``: see :func:`run_one`."""
    runs: dict[tuple[str, str], list[TrainResult]] = {}
    pairs: dict[tuple[str, str], list[list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="i2i-bench-") as tmp:
        cache = cache or Path(tmp)
        for rep in range(repeats):
            for setting in settings:
                for mode in modes:
                    r = _run(base, setting, mode, device, steps, warmup, cache, max_seconds)
                    runs.setdefault((setting, mode), []).append(r)
                    tag = f" (repeat {rep + 1}/{repeats})" if repeats > 1 else ""
                    if r.status == "ok":
                        x = r.result
                        echo(
                            f"{setting:13s} {mode:13s} {x['iterations_per_second']:8.2f} it/s "
                            f"{x['images_per_second']:8.1f} img/s  "
                            f"loader {100 * x['loader_share']:.1f}%{tag}"
                        )
                    elif rep == 0:
                        echo(f"{setting:13s} {mode:13s} {r.status}: {r.reason}")
                    if (
                        paired
                        and r.status == "ok"
                        and mode != "fp32"
                        and MODES[mode].batch_factor == 1
                    ):
                        args = (base, setting, mode, device, steps, warmup, cache, max_seconds)
                        found = _paired_run(args, echo, tag)
                        pairs.setdefault((setting, mode), []).extend(found)
    return _collect(settings, modes, runs, pairs)


def _paired_run(args: tuple, echo: Callable[[str], None], tag: str) -> list[list[float]]:
    """One mode beside the fp32 baseline in one process: the pairs of step times it measured."""
    setting, mode = args[1], args[2]
    pr = _run(*args, paired_with="fp32")
    if pr.status == "ok":
        ps = paired_summary(pr.result["pairs"])
        echo(
            f"{setting:13s} {mode:13s} paired with fp32: {ps['speedup']:.2f}x "
            f"(quartiles {ps['q25']:.2f}-{ps['q75']:.2f}, "
            f"{ps['pairs']} pairs){tag}"
        )
    else:
        echo(f"{setting:13s} {mode:13s} paired run {pr.status}: {pr.reason}")
    return pr.result.get("pairs", [])


def _collect(
    settings: list[str],
    modes: list[str],
    runs: dict[tuple[str, str], list[TrainResult]],
    pairs: dict[tuple[str, str], list[list[float]]],
) -> list[TrainResult]:
    """Each (setting, mode)'s fastest repeat, with the paired speedup, FLOPs borrowed from the
    setting's fp32 run at the same batch size, and the losses compared to it."""
    results = []
    for setting in settings:
        baseline = None
        for mode in modes:
            tries = runs[(setting, mode)]
            ok = [r for r in tries if r.status == "ok"]
            if not ok:
                results.append(tries[0])
                continue
            r = max(ok, key=lambda r: r.result["images_per_second"])
            r.result["repeats_images_per_second"] = [x.result["images_per_second"] for x in ok]
            if pairs.get((setting, mode)):
                r.paired = paired_summary(pairs[(setting, mode)])
            if (
                r.result["flops_per_iteration"] is None
                and baseline
                and r.result["batch_size"] == baseline.result["batch_size"]
            ):
                r.result["flops_per_iteration"] = flops = baseline.result["flops_per_iteration"]
                r.result["achieved_tflops"] = flops * r.result["iterations_per_second"] / 1e12
            if mode == "fp32":
                baseline = r
            elif baseline and r.result["batch_size"] == baseline.result["batch_size"]:
                r.loss_rel_diff, r.step1_rel_diff = loss_differences(
                    r.result["first_losses"], baseline.result["first_losses"]
                )
            results.append(r)
    return results


def _worker() -> None:
    request = json.loads(sys.stdin.read())
    params = params_from_dict(request["params"], "benchmark")
    mode, data = MODES[request["mode"]], Path(request["data"])
    if request.get("baseline"):
        baseline_params = params_from_dict(request["baseline_params"], "benchmark baseline")
        result = run_paired(
            params,
            mode,
            baseline_params,
            MODES[request["baseline"]],
            data,
            request["steps"],
            request["warmup"],
            request["max_seconds"],
        )
        print(json.dumps(result))
        return
    args = (params, mode, data, request["steps"], request["warmup"])
    result = (
        profile_one(*args) if request.get("profile") else run_one(*args, request["max_seconds"])
    )
    print(json.dumps({"profile": result} if request.get("profile") else result))


if __name__ == "__main__":
    _worker()
