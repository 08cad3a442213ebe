"""Objectives: each term against a hand computation, penalties against finite differences,
the ImagePool's semantics, and which networks each phase sends gradient to."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch
from torch import nn

from i2i.config import LossConfig, params_from_dict
from i2i.losses import (
    GANLoss,
    ImagePool,
    build_objective,
    gradient_penalty,
    r1_penalty,
)
from i2i.models import Networks, build_networks
from i2i.models.cyclegan import CycleGANObjective
from i2i.models.munit import MunitObjective
from i2i.weights import MissingWeightsError
from tests.conftest import default_params

MODES = ["lsgan", "vanilla", "wgangp", "hinge", "logistic"]


def loss_cfg(**overrides) -> LossConfig:
    return dataclasses.replace(params_from_dict(default_params()).loss, **overrides)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


R, FK = [0.5, 2.0], [-1.0, 0.3]  # real and fake logits


@pytest.mark.parametrize(
    "mode,d_expected,g_expected",
    [
        (
            "lsgan",
            ((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2 + (1 + 0.09) / 2,
            ((-1 - 1) ** 2 + (0.3 - 1) ** 2) / 2,
        ),
        (
            "vanilla",
            -(math.log(sig(0.5)) + math.log(sig(2.0))) / 2
            - (math.log(1 - sig(-1)) + math.log(1 - sig(0.3))) / 2,
            -(math.log(sig(-1)) + math.log(sig(0.3))) / 2,
        ),
        ("wgangp", (-1 + 0.3) / 2 - (0.5 + 2) / 2, -(-1 + 0.3) / 2),
        (
            "hinge",
            (max(0, 1 - 0.5) + max(0, 1 - 2)) / 2 + (max(0, 1 - 1) + max(0, 1 + 0.3)) / 2,
            -(-1 + 0.3) / 2,
        ),
        (
            "logistic",
            (math.log1p(math.exp(-1)) + math.log1p(math.exp(0.3))) / 2
            + (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-2))) / 2,
            (math.log1p(math.exp(1)) + math.log1p(math.exp(-0.3))) / 2,
        ),
    ],
)
def test_gan_losses_against_hand_computation(mode: str, d_expected: float, g_expected: float):
    gan = GANLoss(mode)
    r, f = torch.tensor(R), torch.tensor(FK)
    assert gan.discriminator(r, f).item() == pytest.approx(d_expected, rel=1e-6)
    assert gan.generator(f).item() == pytest.approx(g_expected, rel=1e-6)
    # A multi-scale discriminator's scales are summed.
    assert gan.generator([f, f * 2]).item() == pytest.approx(
        g_expected + gan.generator(f * 2).item(), rel=1e-6
    )


class TinyD(nn.Module):
    """A smooth, non-linear discriminator on [N, 1, 2, 2] images, in float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * x.mean(dim=(1, 2, 3), keepdim=True)


