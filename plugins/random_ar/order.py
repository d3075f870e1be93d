"""Random-order autoregression (σ-GPT, arXiv 2404.09562; RandAR, arXiv 2412.01827): one token per
step, in a fresh random permutation of the cells for every training sample.

Training: per sample a uniform random permutation `order` (B, L) of the row-major cells; sequence
step i predicts the token of cell order[i] under token-causal attention, fed the tokens of cells
order[0..i-1]. The model is told which cell it predicts next (`instruct`, see `stem.py`):
  * "embedding" (default): a target-position embedding added to each input (σ-GPT, RAR); L
    positions, the cost of raster;
  * "tokens": RandAR's position-instruction tokens, one before each image token, so 2L positions
    (attention groups of two: a fed token and the next instruction, so generation still takes L
    KV-cached steps of two positions each).
Sampling (`sample_order`): in a fresh random order per sample ("random"), or in one of raster's
fixed scans (row, zcurve, ...), with the static KV cache (`kv_cache`), or recomputing the prefix
per step; both draw from the generator in the same order, so they give the same tokens.
Editing (zero-shot in-painting of any region): the kept cells are put first in the order and
teacher-forced in one prefill; the other cells are then sampled in the sampling order.
"""

from __future__ import annotations

from typing import Literal

import torch
from genorder_plugins.raster.scans import scan_order
from pydantic import Field

from genorder import (
    IGNORE,
    ComponentConfig,
    Order,
    Progress,
    TokenLayout,
    TrainBatch,
    UserError,
    cfg_labels,
    inference,
    sample_step,
)

from .stem import RandomARStem

SampleOrder = Literal["random", "row", "zcurve", "subsample", "spiral-in", "spiral-out", "alternate"]


