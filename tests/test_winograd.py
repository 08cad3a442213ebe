"""Winograd F(4x4, 3x3) convolutions (i2i.models.winograd): the same convolution and gradients as
PyTorch's within fp32 rounding, only where they apply, and filters re-transformed after every
weight update."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from i2i.cache import kernels_dir
from i2i.models import kernels
from i2i.models.winograd import WinogradConv2d, use_winograd, winograd_conv3x3
from tests.network_twins import flat_grads, translate_and_judge, twin_networks


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref).abs().max() / ref.abs().max())


@pytest.fixture(autouse=True)
def two_threads():
    """The C kernels split work among OpenMP threads (chunks of tiles, planes, channels), so their
    tests run with two even where the suite gives each worker one (tests/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_kernels():
    """kernels.winograd() built afresh in this test's own cache (and again after it)."""
    kernels.winograd.cache_clear()
    yield
    kernels.winograd.cache_clear()


@pytest.mark.parametrize("transforms", ["c", "pytorch"])
# The last shape has 143 tiles per plane and 286 per channel: the C kernels' chunks of 128 tiles
# end inside a plane and span two images.
@pytest.mark.parametrize("n,cin,cout,h,w", [(2, 16, 16, 8, 8), (3, 5, 7, 12, 8), (1, 32, 8, 4, 16), (2, 4, 3, 52, 44)])
def test_output_and_gradients_are_the_convolutions(n, cin, cout, h, w, transforms, monkeypatch):
    if transforms == "pytorch":
        monkeypatch.setattr(kernels, "winograd", lambda: None)
    else:
        assert kernels.winograd() is not None  # a C compiler is part of the CPU setup (torch.compile needs one too)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, h + 2, w + 2, generator=g)
    k = torch.randn(cout, cin, 3, 3, generator=g) / (9 * cin) ** 0.5
    b = torch.randn(cout, generator=g)
    dy = torch.randn(n, cout, h, w, generator=g)
    # float64 reference
    ref = [t.double().requires_grad_() for t in (x, k, b)]
    y_ref = F.conv2d(*ref)
    y_ref.backward(dy.double())
    # fp32: Winograd and PyTorch's direct conv, each against the float64 reference
    errs = {}
    for name, fn in (("direct", F.conv2d), ("winograd", winograd_conv3x3)):
        args = [t.clone().requires_grad_() for t in (x, k, b)]
        y = fn(*args)
        y.backward(dy)
        errs[name] = [rel_err(y, y_ref)] + [rel_err(a.grad, r.grad) for a, r in zip(args, ref)]
    assert max(errs["winograd"]) < 5e-5, errs  # fp32 rounding (the direct conv's: ~2e-6)
    assert max(errs["direct"]) < 1e-5, errs


def test_gradcheck_in_float64():
    g = torch.Generator().manual_seed(1)
    x, k, b = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
               for s in ((2, 2, 6, 10), (3, 2, 3, 3), (3,)))
    assert torch.autograd.gradcheck(winograd_conv3x3, (x, k, b))
    assert torch.autograd.gradcheck(lambda x, k: winograd_conv3x3(x, k), (x, k))  # without a bias


@pytest.mark.parametrize("name", ["cyclegan", "munit"])
def test_networks_keep_their_parameters_and_outputs(name: str):
    plain, fast = twin_networks(name)
    # the residual blocks' convs, two per block: CycleGAN 2 blocks per generator, MUNIT 1 in the
    # content encoder and 1 in the decoder; two generators
    assert use_winograd(fast) == 2 * 2 * 2
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    outs = [translate_and_judge(nets, name, x) for nets in (plain, fast)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    grads = [flat_grads(nets) for nets in (plain, fast)]
    assert len(grads[0]) == len(grads[1]) and (grads[1] - grads[0]).norm() <= 1e-4 * grads[0].norm()


def test_only_plain_3x3_stride_1_convs_are_swapped():
    net = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2),
                        nn.Conv2d(4, 4, 5), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                        nn.Conv2d(4, 4, 3, groups=2), nn.ConvTranspose2d(4, 4, 3))
    assert use_winograd(net) == 2
    assert [type(m) is WinogradConv2d for m in net] == [True, True] + [False] * 5


