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
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from i2i import checkpoint, distributed, weights
from i2i.config import Params, to_dict
from i2i.data.loader import DomainImages, EvalImages, to_model_input, to_real_images, train_loader
from i2i.errors import I2IError
from i2i.grids import tile, translation_grid
from i2i.io import atomic_path, write_json
from i2i.losses import Objective, PhaseOutput, build_objective
from i2i.models import Networks, build_networks
from i2i.models.layers import narrow_convs_channels_last
from i2i.models.winograd import use_winograd
from i2i.optim import adam, scheduler
from i2i.progress import progress, quiet


log = logging.getLogger(__name__)


class NonFiniteLossError(I2IError, FloatingPointError):
    """Training diverged: a loss term became NaN or infinite."""


@dataclass(frozen=True)
class TrainPaths:
    data: Path  # the preprocessed cache (data/prepared)
    checkpoints: Path  # root of the per-configuration checkpoint folders
    models: Path  # exported generators and the MLflow run id
    reports: Path  # losses.csv (DVC plots) and summary.json (DVC metrics)


def pick_device(kind: str, d: distributed.Dist) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise I2IError("train.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if kind != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def compile_networks(nets: Networks, mode: str | None = None) -> None:
    """torch.compile each network in place (state-dict keys unchanged). MUNIT generators are
    called through encode/decode, so their parts are compiled instead of their forward.
    ``mode``: torch.compile's (``reduce-overhead`` adds CUDA graphs)."""
    for net in [*nets.G.values(), *nets.D.values()]:
        parts = [net.enc_style, net.enc_content, net.dec, net.mlp] if hasattr(net, "encode") else [net]
        for part in parts:
            part.compile(mode=mode)


class FiniteGuard:
    """Stops training at the first NaN or infinite loss term.

    Reading a flag makes the host wait for the device. On a CPU that costs nothing, so every
    phase is checked before its optimiser step (a diverged step never reaches the weights). On an
    accelerator the flags stay on the device, the first bad iteration is recorded there, and the
    host reads it every ``every`` iterations and before each checkpoint, so the device never
    idles waiting for the host; the checkpoint itself is only written from finite weights.
    """

    def __init__(self, device: torch.device, d: distributed.Dist, every: int):
        self.d, self.every = d, 1 if device.type == "cpu" else max(1, every)
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
        if distributed.all_finite(bad_at < 0, self.d):
            return
        terms = self.terms
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["(on another rank)"]
        where = f"iteration {bad_at + 1}" if bad_at >= 0 else "an iteration on another rank"
        raise NonFiniteLossError(
            f"training diverged at {where}: {', '.join(bad)} = "
            f"{', '.join(str(terms[k].item()) for k in bad if k in terms)}; the last good checkpoint "
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

    @classmethod
    def build(cls, params: Params, device: torch.device, reference: bool = False,
              random_vgg: bool = False) -> "Trainables":
        """The trainer's state for ``params`` on ``device``, set up for speed with the same math:
        batched passes (i2i.losses.Objective), fused Adam, and on a CPU in the default layout
        without torch.compile, the narrow output convs channels-last
        (i2i.models.layers.narrow_convs_channels_last). Paired measurements on the 2-core CPU
        (``i2i bench --paired``, README "Performance") give them together 1.10x at the default
        config and 1.01x at 128 px.
        ``reference``: the references' way instead (one call per network and batch, PyTorch's
        default Adam, one layout), the benchmarks' fp32 baseline. ``random_vgg``: the perceptual
        loss's VGG16 is seeded random instead of ImageNet's (``i2i.weights``)."""
        tp = params.train
        torch.manual_seed(tp.seed)
        nets = build_networks(params.model).to(device)
        nets.to(memory_format=torch.channels_last if tp.channels_last else torch.preserve_format)
        if device.type == "cpu" and not (reference or tp.channels_last or tp.compile):
            narrow_convs_channels_last(nets)
        if tp.winograd and not reference:
            use_winograd(nets)
        objective = build_objective(nets, params.loss, seed=tp.seed, batched=not reference,
                                    pretrained_vgg=not random_vgg).to(device)
        opt_g, opt_d = adam(nets.G, tp, fused=not reference), adam(nets.D, tp, fused=not reference)
        return cls(nets, objective, opt_g, opt_d, scheduler(opt_g, tp), scheduler(opt_d, tp),
                   torch.amp.GradScaler(device.type, enabled=tp.precision == "fp16"))

    # The same on every rank (gradients are averaged before each step).
    _PARTS = ("nets", "opt_g", "opt_d", "sched_g", "sched_d", "scaler")

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).state_dict() for k in self._PARTS}

    def rank_state(self) -> dict[str, Any]:
        """What differs between ranks: the objective's pools and generators (each rank pools its
        own fakes) and the global random state (each rank's dropout masks)."""
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        return {"objective": self.objective.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict[str, Any], device: torch.device, rank: int = 0) -> None:
        """Restore a checkpoint's trainer; this rank takes its own entry of ``state["ranks"]``."""
        for k in self._PARTS:
            getattr(self, k).load_state_dict(state[k])
        ranks = state["ranks"]
        if rank >= len(ranks):
            # Another world size: the data shards change anyway; this rank starts from rank 0's
            # random state, so the run goes on, but not as an uninterrupted one would.
            log.warning("the checkpoint holds %d process(es)' random state, not rank %d's: "
                        "it resumes from rank 0's", len(ranks), rank)
        mine = ranks[rank] if rank < len(ranks) else ranks[0]
        self.objective.load_state_dict(mine["objective"], device)
        torch.set_rng_state(mine["rng"]["torch"])
        if torch.cuda.is_available() and mine["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(mine["rng"]["cuda"])


def train_step(t: "Trainables", real: dict[str, torch.Tensor], it: int, precision: str,
               guard: FiniteGuard, d: distributed.Dist) -> tuple[PhaseOutput, PhaseOutput]:
    """One iteration: the generator phase and its optimiser step, then the discriminator phase
    on the generator phase's translations and its step, then the schedulers."""
    device = real["a"].device
    with autocast(precision, device):
        g = t.objective.generator_phase(real, it)
    guard.update(g.terms, it)
    t.opt_g.zero_grad(set_to_none=True)
    t.scaler.scale(g.loss).backward()
    distributed.average_gradients(t.nets.G, d)
    t.scaler.step(t.opt_g)
    with autocast(precision, device):
        dphase = t.objective.discriminator_phase(real, g.fakes, it)
    guard.update(dphase.terms, it)
    t.opt_d.zero_grad(set_to_none=True)
    t.scaler.scale(dphase.loss).backward()
    distributed.average_gradients(t.nets.D, d)
    t.scaler.step(t.opt_d)
    t.scaler.update()
    t.sched_g.step()
    t.sched_d.step()
    return g, dphase


def write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    keys = ["step"] + sorted({k for r in rows for k in r} - {"step"})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in r.items()})