def random_orders(batch: int, length: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(B, L) int64: an independent uniform random permutation of [0, L) per row."""
    return torch.rand(batch, length, generator=generator, device=device).argsort(dim=1)


def _double(inputs: dict, sampler) -> dict:
    """The CFG-doubled batch of a dict input (the unconditional rows use the same order)."""
    if not sampler.uses_cfg:
        return inputs
    return {k: torch.cat([v, v]) for k, v in inputs.items()}


class RandomAR(Order):
    """Random-order next-token prediction, told the next position (σ-GPT / RandAR); samples in a random or given order, in-paints any region."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(True, description="sample with the static KV cache (off: recompute the prefix per step)")
        instruct: Literal["embedding", "tokens"] = Field(
            "embedding",
            description="how the next position is given: a target-position embedding (L positions) or "
            "RandAR's position-instruction tokens (2L positions)",
        )
        sample_order: SampleOrder = Field(
            "random", description="generation order at sampling: a fresh random one per sample, or a fixed scan"
        )

    config: Config
    tokenizer_kind = "single-scale"
    kv_cache_option = "kv_cache"
    compare_default = False  # an order of the field, run by `compare --orders all`

    def check_tokenizer(self, tokenizer) -> None:
        if len(tokenizer.scales) != 1:
            raise UserError(
                f"{type(self).__name__} needs a single-scale tokenizer; this one has scales {tuple(tokenizer.scales)}"
            )

    def layout(self, tokenizer) -> TokenLayout:
        self.check_tokenizer(tokenizer)
        return TokenLayout(tuple(tokenizer.scales))

    @property
    def _per_step(self) -> int:
        """Sequence positions per generated token: 1, or 2 with instruction tokens."""
        return 2 if self.config.instruct == "tokens" else 1

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        # token-causal over the generation steps; with instruction tokens a step is the pair
        # (fed token, next instruction), which may see each other (the instruction holds no token)
        return torch.arange(self._per_step * layout.length, device="cpu") // self._per_step

    def num_steps(self, layout: TokenLayout) -> int:
        return layout.length

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> RandomARStem:
        return RandomARStem(layout.length, tokenizer.codebook_size, width, self.config.instruct)

    # -- training ------------------------------------------------------------------------------
    def training_orders(self, batch: int, length: int, generator, device) -> torch.Tensor:
        """(B, L) generation order of each training sample: a fresh random permutation."""
        return random_orders(batch, length, generator, device)

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        self.check_tokenizer(tokenizer)
        if len(tokens) != 1:
            raise ValueError(f"expected one token map, got {len(tokens)}")
        tok_BL = tokens[0]
        B, L = tok_BL.shape
        order_BL = self.training_orders(B, L, generator, tok_BL.device)
        seq_BL = tok_BL.gather(1, order_BL)  # (B, L): step i holds the token of cell order[i]
        inputs = {"tokens": seq_BL[:, :-1], "order": order_BL}
        if self._per_step == 1:
            targets_BS = seq_BL
            levels_S = torch.zeros(L, dtype=torch.long, device=tok_BL.device)
        else:  # (fed, instruction) pairs: the instruction of step i predicts it
            ignore_BL = torch.full_like(seq_BL, IGNORE)
            targets_BS = torch.stack([ignore_BL, seq_BL], dim=2).reshape(B, 2 * L)
            levels_S = torch.tensor([-1, 0], device=tok_BL.device).repeat(L)
        return TrainBatch(inputs, targets_BS, levels_S)

    # -- sampling ------------------------------------------------------------------------------
    def sampling_orders(self, layout: TokenLayout, batch: int, generator, device) -> torch.Tensor:
        """(B, L) order of each generated sample: random per sample, or the fixed scan."""
        if self.config.sample_order == "random":
            return random_orders(batch, layout.length, generator, device)
        return scan_order(self.config.sample_order, layout.scales[0]).to(device)[None].expand(batch, -1).contiguous()

    @inference
    def generate(self, model, tokenizer, labels, sampler, generator, progress: Progress | None = None):
        layout = self.layout(tokenizer)
        order_BL = self.sampling_orders(layout, labels.shape[0], generator, labels.device)
        return self._loop(model, layout, labels, sampler, generator, progress, order_BL, None)

    # -- editing: in-paint any region ------------------------------------------------------------
    def can_edit(self, layout: TokenLayout, keep) -> str | None:
        return None  # any kept set: it goes first in the order, the rest follows

    @inference
    def edit(self, model, tokenizer, tokens, keep, labels, sampler, generator, progress: Progress | None = None):
        """Kept cells first (teacher-forced in one prefill), then the free cells in the sampling
        order (its relative order restricted to them)."""
        layout = self.layout(tokenizer)
        B, dev = labels.shape[0], labels.device
        base_BL = self.sampling_orders(layout, B, generator, dev)  # (B, L)
        keep_L = keep[0].to(dev)
        kept_first_BL = keep_L[base_BL].long().argsort(dim=1, descending=True, stable=True)
        order_BL = base_BL.gather(1, kept_first_BL)  # kept cells first, each group in base order
        known_BL = tokens[0].to(dev).gather(1, order_BL)[:, : int(keep_L.sum())]
        return self._loop(model, layout, labels, sampler, generator, progress, order_BL, known_BL)

    def _loop(self, model, layout, labels, sampler, generator, progress, order_BL, known_BL):
        """Generate the cells in `order_BL` (B, L), the first `known_BL` (B, n0) given."""
        L, B, dev, k = layout.length, labels.shape[0], labels.device, self._per_step
        lab = cfg_labels(labels, model.null_class, sampler)  # (B or 2B,)
        seq_BL = torch.zeros(B, L, dtype=torch.long, device=dev)  # step order
        n0 = 0 if known_BL is None else known_BL.shape[1]
        if n0:
            seq_BL[:, :n0] = known_BL
        if n0 < L:
            cache = model.new_cache(lab.shape[0], max_len=k * L) if self.config.kv_cache else None
            order_in = _double({"order": order_BL}, sampler)["order"]
            x_in = seq_BL[:, :n0]
            for i in range(n0, L):
                if cache is not None:
                    start = 0 if i == n0 else k * i
                    feed = _double({"tokens": x_in, "order": order_BL}, sampler)
                    logits = model(feed, lab, start=start, cache=cache)[:, -1:]  # (B2, 1, V)
                else:
                    feed = {"tokens": _double({"t": seq_BL[:, :i]}, sampler)["t"], "order": order_in}
                    logits = model(feed, lab, start=0)[:, -1:]  # (B2, 1, V): predicts step i
                idx_B1, _ = sample_step(sampler, logits, B, i, L, generator)
                seq_BL[:, i : i + 1] = idx_B1
                x_in = idx_B1
                if progress:
                    progress(i + 1 - n0, L - n0)
        out_BL = torch.empty_like(seq_BL)
        out_BL.scatter_(1, order_BL, seq_BL)  # back to row-major
        return [out_BL]
