"""Centre-out spiral autoregression: one token per step, starting at the centre of the p x p token
map and walking a square spiral outwards (right, down, left, up with growing runs).

Training: the tokens are permuted into spiral order; position 0 is the start token (class
condition + a learned start vector), position i > 0 is fed token i - 1 of the spiral, and position
i predicts token i under token-causal attention (`genorder.causal_groups`).
Sampling: L steps through the backbone's static KV cache (`model.new_cache`, `start=i`), or, with
`kv_cache = false`, recomputing the whole prefix each step; both draw from the generator in the same
order, so they give the same tokens (`genorder check spiral` verifies it). The spiral is undone
before returning the token map.

Declared capabilities: `tokenizer_kind = "single-scale"`, `kv_cache_option = "kv_cache"` (so
`genorder bench --no-kv-cache` switches it and FLOPs are counted for the cached path).
"""

from __future__ import annotations

import torch
from pydantic import Field

from genorder import (
    ComponentConfig,
    Order,
    Progress,
    TokenLayout,
    TrainBatch,
    UserError,
    causal_groups,
    cfg_labels,
    double,
    inference,
    sample_step,
)

from .stem import SpiralStem


def spiral_order(p: int) -> torch.Tensor:
    """(p*p,) int64 row-major cell indices in centre-out spiral order; a permutation of [0, p*p).

    p = 3 -> [4, 5, 8, 7, 6, 3, 0, 1, 2]: the centre, then clockwise rings."""
    r = c = (p - 1) // 2
    out, run, moves = [r * p + c], 1, [(0, 1), (1, 0), (0, -1), (-1, 0)]
    d = 0
    while len(out) < p * p:
        for _ in range(2):  # each run length is used for two directions
            dr, dc = moves[d % 4]
            for _ in range(run):
                r, c = r + dr, c + dc
                if 0 <= r < p and 0 <= c < p:
                    out.append(r * p + c)
            d += 1
        run += 1
    return torch.tensor(out, dtype=torch.long)


class Spiral(Order):
    """Centre-out spiral next-token prediction over a single-scale tokenizer."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(True, description="sample with the static KV cache (off: recompute the prefix per step)")

    config: Config
    tokenizer_kind = "single-scale"
    kv_cache_option = "kv_cache"

    def check_tokenizer(self, tokenizer) -> None:
        if len(tokenizer.scales) != 1:
            raise UserError(f"spiral needs a single-scale tokenizer; this one has scales {tuple(tokenizer.scales)}")

    def layout(self, tokenizer) -> TokenLayout:
        self.check_tokenizer(tokenizer)
        return TokenLayout(tuple(tokenizer.scales))

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        return causal_groups(layout.length)  # (L,): position i sees positions <= i

    def num_steps(self, layout: TokenLayout) -> int:
        return layout.length

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> SpiralStem:
        return SpiralStem(spiral_order(layout.scales[0]), tokenizer.codebook_size, width)

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        layout = self.layout(tokenizer)
        perm = spiral_order(layout.scales[0]).to(tokens[0].device)
        targets_BL = tokens[0][:, perm]  # (B, L) in spiral order: position i predicts spiral token i
        inputs_BL1 = targets_BL[:, :-1]  # (B, L - 1): position i > 0 is fed spiral token i - 1
        return TrainBatch(inputs_BL1, targets_BL, torch.zeros(layout.length, dtype=torch.long, device=perm.device))

    @inference
    def generate(self, model, tokenizer, labels, sampler, generator, progress: Progress | None = None):
        layout = self.layout(tokenizer)
        L, B, dev = layout.length, labels.shape[0], labels.device
        lab = cfg_labels(labels, model.null_class, sampler)  # (B or 2B,)
        seq_BL = torch.zeros(B, L, dtype=torch.long, device=dev)  # spiral order
        cache = model.new_cache(lab.shape[0], max_len=L) if self.config.kv_cache else None
        x_in = torch.zeros(lab.shape[0], 0, dtype=torch.long, device=dev)  # the start token only
        for i in range(L):
            if cache is not None:
                logits = model(x_in, lab, start=i, cache=cache)  # (B2, 1, V): position i only
            else:
                logits = model(double(seq_BL[:, :i], sampler), lab, start=0)[:, -1:]  # (B2, 1, V)
            idx_B1, _ = sample_step(sampler, logits, B, i, L, generator)
            seq_BL[:, i : i + 1] = idx_B1
            x_in = double(idx_B1, sampler)
            if progress:
                progress(i + 1, L)
        out_BL = torch.empty_like(seq_BL)
        out_BL[:, spiral_order(layout.scales[0]).to(dev)] = seq_BL  # undo the spiral: row-major
        return [out_BL]