def test_falls_back_to_pytorch_where_winograd_does_not_apply():
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 8, 3, padding=1)
    fast = nn.Conv2d(8, 8, 3, padding=1)
    fast.load_state_dict(plain.state_dict())
    use_winograd(fast)
    x = torch.randn(2, 8, 12, 12)
    assert not torch.equal(fast(x), plain(x))  # 12x12 output: Winograd
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    # sides not multiples of 4, channels-last, float64, autocast: PyTorch's conv, bit for bit
    for c in (torch.randn(2, 8, 10, 10), x.contiguous(memory_format=torch.channels_last)):
        assert torch.equal(fast(c), plain(c))
    assert torch.equal(fast.double()(x.double()), plain.double()(x.double()))
    fast.float(), plain.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fast(x), plain(x))


@pytest.mark.parametrize("fused", [False, True])
def test_transformed_filters_follow_weight_updates(fused: bool):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3)
    use_winograd(conv)
    opt = torch.optim.Adam(conv.parameters(), lr=0.1, fused=fused)
    x = torch.randn(1, 8, 10, 10)
    for _ in range(2):
        opt.zero_grad()
        conv(x).square().mean().backward()
        opt.step()  # in place: the next call must transform the new weights
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias), rtol=1e-4, atol=1e-5)
    other = nn.Conv2d(8, 8, 3)
    conv.load_state_dict(other.state_dict())
    torch.testing.assert_close(conv(x), other(x), rtol=1e-4, atol=1e-5)


def test_c_kernels_are_compiled_once_per_cache(fresh_kernels):
    assert kernels.winograd() is not None
    (lib,) = kernels_dir().glob("winograd-*.so")
    built = lib.stat().st_mtime_ns
    kernels.winograd.cache_clear()  # as a new process
    assert kernels.winograd() is not None
    assert list(kernels_dir().iterdir()) == [lib] and lib.stat().st_mtime_ns == built


def test_a_failing_compiler_falls_back_to_pytorch_with_a_warning(fresh_kernels, tmp_path, monkeypatch):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: no such instruction set' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    with pytest.warns(RuntimeWarning, match="no such instruction set.*slower PyTorch"):
        assert kernels.winograd() is None
    assert not kernels_dir().exists() or not list(kernels_dir().iterdir())  # no half-built library left
    x, k = torch.randn(2, 4, 10, 10), torch.randn(4, 4, 3, 3) / 6
    torch.testing.assert_close(winograd_conv3x3(x, k), F.conv2d(x, k), rtol=1e-4, atol=1e-5)


def test_the_operator_passes_pytorchs_custom_op_checks():
    """Fake (meta) shapes, autograd registration and schema, as torch.compile relies on them."""
    g = torch.Generator().manual_seed(2)
    x, k, b = (torch.randn(*s, generator=g, requires_grad=True) for s in ((2, 3, 10, 6), (5, 3, 3, 3), (5,)))
    torch.library.opcheck(torch.ops.i2i.winograd_forward.default, (x, k, b))
    torch.library.opcheck(torch.ops.i2i.winograd_forward.default, (x, k, None))


def test_torch_compile_keeps_the_winograd_operator_whole():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    use_winograd(conv)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    from torch._dynamo.backends.common import aot_autograd

    compiled = torch.compile(conv, backend=aot_autograd(fw_compiler=backend, bw_compiler=backend), fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    calls = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert "i2i.winograd_forward.default" in calls and "i2i.winograd_backward.default" in calls
    grads = [x.grad, conv.weight.grad, conv.bias.grad]
    x.grad = conv.weight.grad = conv.bias.grad = None
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, [x.grad, conv.weight.grad, conv.bias.grad]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
