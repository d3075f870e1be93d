"""Input layer of random-order autoregression: the model is told which cell each position predicts.

Inputs are a dict, batch first: `tokens` (B, n_tok) int64, the ids of the cells generated so far
that this call feeds, and `order` (B, L) int64, each sample's generation order (row-major cell
indices; sequence step i generates cell order[i]).

Two ways of telling the model where the next token goes (`instruct`):
  * "embedding" (σ-GPT's double positional encoding, RAR's target-aware position embedding): L
    positions; position 0 is the start token (class condition + `pos_start`), position i > 0 embeds
    the token of cell order[i - 1] plus that cell's position (`pos_in_LC`), and every position i
    adds the embedding of the cell it predicts, order[i] (`pos_tgt_LC`);
  * "tokens" (RandAR's position-instruction tokens): 2L positions in pairs (2j, 2j + 1); position 2j
    is the start token (j = 0) or the token of cell order[j - 1] plus its position, and position
    2j + 1 is an instruction token (`instr` + `pos_tgt_LC[order[j]]`) that predicts cell order[j].
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from genorder import Stem, init_std


def _gather(table_LC: torch.Tensor, cells_Bn: torch.Tensor) -> torch.Tensor:
    """(L, C) table, (B, n) cell indices -> (B, n, C)."""
    return table_LC[cells_Bn]


class RandomARStem(Stem):
    no_decay = ("pos_start", "pos_in_LC", "pos_tgt_LC")  # + "instr" with instruction tokens

    def __init__(self, length: int, vocab: int, width: int, instruct: str = "embedding") -> None:
        super().__init__()
        if instruct not in ("embedding", "tokens"):
            raise ValueError(f"instruct must be 'embedding' or 'tokens', got {instruct!r}")
        self.length, self.width, self.instruct = length, width, instruct
        self.tok_embed = nn.Embedding(vocab, width)
        self.pos_start = nn.Parameter(torch.empty(1, 1, width))
        self.pos_in_LC = nn.Parameter(torch.empty(length, width))  # where the fed token sits
        self.pos_tgt_LC = nn.Parameter(torch.empty(length, width))  # where the predicted token goes
        if instruct == "tokens":
            self.instr = nn.Parameter(torch.empty(1, 1, width))
            self.no_decay = (*type(self).no_decay, "instr")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = init_std(self.width)
        nn.init.trunc_normal_(self.tok_embed.weight, std=std)
        for p in (self.pos_start, self.pos_in_LC, self.pos_tgt_LC):
            nn.init.trunc_normal_(p, std=std)
        if self.instruct == "tokens":
            nn.init.trunc_normal_(self.instr, std=std)

    def seq_len(self) -> int:
        return self.length if self.instruct == "embedding" else 2 * self.length

    def _fed(self, tok_Bn: torch.Tensor, order_BL: torch.Tensor, first: int, cond: torch.Tensor) -> torch.Tensor:
        """The fed half of steps [first, first + m): step 0 is the start token, step j > 0 the token of
        cell order[j - 1] plus its position. m = n_tok + (first == 0). Returns (B, m, C)."""
        parts = []
        if first == 0:
            parts.append(cond[:, None, :] + self.pos_start)
        if tok_Bn.shape[1]:
            j0 = max(first, 1)
            cells_Bn = order_BL[:, j0 - 1 : j0 - 1 + tok_Bn.shape[1]]
            parts.append(self.tok_embed(tok_Bn) + _gather(self.pos_in_LC, cells_Bn))
        return torch.cat(parts, dim=1)

    def forward(self, inputs: dict, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs {"tokens": (B, n_tok), "order": (B, L)}; cond (B, C). Returns (B, n, C) for
        positions [start, start + n): n = n_tok (+ 1 at start 0) with "embedding", 2 n_tok
        (+ 2 at start 0) with "tokens"."""
        tok_Bn, order_BL = inputs["tokens"], inputs["order"]
        if self.instruct == "embedding":
            x_BnC = self._fed(tok_Bn, order_BL, start, cond)
            n = x_BnC.shape[1]
            if start + n > self.length:
                raise ValueError(f"positions [{start}, {start + n}) exceed the length {self.length}")
            return x_BnC + _gather(self.pos_tgt_LC, order_BL[:, start : start + n])
        if start % 2:
            raise ValueError(f"with instruction tokens a call starts at an even position, got {start}")
        j = start // 2  # first step fed
        fed_BmC = self._fed(tok_Bn, order_BL, j, cond)  # (B, m, C)
        m = fed_BmC.shape[1]
        if j + m > self.length:
            raise ValueError(f"steps [{j}, {j + m}) exceed the length {self.length}")
        ins_BmC = self.instr + _gather(self.pos_tgt_LC, order_BL[:, j : j + m])  # (B, m, C)
        pairs_Bm2C = torch.stack([fed_BmC, ins_BmC], dim=2)
        return rearrange(pairs_Bm2C, "b m two c -> b (m two) c")
