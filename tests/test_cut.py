"""CUT and FastCUT: PatchNCE on hand-worked cases, the reference's layer indices and parameter
counts, anti-aliased sampling, flip equivariance, and which networks each phase trains."""

from __future__ import annotations

import math

import pytest
import torch

from i2i.config import LossConfig, params_from_dict
from i2i.model_registry import resolve
from i2i.losses import build_objective
from i2i.models import build_networks
from i2i.models.cut import (
    BlurDown,
    BlurUp,
    CUTConfig,
    CUTDiscriminator,
    CUTGenerator,
    FastCUTConfig,
    patch_nce,
)
from i2i.models.cyclegan import NLayerDiscriminator, ResnetGenerator
from tests.conftest import default_params


def _loss(logits: list[float]) -> float:
    """Cross-entropy with class 0, by hand."""
    return -logits[0] + math.log(sum(math.exp(v) for v in logits))


def test_patch_nce_equals_a_hand_worked_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # query 0: positive q0.k0 = 0.6; negatives: itself (-10, the reference's fill), q0.k1 = 0
    # query 1: positive q1.k1 = 1;   negatives: q1.k0 = 0.8, itself (-10); temperature 0.5
    expected = [_loss([1.2, -20.0, 0.0]), _loss([2.0, 1.6, -20.0])]
    assert patch_nce(q, k, batch=1, temperature=0.5).tolist() == pytest.approx(expected, rel=1e-6)


def test_negatives_come_from_the_same_image_only():
    torch.manual_seed(0)
    q, k = torch.randn(2 * 3, 4), torch.randn(2 * 3, 4)
    first = patch_nce(q, k, batch=2, temperature=0.07)[:3]
    k[3:] = torch.randn(3, 4)  # the second image's keys
    assert torch.equal(patch_nce(q, k, batch=2, temperature=0.07)[:3], first)
    # batch 1 would make them negatives of each other: another loss
    assert not torch.allclose(patch_nce(q, k, batch=1, temperature=0.07)[:3], first)


def test_the_keys_get_no_gradient():
    q, k = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    patch_nce(q, k, 1, 0.07).mean().backward()
    assert q.grad is not None and k.grad is None


def test_blur_down_and_up_keep_a_constant_and_scale_the_sides():
    x = torch.full((1, 2, 8, 6), 0.3)
    down, up = BlurDown(2)(x), BlurUp(2)(x)
    assert down.shape == (1, 2, 4, 3) and torch.allclose(down, torch.full_like(down, 0.3))
    assert up.shape == (1, 2, 16, 12) and torch.allclose(up, torch.full_like(up, 0.3))
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    # output (1, 1) is centred on input (2, 2): the centre tap of [1, 2, 1] x [1, 2, 1] / 16
    assert BlurDown(1)(impulse)[0, 0, 1, 1].item() == pytest.approx(4 / 16)
    assert BlurDown(1)(impulse)[0, 0, 0, 0].item() == 0.0  # covers inputs -1 (reflected: 1)..1
    impulse = impulse.roll(-1, 2)  # at (1, 2): one row above output (1, 1)'s centre
    assert BlurDown(1)(impulse)[0, 0, 1, 1].item() == pytest.approx(2 / 16)


def test_the_reference_layers_and_parameter_counts():
    c = CUTConfig()
    g = CUTGenerator(c)
    assert len(g.model) == 32  # resnet_9blocks with anti-aliased sampling
    feats = g.features(torch.zeros(1, 3, 32, 32), c.nce_layers)
    # 0: the padded input; 4: the first stride-1 conv; 8: after one blur-down; 12, 16: blocks
    assert [tuple(f.shape[1:]) for f in feats] == [
        (3, 38, 38),
        (128, 32, 32),
        (256, 16, 16),
        (256, 8, 8),
        (256, 8, 8),
    ]
    assert g.channels(c.nce_layers) == [3, 128, 256, 256, 256]
    # Anti-aliasing swaps stride-2 convs for stride-1 convs of the same shapes and a fixed blur
    # (a buffer): the counts equal the CycleGAN reference's ResNet-9 and 70x70 PatchGAN.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(g) == count(ResnetGenerator(64, 9)) == 11_378_179
    assert count(CUTDiscriminator(c)) == count(NLayerDiscriminator(64, 3)) == 2_764_737


