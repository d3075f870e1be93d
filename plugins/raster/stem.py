"""Raster AR input layer: start token = class embedding + pos_start; every other position embeds the
PREVIOUS token id with `tok_embed` (Embedding(V, C)); every position adds its learned absolute
position embedding (1, L, C)."""

from __future__ import annotations

import torch
from torch import nn

from genorder.model import init_std
from genorder.order import Stem


class RasterStem(Stem):
    no_decay = ("pos_1LC", "pos_start")

    def __init__(self, length: int, vocab: int, width: int) -> None:
        super().__init__()
        self.length, self.width = length, width
        self.tok_embed = nn.Embedding(vocab, width)
        self.pos_start = nn.Parameter(torch.empty(1, 1, width))
        self.pos_1LC = nn.Parameter(torch.empty(1, length, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = init_std(self.width)
        nn.init.trunc_normal_(self.tok_embed.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs: (B, n_in) int64 ids of the tokens before positions [max(start, 1), start + n)
        (position i is fed token i - 1); cond: (B, C).
        Returns (B, n, C) with n = n_in (+ 1 when start == 0)."""
        x_BnC = self.tok_embed(inputs) if inputs.shape[1] else None
        if start == 0:
            sos_B1C = cond[:, None, :] + self.pos_start
            x_BnC = sos_B1C if x_BnC is None else torch.cat([sos_B1C, x_BnC], dim=1)
        n = x_BnC.shape[1]
        if start + n > self.length:
            raise ValueError(f"positions [{start}, {start + n}) exceed the length {self.length}")
        return x_BnC + self.pos_1LC[:, start : start + n]
