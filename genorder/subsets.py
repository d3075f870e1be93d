"""Seeded, class-balanced subsets and held-out splits: what every score is computed on.

An image folder is read class by class, so "the first n images" of it hold one or two classes.
Every subset used for a score (the tokenizer's test PSNR, the held-out loss, the FID reference and
floor, the images `edit` takes from a dataset) comes from here instead:

    >>> idx = balanced_subset(ds.labels, 500, seed=0)          # (500,) int64 indices into ds
    >>> images, labels = subset_of(ds, 500, seed=0)            # uint8 (500, C, H, W), (500,)
    >>> train_idx, test_idx = balanced_split(labels, 0.1, seed=0)

`balanced_subset` takes the classes round-robin, each class's items in a seeded random order, so
the class counts of the subset differ by at most one (a class with fewer items gives all of them and
the others fill up), and every prefix of the subset is balanced too.
"""

from __future__ import annotations

import torch

from genorder.errors import UserError

SUBSET_SEED = 0  # the seed of every score's subset unless a caller passes another


def _per_class(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Each class's indices, in a seeded random order (classes in increasing label order)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randperm(len(idx), generator=g)])
    return out


def balanced_subset(labels: torch.Tensor | None, n: int, seed: int = SUBSET_SEED,
                    total: int | None = None) -> torch.Tensor:
    """Indices (min(n, N),) int64 of a seeded class-balanced subset of items labelled `labels` (N,).

    Round-robin over the classes (rank 0 of every class, then rank 1, ...), ranks from a seeded
    permutation within each class. `labels` None (an unlabelled set of `total` items): a seeded
    shuffle of range(total)."""
    if n < 0:
        raise UserError(f"a subset needs n >= 0, got {n}")
    if labels is None:
        if total is None:
            raise UserError("balanced_subset needs labels or the number of items")
        g = torch.Generator().manual_seed(seed)
        return torch.randperm(total, generator=g)[:n]
    labels = torch.as_tensor(labels).flatten()
    n = min(n, len(labels))
    groups = _per_class(labels, seed)
    if not groups:
        return torch.zeros(0, dtype=torch.int64)
    depth = max(len(g) for g in groups)
    # rank-major table (depth, K), -1 where a class has run out
    table = torch.full((depth, len(groups)), -1, dtype=torch.int64)
    for k, g in enumerate(groups):
        table[: len(g), k] = g
    flat = table.flatten()
    return flat[flat >= 0][:n].clone()


def subset_of(dataset, n: int, seed: int = SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The images uint8 (m, C, H, W) and labels (m,) of `balanced_subset(dataset.labels, n, seed)`,
    m = min(n, len(dataset)), for an in-memory `ImageDataset`."""
    idx = balanced_subset(getattr(dataset, "labels", None), n, seed, total=len(dataset))
    return dataset.images[idx], dataset.labels[idx]


def balanced_split(labels: torch.Tensor, fraction: float, seed: int = SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, class-balanced held-out split: (train indices, test indices), each sorted.

    Every class gives round(fraction * its size) items to the test side, at least one when the
    class has two or more items (a class of one stays in train), so the test side holds every class
    that can spare an image."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"a held-out fraction must be in (0, 1), got {fraction}")
    labels = torch.as_tensor(labels).flatten()
    test: list[torch.Tensor] = []
    train: list[torch.Tensor] = []
    for idx in _per_class(labels, seed):
        k = max(1, round(fraction * len(idx))) if len(idx) >= 2 else 0
        k = min(k, len(idx) - 1) if len(idx) >= 2 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    cat = lambda parts: torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.int64)  # noqa: E731
    return cat(train), cat(test)


def disjoint_subsets(labels: torch.Tensor, n: int, seed: int = SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded class-balanced subsets of up to n items each, disjoint when there are 2n items
    (e.g. the held-out loss that is reported and the one an LR sweep tunes on): the first is
    `balanced_subset(labels, n, seed)`, the second a balanced subset of what is left (of everything
    when too little is left)."""
    labels = torch.as_tensor(labels).flatten()
    first = balanced_subset(labels, n, seed)
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[first] = False
    left = torch.nonzero(rest).flatten()
    if len(left) < min(n, len(labels)):
        return first, balanced_subset(labels, n, seed + 1)
    return first, left[balanced_subset(labels[left], n, seed + 1)]