def numeric_grad(D: nn.Module, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central finite differences of sum(D(x_i)) with respect to each sample's pixels."""
    grad = torch.zeros_like(x)
    flat = x.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = D(x).sum().item()
            flat[i] = old - h
            down = D(x).sum().item()
            flat[i] = old
            grad.view(-1)[i] = (up - down) / (2 * h)
    return grad.flatten(1)


def test_gradient_penalty_matches_finite_differences():
    D = TinyD()
    real = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(D, real, fake, torch.Generator().manual_seed(5))
    eps = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    expected = ((numeric_grad(D, x_hat).norm(dim=1) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-6)


def test_r1_matches_finite_differences_and_is_differentiable():
    D = TinyD()
    real = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    r1 = r1_penalty(D, real)
    expected = numeric_grad(D, real.clone()).square().sum(1).mean()
    assert r1.item() == pytest.approx(expected.item(), rel=1e-6)
    r1.backward()  # the penalty trains D: it must reach D's weights
    assert D.conv.weight.grad is not None and D.conv.weight.grad.abs().sum() > 0


def test_image_pool_fills_first_then_swaps_half_the_time():
    pool = ImagePool(3, seed=0)
    img = lambda v: torch.full((1, 1, 1, 1), float(v))  # noqa: E731
    for v in range(3):  # filling: each image is stored and returned
        assert pool.query(img(v)).item() == v
    assert [t.item() for t in pool.images] == [0, 1, 2]
    # Replay the pool's seeded draws: a swap when u < 1/2 (CycleGAN's probability), then a
    # uniform slot. Every query must do exactly what its draws say.
    g = torch.Generator().manual_seed(0)
    swaps = 0
    for v in range(3, 403):
        before = [t.item() for t in pool.images]
        out = pool.query(img(v)).item()
        after = [t.item() for t in pool.images]
        if torch.rand((), generator=g) < 0.5:
            i = int(torch.randint(3, (), generator=g))
            swaps += 1
            assert out == before[i] and after == before[:i] + [v] + before[i + 1 :]
        else:
            assert out == v and after == before  # returned as is, pool unchanged
    assert 180 <= swaps <= 220  # and the draws themselves are fair


def test_image_pool_handles_batches_resumes_from_state_and_size_zero_is_identity():
    x = torch.arange(6.0).view(6, 1, 1, 1)
    assert torch.equal(ImagePool(0).query(x), x)
    pool = ImagePool(4, seed=1)
    assert torch.equal(pool.query(x[:4]), x[:4])
    state = pool.state_dict()
    clone = ImagePool(4, seed=99)
    clone.load_state_dict(state)
    batch = torch.arange(10.0, 30.0).view(20, 1, 1, 1)
    assert torch.equal(pool.query(batch), clone.query(batch))


class Scale(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def toy_cyclegan() -> Networks:
    """Generators that scale, discriminators that scale: every term has a closed form."""
    return Networks(
        "cyclegan", {"ab": Scale(0.5), "ba": Scale(3.0)}, {"a": Scale(2.0), "b": Scale(-1.0)}
    )


def test_cyclegan_terms_against_hand_computation():
    cfg = loss_cfg(
        gan_mode="lsgan", lambda_a=10.0, lambda_b=7.0, identity_w=0.5, gan_w=2.0, pool_size=0
    )
    obj = CycleGANObjective(toy_cyclegan(), cfg)
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 4.0]])
    g = obj.generator_phase({"a": a, "b": b})
    fake_b, fake_a = 0.5 * a, 3.0 * b
    t = g.terms
    assert t["loss/G/gan_ab"].item() == pytest.approx(2 * ((-1 * fake_b - 1) ** 2).mean().item())
    assert t["loss/G/gan_ba"].item() == pytest.approx(2 * ((2 * fake_a - 1) ** 2).mean().item())
    assert t["loss/G/cycle_a"].item() == pytest.approx(10 * (3.0 * fake_b - a).abs().mean().item())
    assert t["loss/G/cycle_b"].item() == pytest.approx(7 * (0.5 * fake_a - b).abs().mean().item())
    assert t["loss/G/idt_b"].item() == pytest.approx(0.5 * 7 * (0.5 * b - b).abs().mean().item())
    assert t["loss/G/idt_a"].item() == pytest.approx(0.5 * 10 * (3.0 * a - a).abs().mean().item())
    parts = [v for k, v in t.items() if k != "loss/G/total"]
    assert (
        g.loss.item() == pytest.approx(sum(parts).item()) == pytest.approx(t["loss/G/total"].item())
    )
    d = obj.discriminator_phase({"a": a, "b": b}, g.fakes)
    # Halved, times gan_w, D_b judges fake_b = G_ab(a) against real b.
    d_b = 0.5 * 2 * (((-1 * b - 1) ** 2).mean() + ((-1 * fake_b) ** 2).mean())
    d_a = 0.5 * 2 * (((2 * a - 1) ** 2).mean() + ((2 * fake_a) ** 2).mean())
    assert d.terms["loss/D/b"].item() == pytest.approx(d_b.item())
    assert d.terms["loss/D/a"].item() == pytest.approx(d_a.item())
    assert d.loss.item() == pytest.approx((d_a + d_b).item())


def count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_identity_weight_zero_skips_its_forward_passes():
    for identity_w, expected_calls, has_term in ((0.5, 3, True), (0.0, 2, False)):
        nets = toy_cyclegan()
        calls = count_calls(nets.G["ab"])
        obj = CycleGANObjective(nets, loss_cfg(identity_w=identity_w))
        g = obj.generator_phase({"a": torch.ones(1, 2), "b": torch.ones(1, 2)})
        assert calls[0] == expected_calls
        assert ("loss/G/idt_b" in g.terms) == has_term


def small_nets(name: str, **model) -> Networks:
    p = default_params()
    p["model"]["name"] = name
    p["model"][name].update(model)
    torch.manual_seed(0)
    return build_networks(params_from_dict(p).model)


