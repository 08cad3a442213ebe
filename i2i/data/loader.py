"""Read the preprocessed cache and feed it to a model.

Workers only slice memory-mapped uint8 arrays (crop, flip) and hand over uint8 batches
[N, H, W, 3]; conversion to float and normalisation to [-1, 1] happen on the training device in
:func:`to_model_input`, which is where the arithmetic is cheapest. Sampling follows the CycleGAN
reference: item i pairs A[i mod |A|] with a B image drawn at random, so the data stay unpaired,
and an epoch is max(|A|, |B|) items.

Training is iteration-based and must resume mid-epoch, so nothing here keeps state: the dataset
is indexed by a global index g = epoch * len + i, and :class:`IterationBatches` yields the
batches of iteration k, k+1, ... as a pure function of (seed, k, rank). All randomness (the
epoch's order, B's draw, crop offsets, flips) is keyed by (seed, epoch, i), so it does not
depend on the number of workers or on where a run was interrupted.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from i2i.config import DataConfig
from i2i.errors import I2IError
from i2i.data.images import resize_shorter


# Translation direction -> (source, target) test parts: what sampling and evaluation translate.
TEST_PARTS = {"ab": ("test_a", "test_b"), "ba": ("test_b", "test_a")}


class DomainImages:
    """One preprocessed part (``train_a``, ...): images, labels, masks and names by index."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not (folder / "index.npy").is_file():
            raise FileNotFoundError(f"{folder}: not a preprocessed part; run the preprocess stage")
        self.folder = folder
        self.index = np.load(folder / "index.npy")  # [N, 3]: byte offset, height, width
        self.labels = np.load(folder / "labels.npy")
        self.names = json.loads((folder / "names.json").read_text())
        manifest = json.loads((folder.parent / "manifest.json").read_text())
        self.classes: list[str] = manifest["parts"][folder.name]["classes"]
        self._images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r")
        masks = folder / "masks.u8"
        self._masks = np.memmap(masks, dtype=np.uint8, mode="r") if masks.is_file() else None

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, indices: np.ndarray) -> "DomainImages":
        """A view of some of the images, in the given order (a validation split)."""
        view = copy.copy(self)
        view.index, view.labels = self.index[indices], self.labels[indices]
        view.names = [self.names[i] for i in indices]
        return view

    @property
    def has_masks(self) -> bool:
        return self._masks is not None

    def image(self, i: int) -> np.ndarray:
        off, h, w = self.index[i]
        return self._images[off : off + h * w * 3].reshape(h, w, 3)  # [H, W, 3] uint8

    def mask(self, i: int) -> np.ndarray:
        if self._masks is None:
            raise ValueError(f"{self.folder}: this part has no geometry masks")
        off, h, w = self.index[i]
        return self._masks[off // 3 : off // 3 + h * w].reshape(h, w).astype(bool)  # [H, W]


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` square of an [H, W, C] image: what evaluation, sampling
    and the sample grids see."""
    h, w, _ = image.shape
    top, left = (h - size) // 2, (w - size) // 2
    return np.array(
        image[top : top + size, left : left + size], order="C"
    )  # a copy of the memory map


def random_crop_flip(
    image: np.ndarray, size: int, rng: np.random.Generator, flip: bool
) -> np.ndarray:
    """A random ``size`` x ``size`` crop, flipped left-right with probability 1/2 when ``flip``:
    the training augmentation."""
    h, w, _ = image.shape
    top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    out = image[top : top + size, left : left + size]
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.array(out, order="C")  # a copy: the cache is a read-only memory map


class UnpairedDataset(Dataset):
    """Training pairs (a, b) of uint8 crops, B drawn independently of A."""

    def __init__(self, a: DomainImages, b: DomainImages, crop_size: int, flip: bool, seed: int):
        self.a, self.b = a, b
        self.crop_size, self.flip, self.seed = crop_size, flip, seed

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        """Item i of epoch e, for the global index g = e * len(self) + i."""
        epoch, i = divmod(int(g), len(self))
        rng = np.random.default_rng([self.seed, epoch, i])
        ia, ib = i % len(self.a), int(rng.integers(len(self.b)))
        a = random_crop_flip(self.a.image(ia), self.crop_size, rng, self.flip)
        b = random_crop_flip(self.b.image(ib), self.crop_size, rng, self.flip)
        return {
            "a": torch.from_numpy(a),
            "b": torch.from_numpy(b),
            "a_index": torch.tensor(ia),
            "b_index": torch.tensor(ib),
        }


class EvalImages(Dataset):
    """One domain's test images, centre-cropped, in file order, with their index."""

    def __init__(self, images: DomainImages, crop_size: int):
        self.images, self.crop_size = images, crop_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = centre_crop(self.images.image(i), self.crop_size)
        return {"x": torch.from_numpy(x), "index": torch.tensor(i)}


class IterationBatches(torch.utils.data.Sampler):
    """Batches of global indices for iterations ``start``, ``start + 1``, ... without end.

    Each epoch is a seeded permutation; with ``world`` ranks, rank r takes every world-th index
    of it (a distributed sampler), and an epoch has len // (batch_size * world) iterations.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1
    ):
        self.per_epoch = size // (batch_size * world)
        if self.per_epoch == 0:
            raise ValueError(
                f"{size} training items cannot fill one batch of {batch_size} on each of "
                f"{world} ranks"
            )
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self):
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            order = torch.randperm(
                self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            )
            mine = order[self.rank :: self.world] + epoch * self.size
            for k in range(offset, self.per_epoch):
                yield mine[k * self.batch_size : (k + 1) * self.batch_size].tolist()
            epoch, offset = epoch + 1, 0


def train_loader(
    prepared: str | Path,
    cfg: DataConfig,
    batch_size: int,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
    keep: dict[str, np.ndarray] | None = None,
) -> DataLoader:
    """Pinned, prefetching, endless loader of unpaired uint8 batches from iteration ``start`` on;
    ``keep``: per domain, the indices of the training images to use (the rest are held out)."""
    prepared = Path(prepared)
    parts = {d: DomainImages(prepared / f"train_{d}") for d in "ab"}
    if keep is not None:
        parts = {d: part.subset(keep[d]) for d, part in parts.items()}
    dataset = UnpairedDataset(
        parts["a"],
        parts["b"],
        cfg.crop_size,
        cfg.flip,
        seed,
    )
    if len(dataset) < batch_size * world:
        raise I2IError(
            f"{prepared}: {len(dataset)} training image(s) in the larger domain cannot fill one "
            f"batch of train.batch_size = {batch_size} on each of {world} process(es); lower "
            f"train.batch_size or add training images"
        )
    return DataLoader(
        dataset,
        batch_sampler=IterationBatches(len(dataset), batch_size, seed, start, rank, world),
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if cfg.num_workers > 0 else None,
        # Its own generator: creating the iterator draws a worker seed from it, and a draw from
        # the global one would shift every later random number (dropout, styles, penalties)
        # between a run that resumed and one that did not.
        generator=torch.Generator().manual_seed(seed),
    )


def to_model_input(
    batch: torch.Tensor, device: torch.device | str, channels_last: bool = False
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] on ``device``.

    The permute of NHWC memory already has channels-last strides; only the default layout
    needs a copy.
    """
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x if channels_last else x.contiguous()


def to_real_images(
    batch: dict[str, torch.Tensor], device: torch.device | str, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """A training batch's two domains as the model inputs a training step takes:
    {"a": ..., "b": ...}."""
    return {k: to_model_input(batch[k], device, channels_last) for k in ("a", "b")}


def prepare(
    image: Image.Image, size: int | None, multiple: int, minimum: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image of any size as a network input: [3, H', W'] in [-1, 1], first resized (shorter
    side to ``size``) when given, then padded by reflection at the bottom and right to a
    multiple of ``multiple`` of at least ``minimum``; and the (H, W) to crop the output back to."""
    if size:
        image = resize_shorter(image, size)
    x = to_model_input(torch.from_numpy(np.asarray(image).copy())[None], "cpu")[0]
    h, w = x.shape[1:]
    ph = max(minimum, h + (-h) % multiple) - h
    pw = max(minimum, w + (-w) % multiple) - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"  # reflect needs pad < side
        x = F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]
    return x, (h, w)
