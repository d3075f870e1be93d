"""RAR (randomness-annealed autoregression, arXiv 2411.00776): random permutations annealed to raster.

Training: each sample is teacher-forced in a uniform random permutation of the cells with
probability r, else in raster (row-major) order; r = 1 until `anneal_start` of the training budget,
falls linearly to 0 at `anneal_end`, and stays 0 (RAR's default: epochs 200 -> 300 of 400, so
0.5 -> 0.75). The order declares `uses_training_progress`, so the trainer calls
`set_training_progress(fraction)` before each batch; before any call the fraction is 0 (r = 1).
The input is told the cell it predicts next by a target-aware position embedding (the stem of
`random-ar` with instruct = "embedding").
Sampling: in raster order (`sample_order`, default "row"), one token per step with the static KV
cache (or recomputing the prefix per step: the same tokens for the same seed).
Editing: the kept cells must be a prefix of the sampling order (the annealed model was last trained
on raster order only); the prefix is teacher-forced and the rest sampled.
"""

from __future__ import annotations

import torch
from genorder_plugins.random_ar.order import RandomAR, SampleOrder, random_orders
from pydantic import Field, model_validator

from genorder import TokenLayout


class RAR(RandomAR):
    """Random permutations annealed to raster (RAR), with a target-aware position embedding; samples in raster order."""

    class Config(RandomAR.Config):
        sample_order: SampleOrder = Field("row", description="generation order at sampling (RAR: raster)")
        anneal_start: float = Field(0.5, ge=0, le=1, description="fraction of training where r starts falling from 1")
        anneal_end: float = Field(0.75, ge=0, le=1, description="fraction of training where r reaches 0")

        @model_validator(mode="after")
        def _ordered(self):
            if self.anneal_end < self.anneal_start:
                raise ValueError(f"anneal_end ({self.anneal_end}) must be >= anneal_start ({self.anneal_start})")
            return self

    config: Config
    uses_training_progress = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.fraction = 0.0

    def set_training_progress(self, fraction: float) -> None:
        self.fraction = float(fraction)

    def random_probability(self, fraction: float | None = None) -> float:
        """r: the probability that a training sample is permuted at this fraction of the budget."""
        f = self.fraction if fraction is None else fraction
        a, b = self.config.anneal_start, self.config.anneal_end
        if f <= a:
            return 1.0
        if f >= b:
            return 0.0
        return 1.0 - (f - a) / (b - a)

    def training_orders(self, batch: int, length: int, generator, device) -> torch.Tensor:
        """(B, L): a random permutation with probability r, raster order otherwise, per sample."""
        perm_BL = random_orders(batch, length, generator, device)
        coin_B = torch.rand(batch, generator=generator, device=device) < self.random_probability()
        raster_BL = torch.arange(length, device=device)[None].expand(batch, -1)
        return torch.where(coin_B[:, None], perm_BL, raster_BL)

    def can_edit(self, layout: TokenLayout, keep) -> str | None:
        if self.config.sample_order == "random":
            return None
        seq_L = self.sampling_orders(layout, 1, None, "cpu")[0]
        keep_seq = keep[0][seq_L]  # (L,) kept flags in sampling order
        n = int(keep_seq.sum())
        if bool(keep_seq[:n].all()):
            return None
        return (
            f"rar samples in the {self.config.sample_order} order, which its annealed training ends on, so it "
            "completes only a kept prefix of that order; this mask keeps a cell after a free one"
        )
