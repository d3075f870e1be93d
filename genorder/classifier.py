"""Class consistency: a small CNN trained once per dataset that scores class-conditional samples.

FID needs thousands of samples to mean much; "does the sample show the class it was asked for?" is
answered well at n = 100. `load_or_train_classifier` trains a small CNN on the dataset's train split
(any dataset with labels: fashion-mnist, imagefolder:PATH, npz:PATH, shapes), scores it on the
test split and caches it as safetensors + JSON under `cache_root/<dataset>-<short key>/`. The key
hashes the classifier config, its training budget and the content of both splits
(`genorder.hashing`), so a changed dataset file, config or budget trains a new one; an entry whose
tensors no longer match their recorded hash is rebuilt too.

    >>> clf, info = load_or_train_classifier("fashion-mnist")
    >>> info["test_accuracy"]                                    # about 0.91
    >>> class_accuracy(clf, samples, requested_labels)           # {"acc", "lo", "hi", "n"}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from genorder.checkpoint import load_checkpoint, save_checkpoint
from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.hashing import config_fingerprint, dataset_fingerprint, short, tensors_fingerprint

Progress = Callable[[int, int], None]  # (steps done, steps total)

FORMAT = "genorder-classifier/1"
STEM = "classifier"


class ClassifierConfig(ComponentConfig):
    """Architecture and training budget of the class-consistency CNN (all part of the cache key)."""

    width: int = Field(32, gt=0)  # channels of the first conv; the second has 2x
    hidden: int = Field(128, gt=0)  # MLP hidden units
    pool_to: int = Field(8, gt=0)  # spatial size fed to the MLP (adaptive average pool)
    epochs: int = Field(2, gt=0)  # passes over the train split (the training budget; 2: 91.2% on Fashion-MNIST)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0
    max_train: int | None = Field(None, gt=0)  # use the first N training images only
    max_test: int | None = Field(None, gt=0)  # score on the first N test images only


class Classifier(nn.Module):
    """Two conv blocks (conv 3x3, batch norm, ReLU, max-pool 2) and an MLP.

    Input images of another size are resized to `image_size` first."""

    def __init__(self, channels: int, num_classes: int, image_size: int, config: ClassifierConfig) -> None:
        super().__init__()
        w = config.width
        self.channels, self.num_classes, self.image_size = channels, num_classes, image_size
        self.config = config
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(config.pool_to),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Linear(2 * w * config.pool_to**2, config.hidden), nn.ReLU(), nn.Linear(config.hidden, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) float in [-1, 1] -> logits (B, K)."""
        return self.logits_from_penultimate(self.penultimate(images))  # (B, K)

    def logits_from_penultimate(self, feats_BH: torch.Tensor) -> torch.Tensor:
        """The last layer alone: penultimate features (B, hidden) -> logits (B, K)."""
        return self.head[2](feats_BH)

    def penultimate(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) float in [-1, 1] -> the penultimate layer (B, hidden): the MLP's
        hidden units after ReLU, the feature space of `genorder.classifier_fd`. (`self.features` is
        the conv trunk's module, so this method has another name.)"""
        if images.shape[1] != self.channels:
            raise UserError(f"the classifier takes {self.channels}-channel images, got {images.shape[1]}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        h = self.features(images)  # (B, 2w, p, p)
        return self.head[1](self.head[0](rearrange(h, "b c h w -> b (c h w)")))  # (B, hidden)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """images (B, C, H, W) float in [-1, 1] (uint8 in [0, 255] is converted) -> classes (B,) int64."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            x = _as_float(images[start : start + batch_size]).to(device)
            out.append(self(x).argmax(dim=1).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div(127.5).sub(1.0)
    return images.float()


def class_accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"acc", "lo", "hi", "n"}: accuracy of the classifier's predictions on `images` (B, C, H, W)
    against the requested `labels` (B,), with a 95% percentile bootstrap interval (n_boot resamples
    drawn from `seed`)."""
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if len(images) != len(labels):
        raise UserError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError("class accuracy needs at least one image")
    correct = (classifier.predict(images) == labels).double()  # (N,)
    n = len(correct)
    acc = float(correct.mean())
    if n_boot <= 0:
        return {"acc": acc, "lo": acc, "hi": acc, "n": n}
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)  # (R, N)
    boot = correct[idx].mean(dim=1)  # (R,)
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"acc": acc, "lo": float(lo), "hi": float(hi), "n": n}


# -- training and the cache ---------------------------------------------------------------------


def dataset_label(dataset_spec: str) -> str:
    """A folder-safe name: "fashion-mnist", "npz-mydata", "imagefolder-photos"."""
    from genorder.data import parse_spec

    name, arg = parse_spec(dataset_spec)
    label = name if arg is None else f"{name}-{Path(arg).expanduser().stem or 'data'}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _load_splits(dataset_spec: str, config: ClassifierConfig, image_size: int | None = None):
    """The train and test splits at `image_size` (the size the scored images have; None: the
    dataset's own), `limit`ed to max_train / max_test."""
    from genorder.data import load_dataset

    train = load_dataset(dataset_spec, "train", limit=config.max_train, image_size=image_size)
    test = load_dataset(dataset_spec, "test", limit=config.max_test, image_size=train.image_size, channels=train.channels)
    if train.num_classes < 2:
        raise UserError(f"{dataset_spec}: a class-consistency classifier needs labels with at least 2 classes")
    return train, test


@torch.no_grad()
def evaluate(classifier: Classifier, images_u8: torch.Tensor, labels: torch.Tensor) -> float:
    """Plain accuracy on uint8 images (N, C, H, W)."""
    return float((classifier.predict(images_u8) == labels.cpu()).double().mean())


def train_classifier(train, config: ClassifierConfig, device: str | torch.device = "cpu",
                     progress: Progress | None = None) -> Classifier:
    """Train a `Classifier` on an in-memory `ImageDataset` for `config.epochs` epochs (deterministic
    for a given seed on one device)."""
    from genorder.data import make_loader

    torch.manual_seed(config.seed)
    clf = Classifier(train.channels, train.num_classes, train.image_size, config).to(device)
    batch = min(config.batch_size, len(train))
    steps_per_epoch = len(train) // batch
    total = config.epochs * steps_per_epoch
    opt = torch.optim.AdamW(clf.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.15)
    batches = make_loader(train, batch, shuffle=True, seed=config.seed)
    clf.train()
    for step in range(total):
        x, y = next(batches)  # (B, C, H, W) float in [-1, 1], (B,)
        loss = F.cross_entropy(clf(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step + 1, total)
    return clf.eval()


def cache_key(dataset_hash: str, config: ClassifierConfig) -> str:
    return config_fingerprint({"format": FORMAT, "config": config, "dataset": dataset_hash})


def _try_load(stem: Path, key: str, device: str | torch.device) -> tuple[Classifier, dict] | None:
    """The cached classifier at `stem` when its key and tensor hash match, else None."""
    if not stem.with_suffix(".safetensors").is_file() or not stem.with_suffix(".json").is_file():
        return None
    try:
        state, meta = load_checkpoint(stem)
    except UserError:
        return None
    if meta.get("key") != key or meta.get("tensors") != tensors_fingerprint(state):
        return None
    config = ClassifierConfig.model_validate(meta["config"])
    clf = Classifier(meta["channels"], meta["num_classes"], meta["image_size"], config)
    clf.load_state_dict(state)
    return clf.to(device).eval(), meta


def load_or_train_classifier(
    dataset_spec: str,
    *,
    device: str | torch.device = "cpu",
    cache_root: str | Path = Path("runs/classifiers"),
    progress: Progress | None = None,
    config: ClassifierConfig | None = None,
    image_size: int | None = None,
) -> tuple[Classifier, dict]:
    """Small CNN trained once on the dataset's train split at `image_size` (the size the run
    trained on, so it judges samples at their own size; None: the dataset's own), cached as
    safetensors + JSON under cache_root/<dataset-name>-<size>px-<short key>/ and reused only when
    config, training budget, image size and dataset content all match. Returns (classifier in eval
    mode on `device`, {"test_accuracy", "path", "reused", "dataset_hash", "image_size"})."""
    config = config or ClassifierConfig()
    train, test = _load_splits(dataset_spec, config, image_size)
    dataset_hash = config_fingerprint({"train": dataset_fingerprint(train), "test": dataset_fingerprint(test),
                                       "image_size": train.image_size})  # fmt: skip
    key = cache_key(dataset_hash, config)
    stem = Path(cache_root) / f"{dataset_label(dataset_spec)}-{train.image_size}px-{short(key)}" / STEM
    cached = _try_load(stem, key, device)
    if cached is not None:
        clf, meta = cached
        return clf, {"test_accuracy": meta["test_accuracy"], "path": str(stem.with_suffix(".safetensors")),
                     "reused": True, "dataset_hash": dataset_hash, "image_size": train.image_size}  # fmt: skip
    clf = train_classifier(train, config, device, progress)
    acc = evaluate(clf, test.images, test.labels)
    state = {k: v.detach().cpu() for k, v in clf.state_dict().items()}
    meta: dict[str, Any] = {
        "kind": FORMAT, "key": key, "dataset": dataset_spec, "dataset_hash": dataset_hash,
        "config": config.model_dump(mode="json"), "channels": train.channels, "num_classes": train.num_classes,
        "image_size": train.image_size, "class_names": train.class_names, "n_train": len(train),
        "n_test": len(test), "test_accuracy": acc, "tensors": tensors_fingerprint(state),
    }  # fmt: skip
    path = save_checkpoint(stem, state, meta)
    return clf, {"test_accuracy": acc, "path": str(path), "reused": False, "dataset_hash": dataset_hash,
                 "image_size": train.image_size}
