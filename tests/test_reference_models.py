"""The references' released generator files are read by `--model`: junyanz's CycleGAN
``*_net_G_A.pth`` / ``*_net_G_B.pth`` and NVlabs' MUNIT ``gen_*.pt``.

The weights cannot be downloaded here, so the files are written by modules built with the
references' module names and layer order (junyanz/pytorch-CycleGAN-and-pix2pix
``models/networks.py``: ResnetGenerator, ResnetBlock; NVlabs/MUNIT ``networks.py``: AdaINGen,
StyleEncoder, ContentEncoder, Decoder, ResBlocks, ResBlock, MLP, LinearBlock, Conv2dBlock,
LayerNorm, AdaptiveInstanceNorm2d). Their forward passes follow the references' too, so the
tests check that i2i's network with the mapped weights computes what the reference's would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from i2i.errors import I2IError
from i2i.models import load_generators
from tests.conftest import save_image

BIN = Path(sys.executable).parent


# --- junyanz's ResnetGenerator, as its state dict is laid out -------------------------------
class JunyanzResnetBlock(nn.Module):
    def __init__(self, dim: int, dropout: bool):
        super().__init__()
        layers = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
        ] + ([nn.Dropout(0.5)] if dropout else [])
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class JunyanzResnetGenerator(nn.Module):
    def __init__(self, ngf: int = 8, n_blocks: int = 3, dropout: bool = False):
        super().__init__()
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
        layers += [JunyanzResnetBlock(ngf * 4, dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 4 // 2**i
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1),
                nn.InstanceNorm2d(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


# --- NVlabs' AdaINGen, as its state dict is laid out ----------------------------------------
class AdaptiveInstanceNorm2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.num_features, self.weight, self.bias = c, None, None
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x):
        b, c = x.shape[:2]
        return F.instance_norm(x) * self.weight.view(b, c, 1, 1) + self.bias.view(b, c, 1, 1)


class LayerNorm(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(c))
        self.beta = nn.Parameter(torch.rand(c))

    def forward(self, x):
        flat = x.view(x.shape[0], -1)
        shape = (-1, 1, 1, 1)
        x = (x - flat.mean(1).view(shape)) / (flat.std(1).view(shape) + 1e-5)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class Conv2dBlock(nn.Module):
    def __init__(self, cin, cout, k, s, p, norm="none", act="relu"):
        super().__init__()
        self.pad = nn.ReflectionPad2d(p)
        norms = {
            "in": lambda: nn.InstanceNorm2d(cout),
            "ln": lambda: LayerNorm(cout),
            "adain": lambda: AdaptiveInstanceNorm2d(cout),
            "none": lambda: None,
        }
        self.norm = norms[norm]()
        self.activation = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "none": None}[act]
        self.conv = nn.Conv2d(cin, cout, k, s)

    def forward(self, x):
        x = self.conv(self.pad(x))
        x = self.norm(x) if self.norm else x
        return self.activation(x) if self.activation else x


class ResBlock(nn.Module):
    def __init__(self, dim, norm):
        super().__init__()
        self.model = nn.Sequential(
            Conv2dBlock(dim, dim, 3, 1, 1, norm), Conv2dBlock(dim, dim, 3, 1, 1, norm, "none")
        )

    def forward(self, x):
        return x + self.model(x)


def res_blocks(n, dim, norm):
    blocks = nn.Module()
    blocks.model = nn.Sequential(*[ResBlock(dim, norm) for _ in range(n)])
    blocks.forward = blocks.model.forward
    return blocks


class LinearBlock(nn.Module):
    def __init__(self, cin, cout, act="relu"):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.activation = nn.ReLU() if act == "relu" else None

    def forward(self, x):
        return self.activation(self.fc(x)) if self.activation else self.fc(x)


class AdaINGen(nn.Module):
    def __init__(self, dim=8, style_dim=4, n_downsample=2, n_res=2, mlp_dim=16):
        super().__init__()
        style = [Conv2dBlock(3, dim, 7, 1, 3)]
        d = dim
        for _ in range(2):
            style, d = style + [Conv2dBlock(d, 2 * d, 4, 2, 1)], 2 * d
        style += [Conv2dBlock(d, d, 4, 2, 1) for _ in range(2)]
        self.enc_style = nn.Module()
        self.enc_style.model = nn.Sequential(
            *style, nn.AdaptiveAvgPool2d(1), nn.Conv2d(d, style_dim, 1)
        )
        content, d = [Conv2dBlock(3, dim, 7, 1, 3, "in")], dim
        for _ in range(n_downsample):
            content, d = content + [Conv2dBlock(d, 2 * d, 4, 2, 1, "in")], 2 * d
        self.enc_content = nn.Module()
        self.enc_content.model = nn.Sequential(*content, res_blocks(n_res, d, "in"))
        dec = [res_blocks(n_res, d, "adain")]
        for _ in range(n_downsample):
            dec, d = (
                dec + [nn.Upsample(scale_factor=2), Conv2dBlock(d, d // 2, 5, 1, 2, "ln")],
                d // 2,
            )
        self.dec = nn.Module()
        self.dec.model = nn.Sequential(*dec, Conv2dBlock(d, 3, 7, 1, 3, "none", "tanh"))
        n_adain = sum(
            2 * m.num_features for m in self.modules() if isinstance(m, AdaptiveInstanceNorm2d)
        )
        self.mlp = nn.Module()
        self.mlp.model = nn.Sequential(
            LinearBlock(style_dim, mlp_dim),
            LinearBlock(mlp_dim, mlp_dim),
            LinearBlock(mlp_dim, n_adain, "none"),
        )

    def decode(self, content, style):
        """The reference's decode: AdaIN parameters from the MLP, mean then std, assigned in
        module order."""
        params = self.mlp.model(style.view(style.shape[0], -1))
        for m in self.dec.modules():
            if isinstance(m, AdaptiveInstanceNorm2d):
                n = m.num_features
                m.bias, m.weight, params = params[:, :n], params[:, n : 2 * n], params[:, 2 * n :]
        return self.dec.model(content)


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn anew, so that a swapped tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def save_junyanz(folder: Path, **kw) -> tuple[Path, nn.Module, nn.Module]:
    folder.mkdir(parents=True, exist_ok=True)
    g_a, g_b = (randomised(JunyanzResnetGenerator(**kw), s) for s in (1, 2))
    torch.save(g_a.state_dict(), folder / "latest_net_G_A.pth")
    torch.save(g_b.state_dict(), folder / "latest_net_G_B.pth")
    return folder / "latest_net_G_A.pth", g_a, g_b


def save_munit(path: Path) -> tuple[Path, nn.Module, nn.Module]:
    gen_a, gen_b = (randomised(AdaINGen(), s) for s in (3, 4))
    torch.save({"a": gen_a.state_dict(), "b": gen_b.state_dict()}, path)
    return path, gen_a, gen_b


# --- the tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("dropout", [False, True])
def test_junyanz_generators_compute_what_the_reference_layout_computes(tmp_path: Path, dropout):
    path, g_a, g_b = save_junyanz(tmp_path, dropout=dropout)
    nets = load_generators(path)
    assert nets.name == "cyclegan" and nets.directions == ("ab", "ba")
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(nets.translate(x, "ab")[:, 0], g_a(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(nets.translate(x, "ba")[:, 0], g_b(x), rtol=0, atol=1e-5)


def test_a_lone_pretrained_generator_maps_a_to_b_only(tmp_path: Path):
    g = randomised(JunyanzResnetGenerator(), 5)
    state = g.state_dict()
    # Files saved by PyTorch 0.3 hold InstanceNorm running statistics; neither reference uses them.
    state["model.2.running_mean"], state["model.2.running_var"] = torch.zeros(8), torch.ones(8)
    torch.save(state, tmp_path / "latest_net_G.pth")
    nets = load_generators(tmp_path / "latest_net_G.pth")
    assert nets.directions == ("ab",)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(nets.translate(x, "ab")[:, 0], g(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="'ba'"):
        nets.translate(x, "ba")


def test_munit_generators_compute_what_the_reference_layout_computes(tmp_path: Path):
    path, gen_a, gen_b = save_munit(tmp_path / "gen_01000000.pt")
    nets = load_generators(path)
    assert nets.name == "munit" and nets.style_dim == 4
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    s = torch.randn(2, 4, 1, 1)
    with torch.no_grad():
        for direction, (source, target) in {"ab": (gen_a, gen_b), "ba": (gen_b, gen_a)}.items():
            theirs = target.decode(source.enc_content.model(x), s)  # x_ab = dec_b(c_a, s_b)
            ours = nets.translate(x, direction, s[:, None])[:, 0]
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        # the style encoder too: example-guided translation reads it
        torch.testing.assert_close(
            nets.style_of(x, "b"), gen_b.enc_style.model(x), rtol=0, atol=1e-5
        )


def test_a_tensor_that_does_not_fit_is_named(tmp_path: Path):
    path, g_a, _ = save_junyanz(tmp_path / "j")
    state = g_a.state_dict()
    state["model.11.conv_block.5.weight"] = torch.zeros(32, 32, 1, 1)  # a 1x1 conv in a 3x3 slot
    torch.save(state, path)
    with pytest.raises(
        I2IError, match=r"'model\.11\.conv_block\.5\.weight' has shape \(32, 32, 1, 1\)"
    ):
        load_generators(path)

    munit, gen_a, gen_b = save_munit(tmp_path / "gen.pt")
    state = {"a": gen_a.state_dict(), "b": gen_b.state_dict()}
    state["b"]["mlp.model.2.fc.weight"] = torch.zeros(7, 16)
    torch.save(state, munit)
    with pytest.raises(
        I2IError, match=r"\['b'\]: key 'mlp\.model\.2\.fc\.weight' has shape \(7, 16\)"
    ):
        load_generators(munit)


def test_other_layouts_are_refused_in_one_line(tmp_path: Path):
    unit = {d: {"enc.model.0.conv.weight": torch.zeros(8, 3, 7, 7)} for d in ("a", "b")}
    torch.save(unit, tmp_path / "gen_unit.pt")  # NVlabs' UNIT (VAEGen): another architecture
    unet = {"model.model.0.weight": torch.zeros(8, 3, 4, 4)}
    torch.save(unet, tmp_path / "latest_net_G.pth")
    extra = JunyanzResnetGenerator().state_dict() | {"model.30.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra_net_G.pth")
    for name, why in [
        ("gen_unit.pt", "not a generator file of i2i train or of a reference: junyanz's CycleGAN"),
        ("latest_net_G.pth", "a U-Net generator"),
        ("extra_net_G.pth", "key 'model.30.weight' has no place in i2i's network"),
    ]:
        with pytest.raises(I2IError, match=why):
            load_generators(tmp_path / name)


def test_translate_and_the_cli_accept_a_reference_file(tmp_path: Path):
    path, g_a, g_b = save_junyanz(tmp_path / "checkpoints")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    save_image(tmp_path / "in" / "x.png", image)
    run = subprocess.run(
        [
            str(BIN / "i2i"),
            "translate",
            str(tmp_path / "in"),
            "--model",
            str(path),
            "--direction",
            "ba",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    from i2i.data.loader import to_model_input
    from i2i.grids import to_uint8

    with torch.no_grad():
        want = to_uint8(g_b(to_model_input(torch.from_numpy(image)[None], "cpu")))[0]
    got = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "out" / "x.png"))
    assert np.array_equal(got, want)


def test_a_file_that_declares_huge_widths_costs_no_more_memory_than_it_holds(tmp_path: Path):
    """Widths come from the file: a stem of 65536 channels would make i2i build ResNet blocks of
    262144 channels (2.5 TB of weights) before any check. The networks are built without memory
    and checked key by key, so the first misfit is named and nothing large is allocated."""
    path, g_a, _ = save_junyanz(tmp_path / "j")
    state = g_a.state_dict()
    state["model.1.weight"] = torch.zeros(65536, 3, 1, 1)  # 786 KB in the file
    torch.save(state, path)
    with pytest.raises(I2IError, match=r"'model\.1\.weight' has shape \(65536, 3, 1, 1\), i2i's"):
        load_generators(path)

    # i2i's own file format declares its widths in a config: the same holds.
    from i2i import checkpoint
    from i2i.config import params_from_dict, to_dict
    from i2i.models import build_networks
    from tests.train_helpers import tiny_train_params

    cfg = params_from_dict(tiny_train_params("cyclegan")).model
    config = to_dict(cfg)
    config["cyclegan"]["ngf"] = 65536
    tiny = build_networks(cfg, discriminators=False).G
    checkpoint.export_generators(tmp_path / "i2i.pt", "cyclegan", config, tiny, {})
    with pytest.raises(RuntimeError, match=r"size mismatch for ab\.model\.1\.weight"):
        load_generators(tmp_path / "i2i.pt")
