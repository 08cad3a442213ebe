"""3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016), for CPU training.

A direct 3x3 convolution spends 9 multiply-adds per input channel on each output pixel;
F(4x4, 3x3) computes each 4x4 output tile from a 6x6 input tile with 36, i.e. 2.25 per pixel:
the input tiles and the filters are transformed (V = B^T d B, U = G g G^T), multiplied
position by position with one batched matrix product over the channels (M = U V), and
transformed back (Y = A^T M A). The result is the same convolution with a different rounding
(measured against float64: about 1e-5 relative in fp32, a few times the direct conv's 2e-6;
cuDNN's fp32 Winograd algorithms make the same trade). The backward pass is the exact adjoint of
these steps, so input, weight and bias gradients are the convolution's.

The tile and filter transforms run as C kernels (winograd_kernels.c, compiled on first use by
i2i/models/kernels.py; PyTorch formulations of the same steps where no C compiler works, and
for other dtypes); the products are PyTorch's bmm. Forward and backward are custom operators,
so torch.compile calls them whole (like a conv) and fuses the padding and norms around them.
On the 2-core CPU this speeds up the residual blocks' convs at the default config (64 channels
on 16x16 maps) and at 128 px (256 channels; benchmark: `i2i bench --setting default --mode tuned
--mode winograd --mode fast-cpu --paired`). The convolution falls back to PyTorch's own
wherever Winograd does not apply: other devices, dtypes or layouts, autocast, or outputs whose
sides are not multiples of 4.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from i2i.models import kernels

# F(4x4, 3x3) with interpolation points 0, +-1, +-2 and infinity (Lavin & Gray 2016, Sec. 4.2).
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
TILE, SPAN = 4, 6  # output tile side, input tile side


def _kron(m: list[list[float]]) -> torch.Tensor:
    a = torch.tensor(m, dtype=torch.float64)
    return torch.kron(a, a)  # the 2-D transform X -> M X M^T on row-major flattened tiles


# 36x36 (input tiles), 36x9 (filters), 16x36 (output tiles), in float64; per dtype below.
_TRANSFORMS = (_kron(_BT), _kron(_G), _kron(_AT))
_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}


def transforms(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(KB, KG, KA) in ``dtype`` on ``device``."""
    key = (dtype, device)
    if key not in _cache:
        _cache[key] = tuple(t.to(dtype=dtype, device=device) for t in _TRANSFORMS)
    return _cache[key]  # type: ignore[return-value]


def _c(t: torch.Tensor):
    """The C kernels where they compute on ``t`` (CPU fp32), else None (the PyTorch formulations below)."""
    return kernels.winograd() if t.device.type == "cpu" and t.dtype == torch.float32 else None