def _symmetric(module: torch.nn.Module) -> None:
    """Kernels mirrored in width: the network commutes with a horizontal flip until its first
    stride-2 sampling."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(3)) / 2)


def _cut(name: str = "cut", **section) -> tuple:
    p = default_params()
    p["model"]["name"] = name
    p["model"][name] = {"ngf": 4, "n_blocks": 1, "ndf": 4, "num_patches": 16, "head_dim": 8}
    p["model"][name].update(section)
    params = resolve(params_from_dict(p))
    torch.manual_seed(0)
    nets = build_networks(params.model)
    objective = build_objective(nets, params.loss, 0, True, params.model.section)
    return nets, objective


def test_flip_equivariance_compares_mirrored_features_at_the_same_locations():
    nets, objective = _cut("fastcut", nce_layers=[0, 4])
    _symmetric(nets.G)
    a, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    state = objective.patch_rng.get_state()
    plain = objective.nce(a, y, flipped=False)
    objective.patch_rng.set_state(state)
    # G's output for the mirrored batch is y mirrored; mirroring its features back makes it the
    # same comparison as without the flip
    assert objective.nce(a, y.flip(3), flipped=True).item() == pytest.approx(plain.item())
    objective.patch_rng.set_state(state)
    assert objective.nce(a, y.flip(3), flipped=False).item() != pytest.approx(plain.item())


def test_cut_and_fastcut_defaults_and_terms():
    assert (CUTConfig().lambda_nce, CUTConfig().nce_idt, CUTConfig().flip_equivariance) == (
        1.0,
        True,
        False,
    )
    f = FastCUTConfig()
    assert (f.lambda_nce, f.nce_idt, f.flip_equivariance) == (10.0, False, True)
    assert (f.nce_layers, f.num_patches, f.nce_t, f.head_dim) == ((0, 4, 8, 12, 16), 256, 0.07, 256)
    real = {"a": torch.rand(2, 3, 32, 32) * 2 - 1, "b": torch.rand(2, 3, 32, 32) * 2 - 1}
    nets, cut = _cut("cut")
    terms = cut.generator_phase(real).terms
    assert set(terms) == {"loss/G/gan_ab", "loss/G/nce_a", "loss/G/nce_b", "loss/G/total"}
    parts = terms["loss/G/gan_ab"] + terms["loss/G/nce_a"] + terms["loss/G/nce_b"]
    assert terms["loss/G/total"].item() == pytest.approx(parts.item())
    assert nets.directions == ("ab",) and set(nets.D) == {"b"}
    _, fast = _cut("fastcut")
    assert set(fast.generator_phase(real).terms) == {
        "loss/G/gan_ab",
        "loss/G/nce_a",
        "loss/G/total",
    }


def test_the_generator_phase_trains_g_and_the_heads_and_the_discriminator_phase_d():
    nets, objective = _cut("cut")
    real = {"a": torch.rand(2, 3, 32, 32), "b": torch.rand(2, 3, 32, 32)}
    g = objective.generator_phase(real)
    g.loss.backward()
    assert all(p.grad is not None for p in nets.generator_side.parameters())
    assert all(p.grad is None for p in nets.D.parameters())
    nets.zero_grad(set_to_none=True)
    objective.discriminator_phase(real, g.fakes).loss.backward()
    assert all(p.grad is not None for p in nets.D.parameters())
    assert all(p.grad is None for p in nets.generator_side.parameters())


def test_a_bad_nce_layer_is_refused_with_the_range():
    p = default_params()
    p["model"]["name"] = "cut"
    p["model"]["cut"] = {"n_blocks": 1, "nce_layers": [0, 40]}
    with pytest.raises(Exception, match=r"model.cut.nce_layers.*layers 0 to 23"):
        resolve(params_from_dict(p)).model.section


def test_an_unknown_model_names_the_registered_ones():
    p = default_params()
    p["model"]["name"] = "pix2pix"
    with pytest.raises(Exception, match="model.name.*cyclegan, munit, cut, fastcut"):
        resolve(params_from_dict(p))


def test_a_section_may_name_only_what_it_changes():
    p = default_params()
    p["model"] = {"name": "fastcut", "fastcut": {"ngf": 8}}
    section = resolve(params_from_dict(p)).model.section
    assert section.ngf == 8 and section.n_blocks == 9 and section.lambda_nce == 10.0
    p["model"] = {"name": "cut"}  # no section at all: the reference's
    assert resolve(params_from_dict(p)).model.section == CUTConfig()


def test_the_loss_config_of_gan_weights_applies_to_cut():
    # loss.gan_w weights the adversarial terms of every model, CUT's lambda_GAN
    nets, objective = _cut("cut")
    real = {"a": torch.rand(1, 3, 32, 32), "b": torch.rand(1, 3, 32, 32)}
    objective.cfg = LossConfig(**{**objective.cfg.__dict__, "gan_w": 0.0})
    assert objective.generator_phase(real).terms["loss/G/gan_ab"].item() == 0.0


@pytest.mark.slow  # three stage processes on a tiny dataset
def test_a_one_way_model_goes_through_train_sample_evaluate_translate_export_and_compare(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.train_helpers import project, run_stage, tiny_train_params

    root = project(tmp_path / "cut", tiny_train_params("cut"))
    for stage in ("train", "sample", "evaluate"):
        run_stage(root, stage=stage)
    samples = root / "reports" / "samples"
    assert (samples / "ab").is_dir() and (samples / "grid_ab.png").is_file()
    assert not (samples / "ba").exists() and not (samples / "grid_ba.png").exists()
    report = json.loads((root / "reports" / "evaluate.json").read_text())
    ba = {k: v for k, v in report["skipped"].items() if k.endswith("/ba")}
    assert ba and set(ba.values()) == {"the model has no generator for this direction"}
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    # the same keys as a two-way model's, B to A null: `dvc exp show` lines them up
    assert metrics["metric/content_iou/ab"] is not None
    assert {k for k in metrics if k.endswith("/ba")} == {
        f"{k.rpartition('/')[0]}/ba" for k in metrics if k.endswith("/ab") and "_real/" not in k
    }
    assert all(v is None for k, v in metrics.items() if k.endswith("/ba"))

    i2i = str(Path(sys.executable).parent / "i2i")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    image = next((root / "data" / "raw").rglob("*.png"))
    for command in (
        [i2i, "translate", str(image), "--direction", "ba", "--out", str(tmp_path / "out")],
        [i2i, "export", "--direction", "ba", "--format", "torchscript"],
    ):
        refused = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        assert refused.returncode != 0
        assert "--direction ba: " in refused.stderr and "translates ab only" in refused.stderr
        assert "Traceback" not in refused.stderr
    done = subprocess.run(
        [i2i, "translate", str(image), "--direction", "ab", "--out", str(tmp_path / "out")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").rglob("*.png"))
    compare = subprocess.run(
        [i2i, "compare", "--metric", "metric/content_iou/ab"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stderr
    assert "cut" in compare.stdout


def test_no_module_outside_a_model_switches_on_its_name():
    """A model is its module and its registry line: no other code names it, the references'
    file readers included."""
    import re

    from i2i.model_registry import MODELS
    from tests.conftest import REPO

    allowed = {"i2i/model_registry.py"}
    for name, where in MODELS.items():
        own = where.partition(":")[0].replace(".", "/") + ".py"
        quoted = re.compile(rf"[\"']{name}[\"']")
        for path in sorted((REPO / "i2i").rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel == own or rel in allowed:
                continue
            assert not quoted.search(path.read_text()), f"{rel} names the model {name!r}"
