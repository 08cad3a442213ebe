"""The metric networks and ground-truth scores: Inception features, the domain classifier,
content IoU on the synthetic renderings."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from i2i.cache import weights_dir
from i2i.config import params_from_dict
from i2i.data.loader import DomainImages
from i2i.data.shapes import render
from i2i.metrics import classifier
from i2i.metrics.inception import InceptionV3
from i2i.metrics.shapes import content_iou
from i2i.weights import WEIGHTS, MissingWeightsError
from tests.conftest import tiny_params
from tests.train_helpers import prepare


def _renders(domain: str, n: int = 30, size: int = 32):
    cfg = params_from_dict(tiny_params()).data.shapes
    cfg = type(cfg)(**{**cfg.__dict__, "image_size": size})
    images, masks = zip(*[render(0, "test", domain, i, cfg)[:2] for i in range(n)])
    return np.stack(images), np.stack(masks)


@pytest.mark.parametrize("domain", ["a", "b"])
def test_content_iou_is_one_for_the_ground_truth_rendering_and_low_otherwise(domain: str):
    images, masks = _renders(domain)
    assert content_iou(images, masks) == pytest.approx(
        1.0
    )  # outlines (A) are filled before comparing
    assert content_iou(np.full_like(images, 255), masks) == 0.0  # blank
    assert content_iou(np.zeros_like(images), masks) < 0.3  # paints everything
    assert content_iou(images[::-1], masks) < 0.4  # another image's geometry


def test_inception_features_and_posteriors_of_the_random_network_are_finite_and_repeatable():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    torch.manual_seed(0)
    features, probs = InceptionV3(pretrained=False)(x)
    assert features.shape == (3, 2048) and probs.shape == (3, 1000)
    assert torch.isfinite(features).all() and features.abs().max() < 1e3  # calibrated batch norms
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    torch.manual_seed(0)
    again, _ = InceptionV3(pretrained=False)(x)
    assert torch.equal(features, again)


def test_inception_loads_the_cached_torchvision_weights_and_names_the_file_when_missing(
    monkeypatch,
):
    with pytest.raises(MissingWeightsError, match=WEIGHTS["inception_v3"].filename):
        InceptionV3(pretrained=True)
    from torchvision.models import inception_v3

    torch.manual_seed(1)
    reference = inception_v3(weights=None, aux_logits=True, init_weights=True).eval()
    w = WEIGHTS["inception_v3"]
    path = weights_dir() / w.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    digits = hashlib.sha256(path.read_bytes()).hexdigest()[:8]  # a stand-in, not the real file
    monkeypatch.setitem(WEIGHTS, w.name, replace(w, sha256_prefix=digits))
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    _, probs = InceptionV3(pretrained=True)(x)
    with torch.no_grad():
        expected = torch.softmax(reference(x), 1)  # transform_input is off in both
    assert torch.allclose(probs, expected, atol=1e-5)


def test_domain_classifier_learns_the_synthetic_modes_and_round_trips(tmp_path):
    params = tiny_params()
    params["data"]["shapes"].update(num_train=48, num_test=24)
    prepared = prepare(tmp_path, params)
    report = classifier.classify(
        prepared, tmp_path / "classifiers", 32, steps=60, seed=0, device=torch.device("cpu")
    )
    assert report["a"]["trained"] is False and "classes" in report["a"]["reason"]
    assert report["b"]["classes"] == 4 and report["b"]["test_accuracy"] >= 0.9
    assert sorted(p.name for p in (tmp_path / "classifiers").iterdir()) == ["b.pt"]
    loaded = classifier.load(tmp_path / "classifiers" / "b.pt")
    test = DomainImages(prepared / "test_b")
    assert (
        classifier.accuracy(loaded.model, test, 32, torch.device("cpu"))
        == report["b"]["test_accuracy"]
    )
    assert loaded.classes == test.classes


def test_loading_something_else_as_a_classifier_names_the_file(tmp_path):
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="x.pt: not an i2i domain classifier"):
        classifier.load(tmp_path / "x.pt")


def test_fid_inception_has_the_tf_graphs_layout_1008_classes_and_no_auxiliary_head():
    from torchvision.models import inception_v3

    from i2i.metrics import inception

    torch.manual_seed(0)
    fid = InceptionV3(pretrained=False, kind="fid")
    ours = {k.removeprefix("trunk."): tuple(v.shape) for k, v in fid.state_dict().items()}
    tv = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    layout = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    assert ours == layout  # the file's keys load one to one
    assert ours["fc.weight"] == (1008, 2048)
    names = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6e", "Mixed_7b", "Mixed_7c")
    blocks = [type(getattr(fid.trunk, n)).__name__ for n in names]
    assert blocks == ["_FidA"] * 3 + ["_FidC"] * 2 + ["_FidE"] * 2
    assert fid.trunk.Mixed_7b.pool is inception._tf_average
    assert fid.trunk.Mixed_7c.pool is inception._max
    features, probs = fid(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert features.shape == (2, 2048) and probs.shape == (2, 1008)


def test_fid_blocks_pool_as_tensorflow_does_and_differ_from_torchvisions_only_there():
    """Average pools leave the zero padding out (only border pixels change); Mixed_7c's pool
    branch takes a max. Every other branch is torchvision's, weight for weight."""
    from torchvision.models.inception import InceptionA, InceptionE

    from i2i.metrics.inception import _FidA, _FidE, _max

    torch.manual_seed(0)
    x = torch.randn(1, 192, 9, 9)
    plain, fid = InceptionA(192, 32).eval(), _FidA(192, 32).eval()
    fid.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, b = plain(x), fid(x)
        pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        assert torch.equal(b[:, -32:], plain.branch_pool(pooled))
    assert torch.equal(a[:, :-32], b[:, :-32])  # the three conv branches
    inner = (slice(None), slice(-32, None), slice(1, -1), slice(1, -1))
    assert torch.allclose(a[inner], b[inner], atol=1e-6)  # the interior pixels
    assert not torch.allclose(a[:, -32:, 0], b[:, -32:, 0], atol=1e-3)  # the border
    x = torch.randn(1, 2048, 5, 5)
    plain, fid = InceptionE(2048).eval(), _FidE(2048, _max).eval()
    fid.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(fid(x)[:, -192:], plain.branch_pool(F.max_pool2d(x, 3, 1, 1)))
        assert torch.equal(fid(x)[:, :-192], plain(x)[:, :-192])