def _p(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def filter_transform(w: torch.Tensor) -> torch.Tensor:
    """U = G g G^T of each 3x3 filter: [Co, Ci, 3, 3] -> [36, Co, Ci]."""
    co, ci = w.shape[:2]
    lib = _c(w)
    if lib is not None:
        w = w.detach().contiguous()
        u = w.new_empty(36, co, ci)
        lib.filter_transform(_p(w), _p(u), co * ci)
        return u
    _, kg, _ = transforms(w.dtype, w.device)
    return (kg @ w.reshape(co * ci, 9).t()).view(36, co, ci)


def _filter_adjoint(du: torch.Tensor) -> torch.Tensor:
    """dw = G^T dU G: [36, Co, Ci] -> [Co, Ci, 3, 3]."""
    _, co, ci = du.shape
    lib = _c(du)
    if lib is not None:
        du = du.contiguous()
        dw = du.new_empty(co, ci, 3, 3)
        lib.filter_adjoint(_p(du), _p(dw), co * ci)
        return dw
    _, kg, _ = transforms(du.dtype, du.device)
    return (kg.t() @ du.reshape(36, -1)).t().reshape(co, ci, 3, 3)


def _input_transform(x: torch.Tensor) -> torch.Tensor:
    """V = B^T d B of every 6x6 tile (stride 4) of x [N, C, Hp, Wp]: [36, C, tiles], tiles in (n, th, tw) order."""
    n, c, hp, wp = x.shape
    nh, nw = (hp - 2) // TILE, (wp - 2) // TILE
    lib = _c(x)
    if lib is not None:
        x = x.contiguous()
        v = x.new_empty(36, c, n * nh * nw)
        lib.input_transform(_p(x), _p(v), n, c, hp, wp)
        return v
    kb, _, _ = transforms(x.dtype, x.device)
    tiles = F.unfold(x, SPAN, stride=TILE).view(n * c, 36, nh * nw)  # each tile's 36 values, row-major
    v = torch.matmul(kb, tiles)
    return v.view(n, c, 36, nh * nw).permute(2, 1, 0, 3).reshape(36, c, n * nh * nw)


def _input_adjoint(dv: torch.Tensor, n: int, hp: int, wp: int) -> torch.Tensor:
    """dx [N, C, Hp, Wp]: B dV B^T of every tile, added up where tiles overlap (the adjoint of _input_transform)."""
    c = dv.shape[1]
    nh, nw = (hp - 2) // TILE, (wp - 2) // TILE
    lib = _c(dv)
    if lib is not None:
        dv = dv.contiguous()
        dx = dv.new_empty(n, c, hp, wp)
        lib.input_adjoint(_p(dv), _p(dx), n, c, hp, wp)
        return dx
    kb, _, _ = transforms(dv.dtype, dv.device)
    dtiles = (kb.t() @ dv.reshape(36, -1)).view(36, c, n, nh * nw).permute(2, 1, 0, 3).reshape(n, c * 36, nh * nw)
    return F.fold(dtiles, (hp, wp), SPAN, stride=TILE)


def _output_transform(m: torch.Tensor, b: torch.Tensor | None, n: int, nh: int, nw: int) -> torch.Tensor:
    """y [N, Co, 4 nh, 4 nw] = A^T M A (+ b) of every tile of M [36, Co, tiles]."""
    co = m.shape[1]
    lib = _c(m)
    if lib is not None:
        m = m.contiguous()
        b = None if b is None else b.detach().contiguous()
        y = m.new_empty(n, co, nh * TILE, nw * TILE)
        lib.output_transform(_p(m), _p(b), _p(y), n, co, nh, nw)
        return y
    _, _, ka = transforms(m.dtype, m.device)
    y = (ka @ m.reshape(36, -1)).view(TILE, TILE, co, n, nh, nw)
    y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, co, nh * TILE, nw * TILE)
    return y if b is None else y.add_(b.view(1, -1, 1, 1))


def _output_adjoint(dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dM [36, Co, tiles], db [Co]): A dY A^T of every 4x4 tile of dy (the adjoint of
    _output_transform), and dy summed over each channel (the bias gradient, in the same pass)."""
    n, co, h, w = dy.shape
    nh, nw = h // TILE, w // TILE
    lib = _c(dy)
    if lib is not None:
        dy = dy.contiguous()
        dm, db = dy.new_empty(36, co, n * nh * nw), dy.new_empty(co)
        lib.output_adjoint(_p(dy), _p(dm), _p(db), n, co, nh, nw)
        return dm, db
    _, _, ka = transforms(dy.dtype, dy.device)
    dy_tiles = dy.reshape(n, co, nh, TILE, nw, TILE).permute(3, 5, 1, 0, 2, 4).reshape(TILE * TILE, -1)
    return (ka.t() @ dy_tiles).view(36, co, n * nh * nw), dy.sum((0, 2, 3))


def applies(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether winograd_conv3x3 computes conv2d(x, w) here (else PyTorch's conv should)."""
    h, wd = x.shape[-2] - 2, x.shape[-1] - 2
    return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32 and x.dim() == 4
            and h >= TILE and wd >= TILE and h % TILE == 0 and wd % TILE == 0
            and x.is_contiguous() and not torch.is_autocast_enabled("cpu"))


