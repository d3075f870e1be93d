"""Token layout: which token maps an order generates, and where each sits in the flat sequence.

Answers design question 1. A layout is a tuple of square map sides, coarse to fine:
next-scale uses (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) -> 680 positions in 10 levels; raster and MaskGIT use
(16,) -> 256 positions in one level; raster over multi-scale tokens uses the 10-scale layout with
`causal` attention. The tokenizer defines the scales; the order decides how they are attended.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class TokenLayout:
    scales: tuple[int, ...]  # side p_k of each square token map, coarse to fine

    def __post_init__(self) -> None:
        if not self.scales or any(p <= 0 for p in self.scales):
            raise ValueError(f"scales must be positive side lengths, got {self.scales}")

    @property
    def num_levels(self) -> int:
        return len(self.scales)

    @cached_property
    def lengths(self) -> tuple[int, ...]:
        return tuple(p * p for p in self.scales)

    @cached_property
    def length(self) -> int:
        """L: total number of tokens (680 for VAR's 256 px schedule)."""
        return sum(self.lengths)

    @cached_property
    def bounds(self) -> tuple[tuple[int, int], ...]:
        """[begin, end) of each scale in the flat sequence: (0,1) (1,5) (5,14) ... (424,680)."""
        out, b = [], 0
        for n in self.lengths:
            out.append((b, b + n))
            b += n
        return tuple(out)

    def levels(self) -> torch.Tensor:
        """(L,) int64: the scale index of each position."""
        return torch.cat([torch.full((n,), k, dtype=torch.long, device="cpu") for k, n in enumerate(self.lengths)])

    def split(self, flat_BL: torch.Tensor) -> list[torch.Tensor]:
        """(B, L, ...) -> list of (B, p_k*p_k, ...)."""
        return list(flat_BL.split(self.lengths, dim=1))

    def join(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """list of (B, p_k*p_k, ...) -> (B, L, ...)."""
        return torch.cat(maps, dim=1)


# Attention patterns as "group ids": key j is visible from query i iff group[j] <= group[i].
# One representation covers all three orders, the training mask and the KV-cached inference alike.
def causal_groups(n: int) -> torch.Tensor:
    """Token-causal: every position is its own group (raster)."""
    return torch.arange(n, device="cpu")


def block_causal_groups(layout: TokenLayout) -> torch.Tensor:
    """Block-causal by level (VAR §2.3): bidirectional inside a scale, causal across scales."""
    return layout.levels()


def bidirectional_groups(n: int) -> torch.Tensor:
    """Everyone sees everyone (MaskGIT)."""
    return torch.zeros(n, dtype=torch.long, device="cpu")


def mask_from_groups(groups_q: torch.Tensor, groups_k: torch.Tensor) -> torch.Tensor:
    """(Lq, Lk) bool, True where attention is allowed: groups_k[j] <= groups_q[i]."""
    return groups_k[None, :] <= groups_q[:, None]
