"""The training loop for every model: phases, mixed precision, checkpoints, resume, tracking.

Each iteration runs the objective's generator phase (discriminators frozen) and then its
discriminator phase on the translations the generator phase made, each followed by its own
optimiser step (CycleGAN's order; Zhu et al. 2017, Sec. 7.1). The loop knows nothing about the
model beyond that contract. Everything a resume needs is in the checkpoint, including every
random generator and the data position, so an interrupted run continues as if it never
stopped; losses and curves are flushed to MLflow and the plots file when a checkpoint is made,
so what they show always matches a checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from i2i import checkpoint, distributed, model_registry, weights
from i2i.backbones import for_training
from i2i.configuration import configuration_id, flatten
from i2i.config import Params, to_dict
from i2i.data.loader import (
    DomainImages,
    centre_crop,
    EvalImages,
    to_model_input,
    to_real_images,
    train_loader,
)
from i2i.devices import machine, pick_device
from i2i.errors import I2IError
from i2i.grids import tile, translation_grid
from i2i.io import write_json
from i2i.losses import Objective, PhaseOutput, build_objective
from i2i.models import Networks, build_networks
from i2i.optim import WeightAverage, adam, scheduler
from i2i.progress import progress, quiet
from i2i.stopping import StopRequest, Stopped
from i2i.tracking import run_tags
from i2i.training_log import TrainingLog
from i2i.validation import Validation


log = logging.getLogger(__name__)


class NonFiniteLossError(I2IError, FloatingPointError):
    """Training diverged: a loss term became NaN or infinite."""


@dataclass(frozen=True)
class TrainPaths:
    data: Path  # the preprocessed cache (data/prepared)
    checkpoints: Path  # root of the per-configuration checkpoint folders
    models: Path  # exported generators and the MLflow run id
    reports: Path  # losses.csv (DVC plots), metrics.json (DVC metrics), summary.json


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(
        device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16
    )


class FiniteGuard:
    """Stops training at the first NaN or infinite loss term.

    Reading a flag makes the host wait for the device. On a CPU that costs nothing, so every
    phase is checked before its optimiser step (a diverged step never reaches the weights). On an
    accelerator the flags stay on the device, the first bad iteration is recorded there, and the
    host reads it every ``every`` iterations and before each checkpoint, so the device never
    idles waiting for the host; the checkpoint itself is only written from finite weights.
    """

    def __init__(self, device: torch.device, group: distributed.Dist, every: int):
        self.group, self.every = group, 1 if device.type == "cpu" else max(1, every)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.terms: dict[str, torch.Tensor] = {}

    def update(self, terms: dict[str, torch.Tensor], iteration: int) -> None:
        ok = torch.isfinite(torch.stack([v.detach().float() for v in terms.values()])).all()
        self.first_bad = torch.where(~ok & (self.first_bad < 0), iteration, self.first_bad)
        self.terms = terms
        if self.every == 1:
            self.check()

    def check(self) -> None:
        bad_at = int(self.first_bad)
        if distributed.all_finite(bad_at < 0, self.group):
            return
        terms = self.terms
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["(on another rank)"]
        where = f"iteration {bad_at + 1}" if bad_at >= 0 else "an iteration on another rank"
        raise NonFiniteLossError(
            f"training diverged at {where}: {', '.join(bad)} = "
            f"{', '.join(str(terms[k].item()) for k in bad if k in terms)}; "
            f"the last good checkpoint "
            f"is kept. Lower train.lr, try train.precision = fp32, or another loss.gan_mode"
        )


@dataclass
class Trainables:
    """Everything a checkpoint restores besides the params: networks, objective state (image
    pools, its random generators), optimisers, schedulers, gradient scaler, global RNG."""

    nets: Networks
    objective: Objective
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: WeightAverage | None = None  # of the generators, with train.ema_images > 0

    @classmethod
    def build(
        cls, params: Params, device: torch.device, random_vgg: bool = False, world: int = 1
    ) -> "Trainables":
        """The trainer's state for ``params`` on ``device`` (one of ``world`` ranks).
        ``random_vgg``: the perceptual loss's VGG16 is seeded random instead of ImageNet's
        (``i2i.weights``)."""
        tp = params.train
        torch.manual_seed(tp.seed)
        nets = build_networks(params.model).to(device)
        nets.to(memory_format=torch.channels_last if tp.channels_last else torch.preserve_format)
        section = model_registry.resolve(params.model).section
        objective = build_objective(nets, params.loss, tp.seed, not random_vgg, section).to(device)
        opt_g, opt_d = adam(nets.generator_side, tp), adam(nets.D, tp)
        return cls(
            nets,
            objective,
            opt_g,
            opt_d,
            scheduler(opt_g, tp),
            scheduler(opt_d, tp),
            torch.amp.GradScaler(device.type, enabled=tp.precision == "fp16"),
            WeightAverage(nets.G, tp.ema_images, tp.ema_rampup, tp.batch_size * world)
            if tp.ema_images > 0
            else None,
        )

    @functools.cached_property
    def generator_side(self) -> torch.nn.Module:
        """What the generator phase trains (built once, not each step)."""
        return self.nets.generator_side

    @property
    def generators(self) -> torch.nn.Module:
        """What samples and the export use: the moving average when there is one."""
        return self.ema.module if self.ema else self.nets.G

    # The same on every rank (gradients are averaged before each step).
    _PARTS = ("nets", "opt_g", "opt_d", "sched_g", "sched_d", "scaler")

    def state_dict(self) -> dict[str, Any]:
        parts = {k: getattr(self, k).state_dict() for k in self._PARTS}
        return parts | ({"ema": self.ema.state_dict()} if self.ema else {})

    def rank_state(self) -> dict[str, Any]:
        """What differs between ranks: the objective's pools and generators (each rank pools its
        own fakes) and the global random state (each rank's dropout masks)."""
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        return {"objective": self.objective.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict[str, Any], device: torch.device, rank: int = 0) -> None:
        """Restore a checkpoint's trainer; this rank takes its own entry of ``state["ranks"]``."""
        for k in self._PARTS:
            getattr(self, k).load_state_dict(state[k])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        ranks = state["ranks"]
        if rank >= len(ranks):
            # Another world size: the data shards change anyway; this rank starts from rank 0's
            # random state, so the run goes on, but not as an uninterrupted one would.
            log.warning(
                "the checkpoint holds %d process(es)' random state, not rank %d's: "
                "it resumes from rank 0's",
                len(ranks),
                rank,
            )
        mine = ranks[rank] if rank < len(ranks) else ranks[0]
        self.objective.load_state_dict(mine["objective"], device)
        torch.set_rng_state(mine["rng"]["torch"])
        if torch.cuda.is_available() and mine["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(mine["rng"]["cuda"])


def train_step(
    t: "Trainables",
    real: dict[str, torch.Tensor],
    it: int,
    precision: str,
    guard: FiniteGuard,
    group: distributed.Dist,
) -> tuple[PhaseOutput, PhaseOutput]:
    """One iteration: the generator phase and its optimiser step, then the discriminator phase
    on the generator phase's translations and its step, then the schedulers."""
    device = real["a"].device
    with autocast(precision, device):
        g = t.objective.generator_phase(real, it)
    guard.update(g.terms, it)
    t.opt_g.zero_grad(set_to_none=True)
    t.scaler.scale(g.loss).backward()
    distributed.average_gradients(t.generator_side, group)
    t.scaler.step(t.opt_g)
    if t.ema:
        t.ema.update(t.nets.G, images=(it + 1) * t.ema.batch)
    with autocast(precision, device):
        dphase = t.objective.discriminator_phase(real, g.fakes, it)
    guard.update(dphase.terms, it)
    t.opt_d.zero_grad(set_to_none=True)
    t.scaler.scale(dphase.loss).backward()
    distributed.average_gradients(t.nets.D, group)
    t.scaler.step(t.opt_d)
    t.scaler.update()
    t.sched_g.step()
    t.sched_d.step()
    return g, dphase


def sample_inputs(
    params: Params,
    data: Path,
    style_dim: int,
    device: torch.device,
    held: dict[str, DomainImages] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The inputs and style codes (MUNIT) that every sample grid of the run shows: test images,
    or the held-out training images when there are some (the test set is then never read)."""
    inputs = {}
    for direction, part in (("ab", "test_a"), ("ba", "test_b")):
        source = held[direction[0]] if held else DomainImages(data / part)
        images = EvalImages(source, params.data.crop_size)
        n = min(params.train.num_samples, len(images))
        inputs[direction] = to_model_input(torch.stack([images[i]["x"] for i in range(n)]), device)
    styles = None
    if style_dim:
        rng = torch.Generator().manual_seed(params.train.seed)
        styles = torch.randn(min(params.sample.num_styles, 8), style_dim, 1, 1, generator=rng).to(
            device
        )
    return inputs, styles


def prepared_data_hash(data: Path) -> str:
    manifest = data / "manifest.json"
    if not manifest.is_file():
        raise I2IError(
            f"{manifest}: no prepared data; run the download and preprocess stages "
            f"first (dvc repro preprocess)"
        )
    return json.loads(manifest.read_text())["content_hash"]


def train(params: Params, paths: TrainPaths, resume: Path | None = None) -> dict[str, Any]:
    """Train ``params``' model on the prepared data; return the summary written to summary.json."""
    params = model_registry.resolve(params)
    tp = params.train
    group = distributed.setup(use_cuda=tp.device != "cpu" and torch.cuda.is_available())
    device = pick_device(tp.device, group.local_rank if group.world > 1 else None)
    data_hash = prepared_data_hash(paths.data)
    # A random VGG16 gives another result than ImageNet's: it is part of the configuration.
    backbones = weights.resolve(for_training(params.loss), params.backbones, announce=group.main)
    run = checkpoint.find_resume(params, data_hash, backbones, paths.checkpoints, resume)
    distributed.check_same((data_hash, run.start), group, "(data hash, resume iteration)")
    random_vgg = not weights.pretrained(backbones, "vgg16")
    t = Trainables.build(params, device, random_vgg, group.world)
    checkpoint.restore(t, run, device, group.rank)
    distributed.broadcast_state(t.nets, group)
    if tp.compile:
        t.nets.compile_each()
    log = TrainingLog(params.tracking, paths.reports / "losses.csv", group.main)
    flat = flatten(to_dict(params))
    config_id = configuration_id(flat)
    labels = tags(params, config_id, run.code, data_hash, device, group, backbones)
    run_id = log.start(flat, labels, run.state)
    val = Validation(params, paths.data, device) if tp.validation else None
    if val:
        val.load_state_dict((run.state or {}).get("validation"))
    held = val.held if val else None
    inputs, styles = sample_inputs(params, paths.data, t.nets.style_dim, device, held)
    shown = Networks(t.nets.name, dict(t.generators.items()), {})  # the EMA's, when on
    data = iter(loader_for(params, paths, run.start, group, val))
    guard = FiniteGuard(device, group, tp.log_every)
    bar = progress(
        total=tp.iterations, initial=run.start, desc=f"train {params.model.name}", unit="it"
    )
    began, done, status, stop = time.perf_counter(), run.start, "FAILED", StopRequest(group)
    try:
        for it in range(run.start, tp.iterations):
            real = to_real_images(next(data), device, tp.channels_last)
            g, dphase = train_step(t, real, it, tp.precision, guard, group)
            done, last = it + 1, it + 1 == tp.iterations
            bar.update(1)
            log_now = done % tp.log_every == 0 or last
            save_now = done % tp.checkpoint_every == 0 or last
            if log_now or save_now:
                guard.check()  # reads the device's flag: once per iteration at most
            if log_now:
                values = step_values(t, g, dphase)
                log.add(done, values)
                bar.set_postfix(
                    G=f"{values['loss/G/total']:.3f}", D=f"{values['loss/D/total']:.3f}"
                )
            if group.main and (done % tp.sample_every == 0 or last):
                rows = [[translation_grid(shown, inputs[k], k, styles)] for k in shown.directions]
                log.image(tile(rows, pad=8), f"samples/{done:08d}.png")
            if val and group.main and val.due(done, last):
                validate(val, shown, done, log)
            stopping = not last and stop.due(log_now or save_now)
            if save_now or stopping:
                save_checkpoint(t, run, done, params, data_hash, backbones, run_id, log, group, val)
            if stopping:
                raise stop.stopped(done, tp.iterations)
        status = "FINISHED"
    except (KeyboardInterrupt, Stopped):
        status = "KILLED"
        raise
    finally:
        stop.close()
        bar.close()
        if status != "FINISHED":
            log.end(status)
            distributed.teardown(group)

    seconds = time.perf_counter() - began
    summary = summarize(
        params, config_id, run.start, done, seconds, device, group, backbones, log.last()
    )
    if group.main:
        export(t, params, paths, done, run_id, data_hash, log)
        report(summary, val, params, paths, done, log)
    distributed.teardown(group)
    return summary


def loader_for(
    params: Params, paths: TrainPaths, start: int, group: distributed.Dist, val: Validation | None
):
    """This rank's training batches from iteration ``start``, without the held-out images."""
    tp = params.train
    keep = val.train_indices if val else None
    return train_loader(
        paths.data, params.data, tp.batch_size, tp.seed, start, group.rank, group.world, keep
    )


def tags(
    params: Params,
    config_id: str,
    code: str,
    data_hash: str,
    device: torch.device,
    group: distributed.Dist,
    backbones: dict[str, str],
) -> dict[str, str]:
    """The run's MLflow tags: its configuration, data, code, where it ran, the backbones used."""
    return (
        run_tags()
        | {
            "config_id": config_id,
            "dataset_hash": data_hash,
            "code_hash": code,
            "device": str(device),
            "precision": params.train.precision,
            "model": params.model.name,
            "world_size": str(group.world),
        }
        | {f"backbone/{name}": used for name, used in backbones.items()}
    )


def report(
    summary: dict[str, Any],
    val: Validation | None,
    params: Params,
    paths: TrainPaths,
    done: int,
    log: TrainingLog,
) -> None:
    """summary.json, the metrics `dvc exp show` lists, and the run's end in MLflow."""
    if val:
        summary["validation"] = export_best(val, params, paths)
    write_json(paths.reports / "summary.json", summary)
    # What `dvc exp show` lists beside the scores: which configuration (seeds of one setting
    # share it), speed and the final total losses.
    lean = {k: summary[k] for k in ("config_id", "iterations_per_second", "final")}
    write_json(paths.reports / "metrics.json", lean)
    log.metrics(done, {"train/iterations_per_second": summary["iterations_per_second"] or 0.0})
    log.end("FINISHED")


def step_values(t: Trainables, g: PhaseOutput, dphase: PhaseOutput) -> dict[str, float]:
    """What is logged of an iteration: every loss term and both learning rates."""
    values = {k: v.item() for k, v in {**g.terms, **dphase.terms}.items()}
    return values | {"lr/G": t.opt_g.param_groups[0]["lr"], "lr/D": t.opt_d.param_groups[0]["lr"]}


def summarize(
    params: Params,
    config_id: str,
    start: int,
    done: int,
    seconds: float,
    device: torch.device,
    group: distributed.Dist,
    backbones: dict[str, str],
    last: dict[str, float],
) -> dict[str, Any]:
    """summary.json: how the run went, and on what."""
    steps = done - start
    return {
        "config_id": config_id,
        "iterations": params.train.iterations,
        "resumed_from": start,
        "seconds": round(seconds, 2),
        "iterations_per_second": round(steps / seconds, 3) if seconds > 0 and steps else None,
        "device": str(device),
        "precision": params.train.precision,
        "world_size": group.world,
        "machine": machine(device),  # what the speed (and bit equality) depends on
        "backbones": backbones,  # {"vgg16": sha256 | "random"} when the perceptual loss is on
        "final": {k: round(last[k], 6) for k in ("loss/G/total", "loss/D/total") if k in last},
    }


def save_checkpoint(
    t: Trainables,
    run: checkpoint.Resume,
    done: int,
    params: Params,
    data_hash: str,
    backbones: dict[str, str],
    run_id: str | None,
    log: TrainingLog,
    group: distributed.Dist,
    val: Validation | None = None,
) -> None:
    """Gather every rank's random state; rank 0 writes the checkpoint, then flushes the log."""
    ranks = distributed.gather_to_main(t.rank_state(), group)
    if group.main:
        if not all(torch.isfinite(p).all() for p in t.nets.parameters()):
            raise NonFiniteLossError(
                f"non-finite weights at iteration {done}; the last good checkpoint is kept"
            )
        checkpoint.save(
            run.folder,
            done,
            {
                "config": to_dict(params),
                "data_hash": data_hash,
                "code": run.code,
                "torch": str(torch.__version__),
                "run_id": run_id,
                "backbones": backbones,
                "rows": log.to_save(),
                "ranks": ranks,
                "validation": val.state_dict() if val else None,
                **t.state_dict(),
            },
            params.train.keep_checkpoints,
        )
        if quiet():
            last = (log.to_save() or [{}])[-1]  # the last logged row, pending or sent
            print(
                f"iteration {done}/{params.train.iterations}: "
                f"G {last.get('loss/G/total', float('nan')):.4f} "
                f"D {last.get('loss/D/total', float('nan')):.4f}",
                file=sys.stderr,
                flush=True,
            )
    log.saved()


def validate(val: Validation, shown: Networks, done: int, log: TrainingLog) -> None:
    """Score the shown generators on the held-out images, log the curve, keep the best."""
    values = val.score(shown)
    log.metrics(done, values)
    val.update(done, values, shown.G)


def export_best(val: Validation, params: Params, paths: TrainPaths) -> dict[str, Any]:
    """``models/generator_best.pt``: the best iteration's generators; what summary.json says."""
    best = {"iteration": val.best["iteration"], "score": val.best["score"]}
    checkpoint.export_generators(
        paths.models / "generator_best.pt",
        params.model.name,
        to_dict(params.model),
        val.best["generators"],
        {"iterations": best["iteration"], "validation": best},
    )
    return {
        "metric": val.metric,
        "held_out": {d: len(images) for d, images in val.held.items()},
        "best_iteration": val.best["iteration"],
        "best_score": round(val.best["score"], 6),
    }


def export(
    t: Trainables,
    params: Params,
    paths: TrainPaths,
    done: int,
    run_id: str | None,
    data_hash: str,
    log: TrainingLog,
) -> None:
    """The generators (``models/generator.pt``: the moving average when there is one, and the
    trained weights beside it), logged to the run as an MLflow model (:mod:`i2i.serving`), and
    the run's id."""
    model_file = paths.models / "generator.pt"
    checkpoint.export_generators(
        model_file,
        params.model.name,
        to_dict(params.model),
        t.generators,
        {"iterations": done, "run_id": run_id, "data_hash": data_hash},
        raw=t.nets.G if t.ema else None,
    )
    example = centre_crop(DomainImages(paths.data / "train_a").image(0), params.data.crop_size)
    log.model(model_file, example)
    write_json(
        paths.models / "run.json",
        {
            "run_id": run_id,
            "tracking_uri": log.tracker.uri,
            "experiment_id": log.tracker.experiment_id,
            "iterations": done,
        },
    )
