"""Two copies of a small CycleGAN or MUNIT with the same weights, for tests that speed up one
copy (channels-last output convs, Winograd convs) and compare it with the plain one."""
from __future__ import annotations

import torch

from i2i.config import params_from_dict
from i2i.models import Networks, build_networks
from tests.conftest import default_params


def twin_networks(name: str) -> tuple[Networks, Networks]:
    p = default_params()
    p["model"]["name"] = name
    p["model"]["cyclegan"].update(ngf=8, n_blocks=2, ndf=8)
    p["model"]["munit"].update(dim=8, mlp_dim=16, n_res=1, dis_dim=8)
    cfg = params_from_dict(p).model
    torch.manual_seed(0)
    plain, fast = build_networks(cfg), build_networks(cfg)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def translate_and_judge(nets: Networks, name: str, x: torch.Tensor) -> torch.Tensor:
    """One translation of ``x``, judged by the target discriminator, backpropagated; returns the
    translation."""
    d = "ab" if name == "cyclegan" else "a"
    g = nets.G[d](x) if name == "cyclegan" else nets.G[d].decode(*nets.G[d].encode(x))
    out = nets.D["b" if name == "cyclegan" else "a"](g)
    sum(o.square().mean() for o in (out if isinstance(out, list) else [out])).backward()
    return g


def flat_grads(nets: Networks) -> torch.Tensor:
    return torch.cat([q.grad.flatten() for q in nets.parameters() if q.grad is not None])
