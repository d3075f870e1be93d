"""VAR's input layer (VAR_SPEC §2.2): start token = class embedding + pos_start; the other L - 1
positions embed the tokenizer's continuous teacher-forcing inputs with `word_embed`
(Linear(Cvae, C)); every position adds its level embedding and its absolute position embedding."""

from __future__ import annotations

import torch
from torch import nn

from genorder.layout import TokenLayout
from genorder.model import init_std
from genorder.order import Stem


class NextScaleStem(Stem):
    no_decay = ("pos_1LC", "pos_start", "lvl_embed")

    def __init__(self, layout: TokenLayout, latent_dim: int, width: int) -> None:
        super().__init__()
        self.first_l = layout.lengths[0]
        self.width = width
        self.word_embed = nn.Linear(latent_dim, width)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, width))
        self.pos_1LC = nn.Parameter(torch.empty(1, layout.length, width))  # one p_k^2 x C block per scale
        self.lvl_embed = nn.Embedding(layout.num_levels, width)
        self.register_buffer("levels", layout.levels(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = init_std(self.width)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs: (B, n_in, Cvae) latent inputs of positions [max(start, first_l), start + n);
        cond: (B, C). Returns (B, n, C) with n = n_in (+ first_l when start == 0)."""
        x = self.word_embed(inputs.float()) if inputs.shape[1] else None
        if start == 0:
            sos = cond[:, None, :].expand(-1, self.first_l, -1) + self.pos_start
            x = sos if x is None else torch.cat([sos, x], dim=1)
        n = x.shape[1]
        return x + self.lvl_embed(self.levels[start : start + n]) + self.pos_1LC[:, start : start + n]
