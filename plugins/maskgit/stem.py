"""MaskGIT input layer: position 0 is a class token (class embedding + pos_start); positions 1..L
embed the token ids, where id V is [MASK] (Embedding(V + 1, C)), plus learned positions
(1, L, C)."""

from __future__ import annotations

import torch
from torch import nn

from genorder.model import init_std
from genorder.order import Stem


class MaskGITStem(Stem):
    no_decay = ("pos_1LC", "pos_start")

    def __init__(self, length: int, vocab: int, width: int) -> None:
        super().__init__()
        self.length, self.width = length, width
        self.mask_id = vocab
        self.tok_embed = nn.Embedding(vocab + 1, width)  # the last row is [MASK]
        self.pos_start = nn.Parameter(torch.empty(1, 1, width))
        self.pos_1LC = nn.Parameter(torch.empty(1, length, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = init_std(self.width)
        nn.init.trunc_normal_(self.tok_embed.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs: (B, n_in) int64 ids in [0, V] (V = [MASK]) of token positions [max(start, 1),
        start + n) (sequence position j holds token j - 1); cond: (B, C).
        Returns (B, n, C), n = n_in (+ 1 class token at start 0)."""
        t0 = max(start, 1) - 1  # first token index fed
        n_in = inputs.shape[1]
        if t0 + n_in > self.length:
            raise ValueError(f"tokens [{t0}, {t0 + n_in}) exceed the layout length {self.length}")
        x_BnC = self.tok_embed(inputs) + self.pos_1LC[:, t0 : t0 + n_in]
        if start == 0:
            cls_B1C = cond[:, None, :] + self.pos_start
            x_BnC = torch.cat([cls_B1C, x_BnC], dim=1)
        return x_BnC
