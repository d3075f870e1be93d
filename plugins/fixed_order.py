"""Shared base of the orders that generate the cells of one token map in a fixed plan of parallel
steps (`nar`, `par`): a `Plan` says, for each sequence position, which cell it predicts, at which
step, and which earlier cells it is fed.

Sequence: S = L positions, position s predicts the token of cell `cells[s]` at step `steps[s]`
(non-decreasing). Attention is block-causal by step (`groups = steps`): a position sees every
position of its own and earlier steps. The input of a position is the sum of K source embeddings
(`src_embed[k]` of the token of cell `sources[s, k]`, or of a learned "none" id V when there is no
such source) plus its learned position; position 0 also adds the class condition (the start).
Every source cell is generated at an earlier step than the position it is fed to, so a step's
inputs are known before it runs: generation takes one backbone call per step, through the static
KV cache (every key of earlier steps is visible, no mask), or, with `kv_cache = false`, recomputing
all positions up to the step; both draw the same tokens for the same seed.
Editing: when the kept cells are a prefix of the sequence (every kept cell comes before every free
one), the kept tokens overwrite what each step samples there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from genorder import (
    Order,
    Progress,
    Stem,
    TokenLayout,
    TrainBatch,
    UserError,
    cfg_labels,
    double,
    inference,
    init_std,
    sample_step,
)


@dataclass(frozen=True)
class Plan:
    cells: torch.Tensor  # (L,) int64 row-major cell predicted at each sequence position
    steps: torch.Tensor  # (L,) int64 generation step of each position, non-decreasing from 0
    sources: torch.Tensor  # (L, K) int64 cells fed at each position, -1 = none

    def __post_init__(self) -> None:
        L = self.cells.numel()
        if not torch.equal(self.cells.sort().values, torch.arange(L)):
            raise ValueError("plan cells must be a permutation of the cells")
        if int(self.steps[0]) != 0 or bool((self.steps[1:] - self.steps[:-1] < 0).any()) or bool(
            (self.steps[1:] - self.steps[:-1] > 1).any()
        ):
            raise ValueError("plan steps must start at 0 and grow by 0 or 1")
        step_of_cell = torch.empty(L, dtype=torch.long)
        step_of_cell[self.cells] = self.steps
        src = self.sources.clamp(min=0)
        later = (step_of_cell[src] >= self.steps[:, None]) & (self.sources >= 0)
        if bool(later.any()):
            raise ValueError("a position is fed a cell that is not generated at an earlier step")

    @property
    def num_steps(self) -> int:
        return int(self.steps[-1]) + 1

    def bounds(self) -> list[tuple[int, int]]:
        """[begin, end) sequence positions of each step."""
        counts = torch.bincount(self.steps).tolist()
        out, b = [], 0
        for n in counts:
            out.append((b, b + n))
            b += n
        return out


class SourceStem(Stem):
    """x_s = sum_k src_embed[k](token of sources[s, k], or V = none) + pos_1LC[s] (+ condition and
    pos_start at s = 0)."""

    no_decay = ("pos_1LC", "pos_start")

    def __init__(self, length: int, vocab: int, width: int, num_sources: int) -> None:
        super().__init__()
        self.length, self.width = length, width
        self.src_embed = nn.ModuleList([nn.Embedding(vocab + 1, width) for _ in range(num_sources)])
        self.pos_start = nn.Parameter(torch.empty(1, 1, width))
        self.pos_1LC = nn.Parameter(torch.empty(1, length, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = init_std(self.width)
        for e in self.src_embed:
            nn.init.trunc_normal_(e.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs (B, n, K) int64 ids in [0, V] (V = none) of the source tokens of positions
        [start, start + n); cond (B, C). Returns (B, n, C)."""
        n = inputs.shape[1]
        if start + n > self.length:
            raise ValueError(f"positions [{start}, {start + n}) exceed the length {self.length}")
        ids_KBn = rearrange(inputs, "b n k -> k b n")
        x_BnC = sum(e(ids) for e, ids in zip(self.src_embed, ids_KBn)) + self.pos_1LC[:, start : start + n]
        if start == 0:
            x_BnC = torch.cat([x_BnC[:, :1] + cond[:, None, :] + self.pos_start, x_BnC[:, 1:]], dim=1)
        return x_BnC