# Two custom operators, so that torch.compile calls them as they are (opaque, like a conv) instead
# of tracing the tile transforms into its own kernels: the forward returns V and U too, for the
# backward to reuse.
@torch.library.custom_op("i2i::winograd_forward", mutates_args=())
def _forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, _, hp, wp = x.shape
    u = filter_transform(w)  # [36, co, c]
    v = _input_transform(x)  # [36, c, tiles]
    m = torch.bmm(u, v)  # [36, co, tiles]: per position, one product over the channels
    return _output_transform(m, b, n, (hp - 2) // TILE, (wp - 2) // TILE), v, u


@_forward.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, c, hp, wp = x.shape
    tiles = n * ((hp - 2) // TILE) * ((wp - 2) // TILE)
    return x.new_empty(n, w.shape[0], hp - 2, wp - 2), x.new_empty(36, c, tiles), w.new_empty(36, w.shape[0], c)


@torch.library.custom_op("i2i::winograd_backward", mutates_args=())
def _backward(dy: torch.Tensor, v: torch.Tensor, u: torch.Tensor, hp: int, wp: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dw, db): the exact adjoint of _forward's steps."""
    dm, db = _output_adjoint(dy)
    return (_input_adjoint(torch.bmm(u.transpose(1, 2), dm), dy.shape[0], hp, wp),
            _filter_adjoint(torch.bmm(dm, v.transpose(1, 2))), db)


@_backward.register_fake
def _(dy: torch.Tensor, v: torch.Tensor, u: torch.Tensor, hp: int, wp: int
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (dy.new_empty(dy.shape[0], v.shape[1], hp, wp), u.new_empty(u.shape[1], u.shape[2], 3, 3),
            dy.new_empty(dy.shape[1]))


def _setup_context(ctx, inputs, output) -> None:
    x, _, b = inputs
    _, v, u = output
    ctx.save_for_backward(v, u)
    ctx.size = x.shape[-2:]
    ctx.has_bias = b is not None
    ctx.set_materialize_grads(False)  # V and U are outputs only for the backward: no zero gradients for them


def _autograd(ctx, dy, _dv, _du):
    if dy is None:
        return None, None, None
    v, u = ctx.saved_tensors
    dx, dw, db = _backward(dy.contiguous(), v, u, *ctx.size)
    return dx, dw, db if ctx.has_bias else None


_forward.register_autograd(_autograd, setup_context=_setup_context)


def winograd_conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(x, w, b) for 3x3 filters, stride 1, no padding, by F(4x4, 3x3); differentiable
    (the weight gradient comes from the transformed domain, not through filter_transform).
    On any device and float dtype; WinogradConv2d uses it only where applies(x, w)."""
    if w.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_conv3x3 needs 3x3 filters, got {tuple(w.shape)}")
    return _forward(x, w, b)[0]


class WinogradConv2d(nn.Conv2d):
    """An nn.Conv2d (3x3, stride 1, zero or no padding) computed by winograd_conv3x3 where it
    applies. The filters are transformed on every call: a cache keyed on the weight's version
    would go stale, as fused optimisers update weights in place without bumping it."""

    def _conv_forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        p = self.padding[0]
        if p:
            x = F.pad(x, (p, p, p, p))
        if not applies(x, w):
            return F.conv2d(x, w, b)
        return winograd_conv3x3(x, w, b)


def eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.groups == 1 and m.padding in ((0, 0), (1, 1)) and m.padding_mode == "zeros")


def use_winograd(module: nn.Module) -> int:
    """Turn every plain 3x3 stride-1 nn.Conv2d of ``module`` into a WinogradConv2d, in place
    (parameters, state-dict keys and outputs within fp32 rounding unchanged); returns how many."""
    n = 0
    for m in module.modules():
        if eligible(m):
            m.__class__ = WinogradConv2d
            n += 1
    return n
