"""The domain classifier: a small CNN trained on one domain's class labels (its sub-folders).

IS and CIS need a classifier whose classes are the modes of the target domain; MUNIT fine-tunes
an Inception-v3 on them (Huang et al. 2018, Sec. 5.1). On the synthetic dataset (4-8 colour and
texture families at 64 px) a compact CNN trained from scratch separates the modes almost
perfectly in a few hundred steps on a CPU, which an Inception-v3 fine-tune would not; it is
trained once per dataset by the ``classify`` stage and its held-out accuracy on the labelled
test split is reported next to every score it feeds, so a weak classifier is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from i2i.data.loader import DomainImages, centre_crop, random_crop_flip, to_model_input
from i2i.io import atomic_dir, atomic_path

FORMAT = "i2i-domain-classifier-1"


class DomainClassifier(nn.Module):
    """Images [N, 3, H, W] in [-1, 1] (H, W >= 16) -> class logits [N, num_classes]."""

    def __init__(self, num_classes: int, width: int = 16, levels: int = 4):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 3, 1, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        c = width
        for _ in range(levels):
            layers += [
                nn.Conv2d(c, min(c * 2, 128), 4, 2, 1),
                nn.BatchNorm2d(min(c * 2, 128)),
                nn.ReLU(inplace=True),
            ]
            c = min(c * 2, 128)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))  # global average pool: [N, C]

    @torch.no_grad()
    def posteriors(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self(x).float(), dim=1)


@dataclass(frozen=True)
class TrainedClassifier:
    model: DomainClassifier
    classes: list[str]
    accuracy: float | None  # on the held-out (test) split; None when it is unlabelled
    test_count: int


def labelled(part: DomainImages) -> bool:
    return len(part.classes) >= 2 and bool((part.labels >= 0).all())


def _batch(
    part: DomainImages, ids: np.ndarray, size: int, rng: np.random.Generator | None
) -> torch.Tensor:
    """Training crops (random, flipped) when ``rng`` is given, else centre crops."""
    crops = [
        centre_crop(part.image(int(i)), size)
        if rng is None
        else random_crop_flip(part.image(int(i)), size, rng, True)
        for i in ids
    ]
    return torch.from_numpy(np.stack(crops))


@torch.no_grad()
def accuracy(
    model: DomainClassifier, part: DomainImages, size: int, device: torch.device, batch: int = 200
) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(part), batch):
        ids = np.arange(s, min(s + batch, len(part)))
        pred = model(to_model_input(_batch(part, ids, size, None), device)).argmax(1).cpu().numpy()
        correct += int((pred == part.labels[ids]).sum())
    return correct / len(part)


def train_classifier(
    train: DomainImages,
    test: DomainImages,
    crop_size: int,
    steps: int,
    seed: int,
    device: torch.device,
    batch: int = 32,
) -> TrainedClassifier:
    """Fit a classifier of ``train``'s classes (random crops and flips); score it on ``test``."""
    if not labelled(train):
        raise ValueError(f"{train.folder}: needs at least two classes and a label on every image")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DomainClassifier(len(train.classes)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        ids = rng.integers(len(train), size=batch)
        x = to_model_input(_batch(train, ids, crop_size, rng), device)
        loss = F.cross_entropy(model(x), torch.from_numpy(train.labels[ids]).long().to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    acc = accuracy(model, test, crop_size, device) if labelled(test) else None
    return TrainedClassifier(model.eval(), list(train.classes), acc, len(test))


def save(path: Path, trained: TrainedClassifier) -> None:
    state = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format": FORMAT,
                "classes": trained.classes,
                "accuracy": trained.accuracy,
                "test_count": trained.test_count,
                "state": state,
            },
            tmp,
        )


def load(path: Path, device: torch.device | str = "cpu") -> TrainedClassifier:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an i2i domain classifier (format {state.get('format')!r}, "
            f"expected {FORMAT})"
        )
    model = DomainClassifier(len(state["classes"]))
    model.load_state_dict(state["state"])
    return TrainedClassifier(
        model.to(device).eval(), state["classes"], state["accuracy"], state["test_count"]
    )


def classify(
    prepared: Path, out: Path, crop_size: int, steps: int, seed: int, device: torch.device
) -> dict:
    """The classify stage: a classifier per labelled domain (``out/a.pt``, ``out/b.pt``), trained on
    its train split and scored on its test split; returns the report (accuracy per domain)."""
    report: dict = {}
    with atomic_dir(out) as tmp:
        for domain in ("a", "b"):
            train, test = (
                DomainImages(prepared / f"train_{domain}"),
                DomainImages(prepared / f"test_{domain}"),
            )
            if not labelled(train):
                report[domain] = {
                    "classes": len(train.classes),
                    "trained": False,
                    "reason": "fewer than two classes or unlabelled images",
                }
                continue
            trained = train_classifier(train, test, crop_size, steps, seed, device)
            save(tmp / f"{domain}.pt", trained)
            report[domain] = {
                "classes": len(trained.classes),
                "trained": True,
                "steps": steps,
                "test_accuracy": trained.accuracy,
                "test_images": trained.test_count,
            }
    return report
