"""Raster autoregression (the VAR paper's AR baseline): one token per step in row-major order.

Training: the sequence is the L tokens of the layout flattened scale by scale, row-major inside each
scale; position 0 is the start token (class embedding + pos_start), position i > 0 is fed token
i - 1, and position i predicts token i under token-causal attention.
Sampling: L steps. With the KV cache, one prefill of the start token then L - 1 single-token
forwards through a preallocated static cache; without it, every step recomputes the whole prefix
(the O(n^2)-forwards baseline). Both paths draw from the generator in the same order, so they give
the same tokens for the same seed.

Editing: only when the kept tokens are a raster-order prefix (out-painting the bottom rows): the
prefix is teacher-forced, the rest sampled. Any other kept region is refused with the reason.

Default layout: a single-scale tokenizer, (16,) -> L = 256. With `multiscale = True` the order runs
over every scale of a multi-scale tokenizer (e.g. 680 tokens), the order-vs-tokenizer control.

Scan orders (RAR, arXiv 2411.00776, Tab. 3): `scan = row | zcurve | subsample | spiral-in |
spiral-out | alternate` (`scans.py`) generates the cells of each token map in that fixed permutation
instead of row-major; sequence position i then predicts the i-th cell of the scan, the learned
position table is indexed by the step (so it learns each cell's embedding), and the returned maps are
row-major again. `scan = row` is the identity and takes exactly the code path of plain raster (no
permutation is applied), and it is left out of the config's dump, so default raster runs keep their
fingerprints. Editing then completes a kept prefix in the scan's order.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_serializer

from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.generation import cfg_labels, double, inference, sample_step
from genorder.layout import TokenLayout, causal_groups
from genorder.order import Order, Progress, TrainBatch

from .scans import scan_order
from .stem import RasterStem


class Raster(Order):
    """Next-token prediction over the tokenizer's token maps, row-major or in a fixed scan (option scan = row | zcurve | subsample | spiral-in | spiral-out | alternate)."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(
            True, description="sample with the static KV cache (off: recompute the prefix per step)"
        )
        multiscale: bool = Field(
            False, description="run over every scale of a multi-scale tokenizer (the control)"
        )
        scan: Literal["row", "zcurve", "subsample", "spiral-in", "spiral-out", "alternate"] = Field(
            "row", description="the fixed order the cells of each map are generated in (RAR Tab. 3)"
        )

        @model_serializer(mode="wrap")
        def _omit_default_scan(self, handler):
            """The default scan is not dumped: raster runs from before the option keep their
            fingerprints (`genorder.runs` hashes the dumped config)."""
            out = handler(self)
            if self.scan == "row" and isinstance(out, dict):
                out.pop("scan", None)
            return out

    config: Config
    kv_cache_option = "kv_cache"
    reference_baseline = True  # the VAR paper's AR baseline: `genorder bench` compares against it

    @property
    def tokenizer_kind(self) -> str:  # the multi-scale control runs over a multi-scale tokenizer
        return "multi-scale" if self.config.multiscale else "single-scale"

    def check_tokenizer(self, tokenizer) -> None:
        scales = tuple(tokenizer.scales)
        if len(scales) > 1 and not self.config.multiscale:
            raise UserError(
                f"raster expects a single-scale tokenizer, but this one has scales {scales}; "
                "set order option multiscale = true to run raster over all "
                f"{sum(p * p for p in scales)} multi-scale tokens (the order-vs-tokenizer "
                "control), "
                "or use a single-scale tokenizer"
            )

    def layout(self, tokenizer) -> TokenLayout:
        self.check_tokenizer(tokenizer)
        return TokenLayout(tuple(tokenizer.scales))

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        return causal_groups(layout.length)

    def num_steps(self, layout: TokenLayout) -> int:
        return layout.length

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> RasterStem:
        return RasterStem(layout.length, tokenizer.codebook_size, width)

    def scan_permutation(self, layout: TokenLayout) -> torch.Tensor | None:
        """(L,) int64 flat layout index generated at each sequence position (scale by scale, each
        map in the scan's order), or None for `scan = row` (the identity)."""
        if self.config.scan == "row":
            return None
        return torch.cat([scan_order(self.config.scan, p) + b for p, (b, _) in zip(layout.scales, layout.bounds)])

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        layout = self.layout(tokenizer)
        if len(tokens) != layout.num_levels:
            raise ValueError(f"expected {layout.num_levels} token maps, got {len(tokens)}")
        targets_BL = layout.join(tokens)  # (B, L): position i predicts token i
        perm_L = self.scan_permutation(layout)
        if perm_L is not None:
            targets_BL = targets_BL[:, perm_L.to(targets_BL.device)]  # (B, L) in scan order
        inputs_BL1 = targets_BL[:, :-1]  # (B, L - 1): position i > 0 is fed token i - 1
        return TrainBatch(inputs_BL1, targets_BL, layout.levels().to(targets_BL.device))

    @inference
    def generate(
        self, model, tokenizer, labels, sampler, generator, progress: Progress | None = None
    ):
        return self._tokens_loop(model, tokenizer, labels, sampler, generator, progress)

    # -- editing: only out-painting after a raster-order prefix -----------------------------------
    def can_edit(self, layout: TokenLayout, keep) -> str | None:
        """None when the kept tokens are a prefix in raster (scan) order; otherwise the reason."""
        keep_L = layout.join([k[None] for k in keep])[0]  # (L,) row-major
        perm_L = self.scan_permutation(layout)
        if perm_L is not None:
            keep_L = keep_L[perm_L]  # (L,) in generation order
        n = int(keep_L.sum())
        if bool(keep_L[:n].all()):
            return None
        first_free = int((~keep_L).nonzero()[0])
        later_kept = int(keep_L[first_free:].nonzero()[0]) + first_free
        if perm_L is not None:
            first_free, later_kept = int(perm_L[first_free]), int(perm_L[later_kept])
        what = "raster order" if perm_L is None else f"the {self.config.scan} scan order"
        return (
            f"raster generates tokens strictly in {what}, each seeing only the tokens before it, "
            "so it can only complete a kept prefix (out-painting the bottom rows); here token "
            f"{_where(layout, first_free)} must be generated before the kept token {_where(layout, later_kept)}"
        )

    @inference
    def edit(self, model, tokenizer, tokens, keep, labels, sampler, generator, progress: Progress | None = None):
        """Teacher-force the kept prefix (one prefill through the KV cache), then sample the rest."""
        layout = self.layout(tokenizer)
        prefix_BL = layout.join([t.to(labels.device) for t in tokens])  # (B, L) row-major
        perm_L = self.scan_permutation(layout)
        if perm_L is not None:
            prefix_BL = prefix_BL[:, perm_L.to(labels.device)]  # (B, L) in scan order
        prefix_BL = prefix_BL[:, : int(sum(int(k.sum()) for k in keep))]
        return self._tokens_loop(model, tokenizer, labels, sampler, generator, progress, prefix_BL)

    def _tokens_loop(self, model, tokenizer, labels, sampler, generator, progress, prefix_BL=None):
        layout = self.layout(tokenizer)
        L, B = layout.length, labels.shape[0]
        lab = cfg_labels(labels, model.null_class, sampler)  # (B or 2B,)
        dev = labels.device
        out_BL = torch.zeros(B, L, dtype=torch.long, device=dev)
        n0 = 0 if prefix_BL is None else prefix_BL.shape[1]  # tokens given, not generated
        if n0:
            out_BL[:, :n0] = prefix_BL
        if n0 == L:
            return self._unscan(layout, out_BL)
        cache = model.new_cache(lab.shape[0], max_len=L) if self.config.kv_cache else None
        x_in = double(out_BL[:, :n0], sampler)  # start token (+ the kept prefix)
        for i in range(n0, L):
            if cache is not None:
                start = 0 if i == n0 else i
                logits = model(x_in, lab, start=start, cache=cache)[:, -1:]  # (B2, 1, V)
            else:
                prefix = double(out_BL[:, :i], sampler)  # (B2, i): tokens 0..i-1
                logits = model(prefix, lab, start=0)[:, -1:]  # (B2, 1, V)
            idx_B1, _ = sample_step(sampler, logits, B, i, L, generator)
            out_BL[:, i : i + 1] = idx_B1
            x_in = double(idx_B1, sampler)
            if progress:
                progress(i + 1 - n0, L - n0)
        return self._unscan(layout, out_BL)

    def _unscan(self, layout: TokenLayout, seq_BL: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) tokens in generation order -> the layout's row-major maps [(B, p_k^2)]."""
        perm_L = self.scan_permutation(layout)
        if perm_L is None:
            return layout.split(seq_BL)
        out_BL = torch.empty_like(seq_BL)
        out_BL[:, perm_L.to(seq_BL.device)] = seq_BL
        return layout.split(out_BL)


def _where(layout: TokenLayout, i: int) -> str:
    """Flat position -> 'row r, column c' (with the scale when there are several)."""
    k = int(layout.levels()[i])
    j = i - layout.bounds[k][0]
    p = layout.scales[k]
    scale = f" of scale {k} ({p}x{p})" if layout.num_levels > 1 else ""
    return f"(row {j // p}, column {j % p}){scale}"