def gather_sources(map_BL: torch.Tensor, sources_nK: torch.Tensor, none_id: int) -> torch.Tensor:
    """(B, L) row-major token map, (n, K) source cells (-1 = none) -> (B, n, K) ids (none_id where -1)."""
    ids_BnK = map_BL[:, sources_nK.clamp(min=0)]
    return ids_BnK.masked_fill((sources_nK < 0)[None], none_id)


class FixedPlanOrder(Order):
    """Base class: subclasses define `Config` (with a bool `kv_cache`) and `plan(side)`."""

    tokenizer_kind = "single-scale"
    kv_cache_option = "kv_cache"
    compare_default = False  # an order of the field, run by `compare --orders all`
    num_sources = 1

    def plan(self, side: int) -> Plan:
        raise NotImplementedError

    def check_tokenizer(self, tokenizer) -> None:
        if len(tokenizer.scales) != 1:
            raise UserError(
                f"{type(self).__name__} needs a single-scale tokenizer; this one has scales {tuple(tokenizer.scales)}"
            )

    def layout(self, tokenizer) -> TokenLayout:
        self.check_tokenizer(tokenizer)
        return TokenLayout(tuple(tokenizer.scales))

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        return self.plan(layout.scales[0]).steps.clone()

    def num_steps(self, layout: TokenLayout) -> int:
        return self.plan(layout.scales[0]).num_steps

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> SourceStem:
        return SourceStem(layout.length, tokenizer.codebook_size, width, self.num_sources)

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        layout = self.layout(tokenizer)
        if len(tokens) != 1:
            raise ValueError(f"expected one token map, got {len(tokens)}")
        tok_BL = tokens[0]
        plan = self.plan(layout.scales[0])
        dev = tok_BL.device
        inputs_BLK = gather_sources(tok_BL, plan.sources.to(dev), tokenizer.codebook_size)
        targets_BL = tok_BL[:, plan.cells.to(dev)]  # (B, L) in sequence order
        return TrainBatch(inputs_BLK, targets_BL, torch.zeros(layout.length, dtype=torch.long, device=dev))

    @inference
    def generate(self, model, tokenizer, labels, sampler, generator, progress: Progress | None = None):
        return self._loop(model, tokenizer, labels, sampler, generator, progress, None, None)

    # -- editing: complete a kept prefix of the sequence -----------------------------------------
    def can_edit(self, layout: TokenLayout, keep) -> str | None:
        plan = self.plan(layout.scales[0])
        keep_seq = keep[0][plan.cells]
        n = int(keep_seq.sum())
        if bool(keep_seq[:n].all()):
            return None
        return (
            f"{type(self).__name__} generates the cells in a fixed plan of steps, each seeing only earlier "
            "steps, so it can only complete kept cells that all come before the free ones in that plan"
        )

    @inference
    def edit(self, model, tokenizer, tokens, keep, labels, sampler, generator, progress: Progress | None = None):
        return self._loop(model, tokenizer, labels, sampler, generator, progress, tokens[0], keep[0])

    def _loop(self, model, tokenizer, labels, sampler, generator, progress, known_BL, keep_L):
        layout = self.layout(tokenizer)
        plan = self.plan(layout.scales[0])
        L, B, dev, V = layout.length, labels.shape[0], labels.device, tokenizer.codebook_size
        lab = cfg_labels(labels, model.null_class, sampler)  # (B or 2B,)
        cells, sources = plan.cells.to(dev), plan.sources.to(dev)
        map_BL = torch.zeros(B, L, dtype=torch.long, device=dev)  # row-major
        cache = model.new_cache(lab.shape[0], max_len=L) if self.config.kv_cache else None
        bounds = plan.bounds()
        T = len(bounds)
        for t, (a, b) in enumerate(bounds):
            if cache is not None:
                feed_BnK = gather_sources(map_BL, sources[a:b], V)
                logits = model(double(feed_BnK, sampler), lab, start=a, cache=cache)  # (B2, b - a, V)
            else:
                feed_BnK = gather_sources(map_BL, sources[:b], V)
                logits = model(double(feed_BnK, sampler), lab, start=0)[:, a:b]  # (B2, b - a, V)
            idx_Bn, _ = sample_step(sampler, logits, B, t, T, generator)
            if known_BL is not None:  # kept cells of this step take the image's own token
                kept_n = keep_L.to(dev)[cells[a:b]]
                idx_Bn = torch.where(kept_n[None], known_BL.to(dev)[:, cells[a:b]], idx_Bn)
            map_BL[:, cells[a:b]] = idx_Bn
            if progress:
                progress(t + 1, T)
        return [map_BL]
