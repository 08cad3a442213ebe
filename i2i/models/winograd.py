"""3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016), for CPU training.

A direct 3x3 convolution spends 9 multiply-adds per input channel on each output pixel;
F(4x4, 3x3) computes each 4x4 output tile from a 6x6 input tile with 36, i.e. 2.25 per pixel:
the input tiles and the filters are transformed (V = B^T d B, U = G g G^T), multiplied
position by position with one batched matrix product over the channels (M = U V), and
transformed back (Y = A^T M A). The result is the same convolution with a different rounding
(measured against float64: about 1e-5 relative in fp32, a few times the direct conv's 2e-6;
cuDNN's fp32 Winograd algorithms make the same trade). The backward pass is the exact adjoint of
these steps, so input, weight and bias gradients are the convolution's.

On the 2-core CPU this halves the time of the residual blocks' 256-channel convs at 128 px and up
(benchmark: `i2i bench --setting cyclegan-128 --mode tuned --mode winograd --paired`); at the
default config's 64 channels on 16x16 maps the transforms cost what the products save. The
convolution falls back to PyTorch's own wherever Winograd does not apply: other devices, dtypes
or layouts, autocast, torch.compile tracing, or outputs whose sides are not multiples of 4.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def filter_transform(w: torch.Tensor) -> torch.Tensor:
    """U = G g G^T of each 3x3 filter: [Co, Ci, 3, 3] -> [36, Co, Ci]."""
    co, ci = w.shape[:2]
    _, kg, _ = transforms(w.dtype, w.device)
    return (kg @ w.reshape(co * ci, 9).t()).view(36, co, ci)


def applies(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether winograd_conv3x3 computes conv2d(x, w) here (else PyTorch's conv should)."""
    h, wd = x.shape[-2] - 2, x.shape[-1] - 2
    return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32 and x.dim() == 4
            and h >= TILE and wd >= TILE and h % TILE == 0 and wd % TILE == 0
            and x.is_contiguous() and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


class _Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        kb, _, ka = transforms(x.dtype, x.device)
        u = filter_transform(w)  # [36, co, c]
        n, c, hp, wp = x.shape
        co = w.shape[0]
        nh, nw = (hp - 2) // TILE, (wp - 2) // TILE
        tiles = F.unfold(x, SPAN, stride=TILE).view(n * c, 36, nh * nw)  # each tile's 36 values, row-major
        v = torch.matmul(kb, tiles)  # V = B^T d B
        v = v.view(n, c, 36, nh * nw).permute(2, 1, 0, 3).reshape(36, c, n * nh * nw)  # per position: channels x tiles
        m = torch.bmm(u, v)  # [36, co, tiles]
        y = (ka @ m.view(36, -1)).view(TILE, TILE, co, n, nh, nw)  # Y = A^T M A
        y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, co, nh * TILE, nw * TILE)
        if b is not None:
            y.add_(b.view(1, -1, 1, 1))
        ctx.save_for_backward(v, u)
        ctx.dims = (n, c, hp, wp, co, nh, nw)
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        v, u = ctx.saved_tensors
        n, c, hp, wp, co, nh, nw = ctx.dims
        kb, kg, ka = transforms(dy.dtype, dy.device)
        dy_tiles = dy.reshape(n, co, nh, TILE, nw, TILE).permute(3, 5, 1, 0, 2, 4).reshape(TILE * TILE, -1)
        dm = (ka.t() @ dy_tiles).view(36, co, n * nh * nw)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dv = torch.bmm(u.transpose(1, 2), dm)  # [36, c, tiles]
            dtiles = (kb.t() @ dv.view(36, -1)).view(36, c, n, nh * nw).permute(2, 1, 0, 3).reshape(n, c * 36, nh * nw)
            dx = F.fold(dtiles, (hp, wp), SPAN, stride=TILE)  # overlapping tiles add up
        if ctx.needs_input_grad[1]:
            du = torch.bmm(dm, v.transpose(1, 2))  # [36, co, c]
            dw = (kg.t() @ du.view(36, -1)).t().reshape(co, c, 3, 3)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3))
        return dx, dw, db


def winograd_conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(x, w, b) for 3x3 filters, stride 1, no padding, by F(4x4, 3x3); differentiable
    (the weight gradient comes from the transformed domain, not through filter_transform).
    On any device and float dtype; WinogradConv2d uses it only where applies(x, w)."""
    if w.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_conv3x3 needs 3x3 filters, got {tuple(w.shape)}")
    return _Winograd.apply(x, w, b)


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
