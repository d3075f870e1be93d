"""The spiral order's input layer: start token = class condition + `pos_start`; position i > 0
embeds the previous spiral token (`tok_embed`, Embedding(V, C)); every position adds the embedding
of the grid cell it predicts (`row_embed[r] + col_embed[c]`), so the backbone knows where on the
map each step lands."""

from __future__ import annotations

import torch
from torch import nn

from genorder import Stem, init_std


class SpiralStem(Stem):
    # (1, 1, C) start vector: no weight decay. row/col tables are Embeddings (their weights decay,
    # as every Embedding's does unless listed here).
    no_decay = ("pos_start",)

    def __init__(self, order_L: torch.Tensor, vocab: int, width: int) -> None:
        super().__init__()
        p = int(round(order_L.numel() ** 0.5))
        self.length, self.width = order_L.numel(), width
        self.tok_embed = nn.Embedding(vocab, width)
        self.row_embed = nn.Embedding(p, width)
        self.col_embed = nn.Embedding(p, width)
        self.pos_start = nn.Parameter(torch.empty(1, 1, width))
        self.register_buffer("rows", order_L // p, persistent=False)  # (L,) row of spiral step i
        self.register_buffer("cols", order_L % p, persistent=False)  # (L,) column of spiral step i
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GenModel initialises the Embeddings; the bare start vector is ours (VAR's std)."""
        nn.init.trunc_normal_(self.pos_start, std=init_std(self.width))

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs (B, n_in) int64 spiral tokens before positions [max(start, 1), start + n);
        cond (B, C). Returns (B, n, C), n = n_in (+ 1 when start == 0)."""
        x_BnC = self.tok_embed(inputs) if inputs.shape[1] else None
        if start == 0:
            sos_B1C = cond[:, None, :] + self.pos_start
            x_BnC = sos_B1C if x_BnC is None else torch.cat([sos_B1C, x_BnC], dim=1)
        n = x_BnC.shape[1]
        if start + n > self.length:
            raise ValueError(f"positions [{start}, {start + n}) exceed the length {self.length}")
        cells = slice(start, start + n)
        return x_BnC + (self.row_embed(self.rows[cells]) + self.col_embed(self.cols[cells]))[None]
