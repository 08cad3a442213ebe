"""Networks: fidelity to the references, output shapes, size errors, norms, init, determinism."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from i2i.config import params_from_dict
from i2i.models import build_networks
from i2i.models.cyclegan import (
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UnetGenerator,
)
from i2i.models.layers import InputSizeError, init_weights
from i2i.models.munit import MultiScaleDiscriminator, MunitGenerator
from tests.conftest import default_params


def shapes(m: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in m.parameters()]


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cout: int, cin: int, k: int) -> list[tuple[int, ...]]:
    return [(cout, cin, k, k), (cout,)]


def convT(cin: int, cout: int, k: int) -> list[tuple[int, ...]]:
    return [(cin, cout, k, k), (cout,)]  # ConvTranspose2d stores [in, out, k, k]


# The reference architectures, written out by reading the reference code layer by layer:
# junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py (ResnetGenerator, NLayerDiscriminator,
# UnetGenerator) and NVlabs/MUNIT networks.py (AdaINGen: StyleEncoder, ContentEncoder, Decoder,
# MLP; MsImageDis), commit 1337c26, at the papers' settings (CycleGAN: ngf 64, 9 blocks, ndf 64;
# MUNIT edges2shoes: dim 64, style_dim 8, n_downsample 2, n_res 4, mlp_dim 256, dis n_layer 4,
# 3 scales). Neither paper states parameter counts: the counts below are the sums of these
# shapes, so they check our modules against this transcription, shape by shape.
RESNET_9 = (
    conv(64, 3, 7)
    + conv(128, 64, 3)
    + conv(256, 128, 3)
    + conv(256, 256, 3) * 18
    + convT(256, 128, 3)
    + convT(128, 64, 3)
    + conv(3, 64, 7)
)
BASIC_D = (
    conv(64, 3, 4) + conv(128, 64, 4) + conv(256, 128, 4) + conv(512, 256, 4) + conv(1, 512, 4)
)
MUNIT_STYLE = (
    conv(64, 3, 7) + conv(128, 64, 4) + conv(256, 128, 4) + conv(256, 256, 4) * 2 + conv(8, 256, 1)
)
MUNIT_CONTENT = conv(64, 3, 7) + conv(128, 64, 4) + conv(256, 128, 4) + conv(256, 256, 3) * 8
# The decoder's LayerNorm scale and shift follow each upsampling conv here; NVlabs/MUNIT's
# Conv2dBlock registers them before it (same shapes, another order).
MUNIT_DECODER = (
    conv(256, 256, 3) * 8
    + conv(128, 256, 5)
    + [(128,), (128,)]
    + conv(64, 128, 5)
    + [(64,), (64,)]
    + conv(3, 64, 7)
)
MUNIT_MLP = [(256, 8), (256,), (256, 256), (256,), (4096, 256), (4096,)]
MUNIT_D_SCALE = (
    conv(64, 3, 4) + conv(128, 64, 4) + conv(256, 128, 4) + conv(512, 256, 4) + conv(1, 512, 1)
)


def test_cyclegan_resnet9_generator_matches_the_reference():
    g = ResnetGenerator(ngf=64, n_blocks=9, norm="instance")
    assert shapes(g) == RESNET_9
    assert count(g) == 11_378_179


def test_cyclegan_resnet6_generator_matches_the_reference():
    assert count(ResnetGenerator(ngf=64, n_blocks=6)) == 7_837_699


def test_cyclegan_basic_discriminator_matches_the_reference():
    d = NLayerDiscriminator(ndf=64, n_layers=3, norm="instance")
    assert shapes(d) == BASIC_D
    assert count(d) == 2_764_737


def test_unet_generators_match_the_reference_counts():
    assert (
        count(UnetGenerator(8, 64, norm="batch")) == 54_413_955
    )  # pix2pix's unet_256 (batch norm)
    assert count(UnetGenerator(8, 64, norm="instance")) == 54_409_603
    assert count(UnetGenerator(7, 64, norm="instance")) == 41_825_667


def test_munit_edges2shoes_networks_match_the_reference():
    g = MunitGenerator(
        dim=64, style_dim=8, n_downsample=2, n_res=4, mlp_dim=256, act="relu", pad_type="reflect"
    )
    assert shapes(g) == MUNIT_STYLE + MUNIT_CONTENT + MUNIT_DECODER + MUNIT_MLP
    assert count(g) == 15_026_187
    d = MultiScaleDiscriminator(dim=64, n_layer=4, num_scales=3, norm="none")
    assert shapes(d) == MUNIT_D_SCALE * 3
    assert count(d) == 8_271_171


@pytest.mark.parametrize("h,w", [(32, 32), (64, 64), (48, 80)])
def test_cyclegan_output_shapes(h: int, w: int):
    x = torch.randn(2, 3, h, w)
    assert ResnetGenerator(ngf=8, n_blocks=2)(x).shape == (2, 3, h, w)
    assert NLayerDiscriminator(ndf=8, n_layers=3)(x).shape == (2, 1, h // 8 - 2, w // 8 - 2)
    assert NLayerDiscriminator(ndf=8, n_layers=2)(x).shape == (2, 1, h // 4 - 2, w // 4 - 2)
    assert PixelDiscriminator(ndf=8)(x).shape == (2, 1, h, w)
    y = ResnetGenerator(ngf=8, n_blocks=1)(x)
    assert y.min() >= -1 and y.max() <= 1  # tanh output


def test_unet_output_shapes():
    assert UnetGenerator(7, ngf=4)(torch.randn(1, 3, 128, 128)).shape == (1, 3, 128, 128)
    assert UnetGenerator(7, ngf=4)(torch.randn(1, 3, 128, 256)).shape == (1, 3, 128, 256)
    assert UnetGenerator(8, ngf=2)(torch.randn(1, 3, 256, 256)).shape == (1, 3, 256, 256)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_munit_shapes(size: int):
    g = MunitGenerator(dim=8, style_dim=5, n_downsample=2, n_res=2, mlp_dim=16)
    x = torch.randn(3, 3, size, size)
    c, s = g.encode(x)
    assert c.shape == (3, 32, size // 4, size // 4)
    assert s.shape == (3, 5, 1, 1)
    assert g.random_style(3).shape == (3, 5, 1, 1)
    assert g.decode(c, g.random_style(3)).shape == (3, 3, size, size)
    d = MultiScaleDiscriminator(dim=8, n_layer=3, num_scales=2)
    assert [o.shape for o in d(torch.randn(2, 3, size, size))] == [
        (2, 1, size // 8, size // 8),
        (2, 1, size // 16, size // 16),
    ]


def test_munit_style_changes_the_output_and_content_is_kept_by_shape():
    torch.manual_seed(0)
    g = MunitGenerator(dim=8, style_dim=4, n_downsample=2, n_res=2, mlp_dim=16)
    c, _ = g.encode(torch.randn(1, 3, 32, 32))
    y1, y2 = g.decode(c, g.random_style(1)), g.decode(c, g.random_style(1))
    assert not torch.allclose(y1, y2)
    with pytest.raises(ValueError, match=r"style code must be \[N, 4, 1, 1\]"):
        g.decode(c, torch.randn(1, 4))


@pytest.mark.parametrize(
    "net,x,expected",
    [
        (
            ResnetGenerator(ngf=4, n_blocks=1),
            torch.randn(1, 3, 30, 30),
            "cannot process 30x30 images; height and width must be multiples of 4 (e.g. 4, 8",
        ),
        (UnetGenerator(8, ngf=2), torch.randn(1, 3, 128, 128), "multiples of 256"),
        (NLayerDiscriminator(ndf=4), torch.randn(1, 3, 16, 16), "must be at least 24"),
        (
            MultiScaleDiscriminator(dim=4, n_layer=4, num_scales=3),
            torch.randn(1, 3, 32, 32),
            "must be at least 64",
        ),
        (
            MunitGenerator(dim=4, n_res=1, mlp_dim=8).encode,
            torch.randn(1, 3, 34, 34),
            "multiples of 4",
        ),
        (
            ResnetGenerator(ngf=4, n_blocks=1),
            torch.randn(1, 1, 32, 32),
            "expected 3 channels, got 1",
        ),
        (
            ResnetGenerator(ngf=4, n_blocks=1),
            torch.randn(3, 32, 32),
            "expected a batch of images [N, C, H, W]",
        ),
    ],
)
def test_unsupported_input_sizes_are_clear_errors(net, x: torch.Tensor, expected: str):
    with pytest.raises(InputSizeError) as e:
        net(x)
    assert expected in str(e.value)


def test_norm_options_and_the_reference_bias_rule():
    inst, batch = (
        ResnetGenerator(ngf=8, n_blocks=1, norm="instance"),
        ResnetGenerator(ngf=8, n_blocks=1, norm="batch"),
    )
    none = ResnetGenerator(ngf=8, n_blocks=1, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in inst.modules())
    assert all(
        not m.affine and not m.track_running_stats
        for m in inst.modules()
        if isinstance(m, nn.InstanceNorm2d)
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in batch.modules()) == 7
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in none.modules())
    convs = [m for m in batch.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [m.bias is not None for m in convs] == [False] * (len(convs) - 1) + [
        True
    ]  # output conv keeps its bias
    d = NLayerDiscriminator(ndf=8, norm="batch")
    assert [m.bias is not None for m in d.modules() if isinstance(m, nn.Conv2d)] == [
        True,
        False,
        False,
        False,
        True,
    ]


def test_dropout_option():
    assert any(
        isinstance(m, nn.Dropout)
        for m in ResnetGenerator(ngf=4, n_blocks=2, dropout=True).modules()
    )
    assert not any(isinstance(m, nn.Dropout) for m in ResnetGenerator(ngf=4, n_blocks=2).modules())
    assert (
        sum(isinstance(m, nn.Dropout) for m in UnetGenerator(8, ngf=2, dropout=True).modules()) == 3
    )


def test_init_schemes():
    net = nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(128), nn.Linear(256, 64))
    torch.manual_seed(0)
    init_weights(net, "normal", 0.02)
    assert abs(net[0].weight.std().item() - 0.02) < 0.001 and net[0].bias.abs().max() == 0
    assert abs(net[1].weight.mean().item() - 1.0) < 0.01 and net[1].bias.abs().max() == 0
    init_weights(net, "kaiming")
    assert abs(net[0].weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.003
    init_weights(net, "xavier", 1.0)
    assert abs(net[2].weight.std().item() - (2 / (256 + 64)) ** 0.5) < 0.005
    init_weights(net, "orthogonal", 0.5)
    w = net[2].weight  # [64, 256]: rows orthogonal with norm = gain
    assert torch.allclose(w @ w.T, 0.25 * torch.eye(64), atol=1e-5)


@pytest.mark.parametrize("name", ["cyclegan", "munit"])
def test_orthogonal_and_xavier_gains_follow_each_reference(name: str):
    """CycleGAN (networks.init_weights) uses init_gain as the gain; MUNIT (utils.weights_init)
    uses sqrt(2) whatever its gaussian std."""
    p = default_params()
    p["model"]["name"] = name
    section = p["model"][name]
    section["init"] = "orthogonal"
    if name == "munit":
        section["dis_init"] = "orthogonal"
    gain = 0.02 if name == "cyclegan" else 2**0.5
    torch.manual_seed(0)
    nets = build_networks(params_from_dict(p).model)
    convs = [m for m in nets.G.modules() if isinstance(m, nn.Conv2d)]
    w = convs[1].weight.flatten(1)  # rows orthogonal with norm = gain when rows <= columns
    assert w.shape[0] <= w.shape[1]
    assert torch.allclose(w @ w.T, gain**2 * torch.eye(w.shape[0]), atol=1e-5)


def test_build_from_params_is_seeded_and_translates_both_ways():
    for name in ("cyclegan", "munit"):
        p = default_params()
        p["model"]["name"] = name
        cfg = params_from_dict(p).model
        torch.manual_seed(3)
        first = build_networks(cfg)
        torch.manual_seed(3)
        second = build_networks(cfg)
        assert all(
            torch.equal(x, y)
            for x, y in zip(first.state_dict().values(), second.state_dict().values())
        )
        assert sorted(first.D) == ["a", "b"]
        x = torch.randn(2, 3, 64, 64)
        style = torch.randn(2, 1, 8, 1, 1) if name == "munit" else None
        for direction in ("ab", "ba"):
            y = first.translate(x, direction, style)[:, 0]
            assert y.shape == x.shape and torch.equal(
                y, second.translate(x, direction, style)[:, 0]
            )


def test_cyclegan_takes_no_style_and_directions_are_checked():
    nets = build_networks(params_from_dict(default_params()).model)
    with pytest.raises(ValueError, match="deterministic"):
        nets.translate(torch.randn(1, 3, 64, 64), "ab", torch.randn(1, 8, 1, 1))
    with pytest.raises(ValueError, match="direction"):
        nets.translate(torch.randn(1, 3, 64, 64), "aa")


def test_generator_choices_from_params():
    p = default_params()
    p["model"]["cyclegan"].update(generator="unet_128", discriminator="pixel")
    nets = build_networks(params_from_dict(p).model)
    assert isinstance(nets.G["ab"], UnetGenerator) and isinstance(nets.D["b"], PixelDiscriminator)
    p["model"]["cyclegan"].update(generator="resnet", discriminator="n_layers", n_layers_d=2)
    cfg = params_from_dict(p).model
    assert build_networks(cfg).D["a"].n_layers == 2
    p["model"]["name"] = "munit"
    assert build_networks(params_from_dict(p).model).name == "munit"


@pytest.mark.parametrize("dis_norm", ["none", "in", "ln"])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_munit_norm_and_padding_options(dis_norm: str, padding: str):
    p = default_params()
    p["model"]["name"] = "munit"
    p["model"]["munit"].update(dis_norm=dis_norm, padding=padding, activation="lrelu")
    nets = build_networks(params_from_dict(p).model)
    x = torch.randn(2, 3, 64, 64)
    assert nets.translate(x, "ab").shape == (x.shape[0], 1, *x.shape[1:])
    assert [o.shape[1] for o in nets.D["b"](x)] == [1, 1]
    norms = {type(m).__name__ for m in nets.D["b"].modules()}
    assert ({"in": "InstanceNorm2d", "ln": "LayerNorm"}.get(dis_norm, "Identity")) in norms