def test_munit_terms_against_explicit_computation():
    # D init N(0, 0.1), not 0.02: at 0.02 D's outputs on fakes are about 1e-4, so its fake terms
    # (1e-7) would vanish next to the real ones (1) and a D judging the wrong fakes would pass.
    nets = small_nets("munit", init_gain=0.1)
    cfg = loss_cfg(recon_x_w=10.0, recon_s_w=1.5, recon_c_w=0.5, recon_x_cyc_w=3.0, gan_w=2.0)
    obj = MunitObjective(nets, cfg)
    torch.manual_seed(1)
    x_a, x_b = torch.randn(2, 3, 32, 32).tanh(), torch.randn(2, 3, 32, 32).tanh()
    s_a, s_b = torch.randn(2, 8, 1, 1), torch.randn(2, 8, 1, 1)
    g = obj.generator_phase({"a": x_a, "b": x_b}, styles=(s_a, s_b))
    G, D = nets.G, nets.D
    with torch.no_grad():
        c_a, s_a_p = G["a"].encode(x_a)
        c_b, s_b_p = G["b"].encode(x_b)
        x_ba, x_ab = G["a"].decode(c_b, s_a), G["b"].decode(c_a, s_b)
        c_b_r, s_a_r = G["a"].encode(x_ba)
        c_a_r, s_b_r = G["b"].encode(x_ab)
        expected = {
            "gan_a": 2 * sum(((o - 1) ** 2).mean() for o in D["a"](x_ba)),
            "gan_b": 2 * sum(((o - 1) ** 2).mean() for o in D["b"](x_ab)),
            "recon_x_a": 10 * (G["a"].decode(c_a, s_a_p) - x_a).abs().mean(),
            "recon_x_b": 10 * (G["b"].decode(c_b, s_b_p) - x_b).abs().mean(),
            "recon_s_a": 1.5 * (s_a_r - s_a).abs().mean(),
            "recon_s_b": 1.5 * (s_b_r - s_b).abs().mean(),
            "recon_c_a": 0.5 * (c_a_r - c_a).abs().mean(),
            "recon_c_b": 0.5 * (c_b_r - c_b).abs().mean(),
            "cyc_x_a": 3 * (G["a"].decode(c_a_r, s_a_p) - x_a).abs().mean(),
            "cyc_x_b": 3 * (G["b"].decode(c_b_r, s_b_p) - x_b).abs().mean(),
        }
    assert set(g.terms) == {f"loss/G/{k}" for k in expected} | {"loss/G/total"}
    for k, v in expected.items():
        assert g.terms[f"loss/G/{k}"].item() == pytest.approx(v.item(), rel=1e-5), k
    assert torch.allclose(g.fakes["ab"], x_ab) and torch.allclose(g.fakes["ba"], x_ba)
    d = obj.discriminator_phase({"a": x_a, "b": x_b}, g.fakes)
    d_a = 2 * sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(D["a"](x_a), D["a"](x_ba)))
    d_b = 2 * sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(D["b"](x_b), D["b"](x_ab)))
    assert d.terms["loss/D/a"].item() == pytest.approx(d_a.item(), rel=1e-5)
    assert d.terms["loss/D/b"].item() == pytest.approx(d_b.item(), rel=1e-5)  # D_b judges x_ab
    assert d.loss.item() == pytest.approx((d_a + d_b).item(), rel=1e-5)


def test_munit_cycle_weight_zero_skips_its_decodes():
    for w, decodes in ((0.0, 4), (1.0, 6)):
        nets = small_nets("munit")
        calls = count_calls(nets.G["a"].dec)
        calls_b = count_calls(nets.G["b"].dec)
        MunitObjective(nets, loss_cfg(recon_x_cyc_w=w)).generator_phase(
            {"a": torch.randn(1, 3, 32, 32), "b": torch.randn(1, 3, 32, 32)}
        )
        assert calls[0] + calls_b[0] == decodes


def grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("name", ["cyclegan", "munit"])
@pytest.mark.parametrize("mode", MODES)
def test_each_phase_trains_only_its_networks(name: str, mode: str):
    nets = small_nets(name)
    obj = build_objective(nets, loss_cfg(gan_mode=mode, r1_every=1))
    size = 64 if name == "munit" else 32
    real = {"a": torch.randn(2, 3, size, size).tanh(), "b": torch.randn(2, 3, size, size).tanh()}
    g = obj.generator_phase(real, step=0)
    g.loss.backward()
    assert all(x is not None and torch.isfinite(x).all() for x in grads(nets.G)), (
        "a generator weight got no gradient"
    )
    assert sum(x.abs().sum() for x in grads(nets.G)) > 0
    assert all(x is None for x in grads(nets.D)), (
        "the generator phase leaked gradient into a discriminator"
    )
    assert all(p.requires_grad for p in nets.D.parameters())  # unfrozen again afterwards
    nets.zero_grad(set_to_none=True)
    d = obj.discriminator_phase(real, g.fakes, step=0)
    d.loss.backward()
    assert all(x is not None and torch.isfinite(x).all() for x in grads(nets.D))
    assert all(x is None for x in grads(nets.G)), (
        "the discriminator phase leaked gradient into a generator"
    )
    if mode == "wgangp":
        assert {"loss/D/gp_a", "loss/D/gp_b"} <= set(d.terms)
    if mode == "logistic":
        assert {"loss/D/r1_a", "loss/D/r1_b"} <= set(d.terms)


def test_r1_is_lazy_and_scaled_by_its_interval():
    nets = small_nets("cyclegan")
    real = {"a": torch.randn(1, 3, 32, 32), "b": torch.randn(1, 3, 32, 32)}
    fakes = {"ab": torch.randn(1, 3, 32, 32), "ba": torch.randn(1, 3, 32, 32)}
    obj = CycleGANObjective(
        nets, loss_cfg(gan_mode="logistic", r1_gamma=4.0, r1_every=8, pool_size=0)
    )
    assert "loss/D/r1_a" not in obj.discriminator_phase(real, fakes, step=3).terms
    terms = obj.discriminator_phase(real, fakes, step=16).terms
    assert terms["loss/D/r1_a"].item() == pytest.approx(
        4.0 / 2 * 8 * r1_penalty(nets.D["a"], real["a"]).item(), rel=1e-5
    )


def test_same_seed_gives_the_same_losses():
    def run() -> dict[str, float]:
        nets = small_nets("munit")
        obj = build_objective(nets, loss_cfg(), seed=7)
        torch.manual_seed(2)
        real = {"a": torch.randn(2, 3, 64, 64), "b": torch.randn(2, 3, 64, 64)}
        g = obj.generator_phase(real)
        return {
            k: v.item()
            for k, v in {**g.terms, **obj.discriminator_phase(real, g.fakes).terms}.items()
        }

    assert run() == run()


def test_no_vgg_is_built_when_its_weight_is_zero(monkeypatch):
    import torchvision.models

    def forbidden(*args, **kwargs):
        raise AssertionError("VGG16 built although loss.vgg_w is 0")

    monkeypatch.setattr(torchvision.models, "vgg16", forbidden)
    obj = build_objective(small_nets("cyclegan"), loss_cfg(vgg_w=0.0))
    assert obj.perceptual is None


@pytest.mark.parametrize("name", ["cyclegan", "munit"])
def test_perceptual_loss_applies_to_both_models_with_a_random_vgg(name: str, caplog):
    size = 64 if name == "munit" else 32
    with caplog.at_level(logging.WARNING):
        obj = build_objective(small_nets(name), loss_cfg(vgg_w=2.0), pretrained_vgg=False)
    real = {"a": torch.randn(1, 3, size, size).tanh(), "b": torch.randn(1, 3, size, size).tanh()}
    g = obj.generator_phase(real)
    assert g.terms["loss/G/vgg_a"].item() > 0 and g.terms["loss/G/vgg_b"].item() > 0
    # vgg_b compares the translation into B with its source in A.
    expected = 2.0 * obj.perceptual(g.fakes["ab"], real["a"])
    assert g.terms["loss/G/vgg_b"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert all(not p.requires_grad for p in obj.perceptual.parameters())


def test_perceptual_loss_ignores_domain_statistics():
    from i2i.models.perceptual import PerceptualLoss

    torch.manual_seed(0)
    vgg = PerceptualLoss(pretrained=False)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert vgg(x, x).item() == pytest.approx(0.0, abs=1e-8)
    assert vgg(x, torch.rand(1, 3, 32, 32) * 2 - 1).item() > 0


def test_missing_vgg_weights_say_how_to_get_them():
    with pytest.raises(MissingWeightsError, match="i2i weights vgg16"):
        build_objective(small_nets("cyclegan"), loss_cfg(vgg_w=1.0))
