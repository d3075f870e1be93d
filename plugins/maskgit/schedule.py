"""MaskGIT schedules: the cosine mask ratio, tokens fixed per sampling step, and a 2-D Halton
unmasking order (Halton-MaskGIT's quasi-random spatial order)."""

from __future__ import annotations

import math

import torch


def cosine_schedule(r):
    """Mask ratio gamma(r) = cos(pi/2 * r) for r in [0, 1]: 1 (all masked) at r = 0, 0 at r = 1.
    Works on floats and tensors."""
    if isinstance(r, torch.Tensor):
        return torch.cos(0.5 * math.pi * r)
    return math.cos(0.5 * math.pi * r)


def tokens_per_step(length: int, steps: int) -> list[int]:
    """Number of tokens newly fixed at each sampling step t = 0..T-1.

    Still masked after step t: floor(L * cos(pi/2 * (t+1)/T)), clamped so that every step fixes at
    least one token (needed only when T is close to L). The counts sum to L and the last step fixes
    everything that is left."""
    if steps < 1 or length < 1:
        raise ValueError(f"need length >= 1 and steps >= 1, got length={length}, steps={steps}")
    if steps > length:
        raise ValueError(f"cannot fix {length} tokens in {steps} steps with at least one per step")
    counts, masked = [], length
    for t in range(steps):
        target = math.floor(length * cosine_schedule((t + 1) / steps))
        lo, hi = steps - 1 - t, masked - 1  # leave >= 1 token for every later step; fix >= 1 now
        after = min(max(target, lo), hi)
        counts.append(masked - after)
        masked = after
    return counts


def _radical_inverse(i: int, base: int) -> float:
    """The i-th element of the van der Corput sequence in `base`."""
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


def halton_order(h: int, w: int) -> torch.Tensor:
    """(h*w,) int64 permutation of the row-major grid positions, in the order a 2-D Halton sequence
    (base 2 for x / columns, base 3 for y / rows, indices 1, 2, ...) first visits each cell."""
    if h < 1 or w < 1:
        raise ValueError(f"grid must be at least 1x1, got {h}x{w}")
    n = h * w
    seen = torch.zeros(n, dtype=torch.bool)
    order: list[int] = []
    i = 1
    limit = 1000 * n + 1000  # the (2, 3) Halton set stratifies every grid long before this
    while len(order) < n and i < limit:
        col = min(int(_radical_inverse(i, 2) * w), w - 1)
        row = min(int(_radical_inverse(i, 3) * h), h - 1)
        pos = row * w + col
        if not seen[pos]:
            seen[pos] = True
            order.append(pos)
        i += 1
    order.extend(int(p) for p in torch.nonzero(~seen).flatten())  # safety net, never reached
    return torch.tensor(order, dtype=torch.long)
