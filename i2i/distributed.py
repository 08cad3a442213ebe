"""Data-parallel training under ``torchrun``: one process per device, gradients averaged.

Gradients are averaged with one all-reduce of a flat buffer per phase after backward, as
StyleGAN3's training loop does, rather than by wrapping networks in DistributedDataParallel:
the objectives call generators through ``encode``/``decode`` (not ``forward``), freeze the
discriminators during the generator phase, and differentiate through the discriminator for
gradient penalties (``torch.autograd.grad``); DDP's forward-hook bookkeeping supports none of
these cleanly. The result is the same synchronous data-parallel SGD. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(use_cuda: bool) -> Dist:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if rank == 0 and restarts_reuse_store():
        print(STALE_STORE_WARNING, file=sys.stderr, flush=True)
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


# torchrun's c10d rendezvous lends its agents' store to the workers and keeps it across
# restarts without a per-round prefix, so after a restart a worker can read its peers' addresses
# from the round before and fail to connect (pytorch/pytorch#135712). Without the shared store,
# rank 0 hosts a fresh one each round.
STALE_STORE_WARNING = (
    "WARNING: torchrun --max-restarts > 0 with its shared rendezvous store: after a restart the "
    "workers can read the previous round's addresses and fail to reconnect. Launch torchrun "
    "with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (docs/scaling.md)."
)


def restarts_reuse_store() -> bool:
    """Whether torchrun may restart this group on a store that keeps the last round's keys."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    )


def teardown(group: Dist) -> None:
    if group.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(module: nn.Module, group: Dist) -> None:
    if group.world == 1:
        return
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= group.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def broadcast_state(module: nn.Module, group: Dist) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if group.world == 1:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def gather_to_main(obj: object, group: Dist) -> list | None:
    """Every rank's ``obj`` (picklable, on the CPU), in rank order, on rank 0; None elsewhere."""
    if group.world == 1:
        return [obj]
    out = [None] * group.world if group.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def check_same(value: object, group: Dist, what: str) -> None:
    """Stop every rank with one message naming each rank's host and value when the ranks see
    different ``value``s (on several nodes: a checkpoint folder or data that is not shared)."""
    if group.world == 1:
        return
    seen: list = [None] * group.world
    dist.all_gather_object(seen, (value, socket.gethostname()))
    if len({repr(v) for v, _ in seen}) > 1:
        from i2i.errors import I2IError

        each = "; ".join(f"rank {r} on {host}: {v}" for r, (v, host) in enumerate(seen))
        raise I2IError(
            f"the ranks see different {what} ({each}): every node must see the same data "
            f"and checkpoints folder (shared storage)"
        )


def all_finite(flag: bool, group: Dist) -> bool:
    """True when ``flag`` holds on every rank (so all ranks stop together)."""
    if group.world == 1:
        return flag
    t = torch.tensor([0 if flag else 1])
    dist.all_reduce(t)
    return int(t.item()) == 0
