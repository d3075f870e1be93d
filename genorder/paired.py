"""The paired design: every order (and every ablation row) is sampled with the same class labels
and the same per-sample seeds, so that differences can be taken sample by sample
(`genorder.stats.paired_difference`).

`paired_design(num_classes, n, seed)` gives sample i the label i mod K (class-balanced whenever K
divides n) and the seed splitmix64(seed, i): both depend on (seed, i) only, so the first m samples
of a design of n are the design of m (a 500-sample point and the 2,000-sample final point share
their first 500), and every order gets the same list. `genorder.sampling.generate_design` turns a
design into images.

    >>> labels, sample_seeds = paired_design(10, 2000, seed=0)   # (2000,) int64 each
"""

from __future__ import annotations

import torch

from genorder.errors import UserError

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One splitmix64 step (Steele, Lea, Flood 2014): a bijective 64-bit mix."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of the design drawn from `seed`: a 63-bit int of (seed, index)."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (index & _MASK64)) >> 1


def paired_design(num_classes: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (n,), sample_seeds (n,)) int64: label i mod K, seed `sample_seed(seed, i)`."""
    if num_classes <= 0 or n < 0:
        raise UserError(f"a paired design needs num_classes > 0 and n >= 0, got {num_classes} and {n}")
    labels = torch.arange(n, dtype=torch.int64) % num_classes
    seeds = torch.tensor([sample_seed(seed, i) for i in range(n)], dtype=torch.int64)
    return labels, seeds


def label_matched_split(labels: torch.Tensor, num_classes: int, arms: int, seeds: int, per_seed: int,
                        generator: torch.Generator) -> torch.Tensor:
    """Indices (arms, seeds, per_seed) into a pool of samples with `labels` (M,), drawn without
    replacement, such that slot i of every arm and seed holds a sample of class i mod K: the pool
    split into label-matched seed sets, the paired design of an A/A test at no training cost."""
    if per_seed % num_classes:
        raise UserError(f"per_seed ({per_seed}) must be a multiple of the {num_classes} classes")
    per_class = arms * seeds * per_seed // num_classes
    cols = []
    for k in range(num_classes):
        idx = torch.nonzero(labels == k)[:, 0]
        if len(idx) < per_class:
            raise UserError(f"class {k}: the pool has {len(idx)} samples, the split needs {per_class}")
        cols.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    take = torch.stack(cols, dim=1)  # (per_class, K): column k holds class k
    return take.reshape(arms, seeds, per_seed // num_classes, num_classes).reshape(arms, seeds, per_seed)