def fixed_samples(paths: TrainPaths, params: Params, nets: Networks, device: torch.device) -> tuple[dict, torch.Tensor | None]:
    """The test inputs and style codes every sample grid of the run uses."""
    inputs = {}
    for direction, part in (("ab", "test_a"), ("ba", "test_b")):
        images = EvalImages(DomainImages(paths.data / part), params.data.crop_size)
        n = min(params.train.num_samples, len(images))
        batch = torch.stack([images[i]["x"] for i in range(n)])
        inputs[direction] = to_model_input(batch, device)
    styles = None
    if nets.name == "munit":
        g = torch.Generator().manual_seed(params.train.seed)
        styles = torch.randn(min(params.sample.num_styles, 8), params.model.munit.style_dim, 1, 1, generator=g).to(device)
    return inputs, styles


def train(params: Params, paths: TrainPaths, resume: Path | None = None) -> dict[str, Any]:
    """Train ``params``' model on the prepared data; return the summary written to summary.json."""
    from i2i.tracking import NullTracker, Tracker, run_tags

    tp = params.train
    d = distributed.setup(use_cuda=tp.device != "cpu" and torch.cuda.is_available())
    device = pick_device(tp.device, d)
    manifest_file = paths.data / "manifest.json"
    if not manifest_file.is_file():
        raise I2IError(f"{manifest_file}: no prepared data; run the download and preprocess stages first (dvc repro preprocess)")
    manifest = json.loads(manifest_file.read_text())
    data_hash = manifest["content_hash"]
    # A random VGG16 gives another result than ImageNet's: it is part of the configuration.
    backbones = weights.resolve(weights.for_training(params.loss), params.backbones,
                                announce=d.main)
    code = checkpoint.code_version()
    folder = paths.checkpoints / checkpoint.fingerprint(params, data_hash, code, backbones)
    if resume is not None:
        state = checkpoint.load(resume)
        checkpoint.check_compatible(state, params, data_hash, backbones, resume)
    else:
        state = checkpoint.latest(folder)
    start = state["iteration"] if state else 0

    t = Trainables.build(params, device, random_vgg=not weights.pretrained(backbones, "vgg16"))
    if state:
        try:
            t.load_state_dict(state, device, d.rank)
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise checkpoint.ResumeError(
                f"{resume or folder}: cannot restore the trainer from the iteration-{start} "
                f"checkpoint, made by i2i code {state.get('code')} with torch "
                f"{state.get('torch', '?')} (now {code}, torch {torch.__version__}): "
                f"{type(e).__name__}: {e}"
            ) from None
    nets, opt_g, opt_d = t.nets, t.opt_g, t.opt_d
    distributed.broadcast_state(nets, d)
    if tp.compile:
        compile_networks(nets)

    tracker = Tracker(params.tracking) if d.main else NullTracker()
    tags = run_tags() | {"dataset_hash": data_hash, "code_hash": code, "device": str(device), "precision": tp.precision,
                         "model": params.model.name, "world_size": str(d.world)}
    tags |= {f"backbone/{name}": used for name, used in backbones.items()}
    run_id = tracker.start(checkpoint.flatten(to_dict(params)), tags, run_id=state["run_id"] if state else None)
    bar = progress(total=tp.iterations, initial=start, desc=f"train {params.model.name}", unit="it")
    status = "FAILED"
    try:
        losses_csv = paths.reports / "losses.csv"
        # The rows logged so far travel in the checkpoint, so a kill between writing the checkpoint
        # and flushing them loses nothing: the CSV is rebuilt and MLflow gets what it missed.
        rows: list[dict[str, float]] = state.get("rows", []) if state else []
        if d.main:
            write_rows(losses_csv, rows)
            logged = tracker.last_step("loss/G/total") if state else 0
            tracker.log_metrics([(int(r["step"]), {k: v for k, v in r.items() if k != "step"})
                                 for r in rows if r["step"] > logged])
        pending: list[tuple[int, dict[str, float]]] = []
        inputs, styles = fixed_samples(paths, params, nets, device)
        data = iter(train_loader(paths.data, params.data, tp.batch_size, tp.seed, start, d.rank, d.world))
        guard = FiniteGuard(device, d, tp.log_every)
        began, done = time.perf_counter(), start
        for it in range(start, tp.iterations):
            batch = next(data)
            real = to_real_images(batch, device, tp.channels_last)
            g, dphase = train_step(t, real, it, tp.precision, guard, d)
            done = it + 1
            bar.update(1)

            logging = done % tp.log_every == 0 or done == tp.iterations
            if logging or done % tp.checkpoint_every == 0:
                guard.check()
            if logging:
                values = {k: v.item() for k, v in {**g.terms, **dphase.terms}.items()}
                values |= {"lr/G": opt_g.param_groups[0]["lr"], "lr/D": opt_d.param_groups[0]["lr"]}
                pending.append((done, values))
                bar.set_postfix(G=f"{values['loss/G/total']:.3f}", D=f"{values['loss/D/total']:.3f}")
            if d.main and (done % tp.sample_every == 0 or done == tp.iterations):
                grid = tile([[translation_grid(nets, inputs[k], k, styles)] for k in ("ab", "ba")], pad=8)
                tracker.log_image(grid, f"samples/{done:08d}.png")
            if done % tp.checkpoint_every == 0 or done == tp.iterations:
                ranks = distributed.gather_to_main(t.rank_state(), d)
                if d.main:
                    if not all(torch.isfinite(p).all() for p in nets.parameters()):
                        raise NonFiniteLossError(f"non-finite weights at iteration {done}; the last good checkpoint is kept")
                    new_rows = [{"step": step, **values} for step, values in pending]
                    checkpoint.save(folder, done, {
                        "config": to_dict(params), "data_hash": data_hash, "code": code,
                        "torch": str(torch.__version__), "run_id": run_id,
                        "backbones": backbones,
                        "rows": rows + new_rows, "ranks": ranks,
                        **t.state_dict(),
                    }, tp.keep_checkpoints)
                    tracker.log_metrics(pending)
                    rows += new_rows
                    write_rows(losses_csv, rows)
                    if quiet():
                        last = pending[-1][1] if pending else {}
                        print(f"iteration {done}/{tp.iterations}: G {last.get('loss/G/total', float('nan')):.4f} "
                              f"D {last.get('loss/D/total', float('nan')):.4f}", file=sys.stderr, flush=True)
                pending = []
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        if status != "FINISHED":
            tracker.end(status)
            distributed.teardown(d)

    seconds = time.perf_counter() - began
    summary = {
        "iterations": tp.iterations, "resumed_from": start, "seconds": round(seconds, 2),
        "iterations_per_second": round((done - start) / seconds, 3) if seconds > 0 and done > start else None,
        "images_per_second": round((done - start) * tp.batch_size * d.world * 2 / seconds, 3) if seconds > 0 and done > start else None,
        "device": str(device), "precision": tp.precision, "world_size": d.world,
        "backbones": backbones,  # {"vgg16": sha256 | "random"} when the perceptual loss is on
        "final": {k: round(v, 6) for k, v in (rows[-1].items() if rows else []) if k != "step"},
    }
    if d.main:
        model_file = paths.models / "generator.pt"
        checkpoint.export_generators(model_file, params.model.name, to_dict(params.model), nets.G,
                                     {"iterations": done, "run_id": run_id, "data_hash": data_hash})
        tracker.log_artifact(model_file, "model")
        write_json(paths.models / "run.json", {"run_id": run_id, "tracking_uri": tracker.uri,
                                               "experiment_id": tracker.experiment_id, "iterations": done})
        write_json(paths.reports / "summary.json", summary)
        tracker.log_metrics([(done, {"train/iterations_per_second": summary["iterations_per_second"] or 0.0})])
        tracker.end("FINISHED")
    distributed.teardown(d)
    return summary
