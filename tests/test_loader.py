"""The training loader: unpaired sampling, crops and flips, determinism, device-side
normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i2i.config import params_from_dict
from i2i.data.download import download
from i2i.data.loader import (
    DomainImages,
    EvalImages,
    IterationBatches,
    UnpairedDataset,
    centre_crop,
    to_model_input,
    train_loader,
)
from i2i.data.preprocess import preprocess
from tests.conftest import tiny_params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    p = tiny_params(load_size=36, crop_size=32)
    p["data"]["shapes"].update(image_size=36, num_train=10, num_test=3)
    cfg = params_from_dict(p).data
    download(cfg, root / "raw")
    preprocess(root / "raw", root / "prepared", cfg)
    return root / "prepared"


def dataset(prepared: Path, seed: int = 0, flip: bool = True) -> UnpairedDataset:
    a, b = DomainImages(prepared / "train_a"), DomainImages(prepared / "train_b")
    a.index = a.index[:4]  # 4 A images, 10 B: the epoch length and A's wrap-around show
    return UnpairedDataset(a, b, crop_size=32, flip=flip, seed=seed)


def test_epoch_is_the_larger_domain_and_a_wraps_around(prepared: Path):
    ds = dataset(prepared)
    assert len(ds) == 10
    assert [int(ds[i]["a_index"]) for i in range(10)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_b_is_drawn_independently_of_a(prepared: Path):
    ds = dataset(prepared)
    pairs = [(int(ds[i]["a_index"]), int(ds[i]["b_index"])) for i in range(10)]
    draws = [int(ds[epoch * 10 + i]["b_index"]) for epoch in range(30) for i in range(10)]
    assert len(set(draws)) == 10  # every B image is reachable
    # The B partner of a fixed item changes from epoch to epoch (not a fixed pairing).
    assert [(int(ds[i]["a_index"]), int(ds[i]["b_index"])) for i in range(10)] == pairs
    assert [(int(ds[10 + i]["a_index"]), int(ds[10 + i]["b_index"])) for i in range(10)] != pairs


def test_crops_come_from_the_image_and_flips_happen(prepared: Path):
    ds = dataset(prepared)
    flipped = 0
    for epoch in range(10):
        item = ds[epoch * 10]
        a = item["a"].numpy()
        full = ds.a.image(0)
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8
        windows = [full[t : t + 32, x : x + 32] for t in range(5) for x in range(5)]
        if any(np.array_equal(a, w) for w in windows):
            continue
        assert any(np.array_equal(a[:, ::-1], w) for w in windows)
        flipped += 1
    assert 0 < flipped < 10


def test_no_flip_when_disabled_and_centre_crop_for_test(prepared: Path):
    ds = dataset(prepared, flip=False)
    full = ds.a.image(0)
    windows = [full[t : t + 32, x : x + 32] for t in range(5) for x in range(5)]
    for epoch in range(5):
        assert any(np.array_equal(ds[epoch * 10]["a"].numpy(), w) for w in windows)
    test = EvalImages(DomainImages(prepared / "test_a"), 32)
    assert np.array_equal(
        test[1]["x"].numpy(), DomainImages(prepared / "test_a").image(1)[2:34, 2:34]
    )
    assert np.array_equal(centre_crop(full, 32), full[2:34, 2:34])


def test_same_seed_same_batches_whatever_the_worker_count(prepared: Path):
    cfg0 = params_from_dict(tiny_params(load_size=36, crop_size=32, num_workers=0)).data
    cfg2 = params_from_dict(tiny_params(load_size=36, crop_size=32, num_workers=2)).data

    def batches(cfg, seed):
        loader = iter(train_loader(prepared, cfg, batch_size=2, seed=seed))
        return [torch.cat([b["a"], b["b"]]) for b in (next(loader) for _ in range(12))]

    reference = batches(cfg0, 3)
    assert reference[0].shape == (4, 32, 32, 3)
    assert all(torch.equal(x, y) for x, y in zip(reference, batches(cfg2, 3)))
    assert not all(torch.equal(x, y) for x, y in zip(reference, batches(cfg0, 4)))


def test_model_input_is_nchw_in_minus_one_to_one():
    batch = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8).expand(2, 4, 4, 3).contiguous()
    x = to_model_input(batch, "cpu")
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x[:, 0], torch.full((2, 4, 4), -1.0))
    assert torch.equal(x[:, 1], torch.full((2, 4, 4), 1.0))
    assert torch.allclose(x[:, 2], torch.full((2, 4, 4), 51 / 127.5 - 1))
    y = to_model_input(batch, "cpu", channels_last=True)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)


def test_masks_align_with_images(prepared: Path):
    b = DomainImages(prepared / "test_b")
    for i in range(len(b)):
        image, mask = b.image(i), b.mask(i)
        assert mask.shape == image.shape[:2]
        assert (image[mask] < 235).any(axis=1).mean() > 0.9


def take(sampler: IterationBatches, n: int) -> list[list[int]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_iteration_batches_resume_exactly_where_a_run_stopped():
    full = take(IterationBatches(10, 3, seed=1), 9)  # 3 iterations per epoch, 3 epochs
    assert take(IterationBatches(10, 3, seed=1, start=4), 5) == full[4:]
    for e in range(3):  # each epoch is a permutation of its own global indices (one left over)
        epoch = sum(full[3 * e : 3 * e + 3], [])
        assert len(set(epoch)) == 9 and all(e * 10 <= g < (e + 1) * 10 for g in epoch)
    assert full[:3] != [[g - 10 for g in b] for b in full[3:6]]  # a new order every epoch


def test_iteration_batches_shard_an_epoch_across_ranks():
    ranks = [take(IterationBatches(12, 2, seed=0, rank=r, world=2), 3) for r in range(2)]
    seen = [g for r in ranks for b in r for g in b]
    assert sorted(seen) == list(range(12))  # disjoint shards covering the epoch
    with pytest.raises(ValueError, match="cannot fill one batch"):
        IterationBatches(3, 2, seed=0, world=2)
