"""Next-scale prediction (VAR): generate token maps coarse to fine, one whole scale per step.

Training (VAR_SPEC §3.2): targets are all L tokens; inputs are the tokenizer's cumulative f_hat
area-downsampled to each scale (§1.5), behind the start token; position i predicts token i; the
attention is block-causal by scale (§2.3).
Sampling (§4.1): K forwards with a KV cache, each feeding one scale's positions; the batch is doubled
for CFG at every scale; the chosen codes update f_hat through the tokenizer, whose downsampled
f_hat is the next input.
Editing (VAR_SPEC §4.6, the zero-shot notebook): the same loop, with the image's own tokens put in
place of the sampled ones wherever the mask keeps the image, before f_hat is updated.
"""

from __future__ import annotations

import torch
from pydantic import Field

from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.generation import cfg_labels, double, inference, sample_step
from genorder.layout import TokenLayout, block_causal_groups
from genorder.order import Order, Progress, TrainBatch

from .stem import NextScaleStem


class NextScale(Order):
    """VAR next-scale prediction: K block-causal steps over a multi-scale tokenizer."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(True, description="sample with the KV cache (off: recompute the prefix)")

    tokenizer_kind = "multi-scale"
    kv_cache_option = "kv_cache"

    def check_tokenizer(self, tokenizer) -> None:
        if len(tokenizer.scales) < 2:
            raise UserError(
                f"next-scale needs a multi-scale tokenizer; this one has scales {tokenizer.scales}"
            )
        try:
            tokenizer.latent_dim
        except (NotImplementedError, AttributeError):
            raise UserError(f"next-scale needs a tokenizer with latent_* methods; {type(tokenizer).__name__} has none") from None

    def layout(self, tokenizer) -> TokenLayout:
        return TokenLayout(tuple(tokenizer.scales))

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        return block_causal_groups(layout)

    def num_steps(self, layout: TokenLayout) -> int:
        return layout.num_levels

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> NextScaleStem:
        return NextScaleStem(layout, tokenizer.latent_dim, width)

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        layout = TokenLayout(tuple(tokenizer.scales))
        inputs_BLc = tokenizer.latent_inputs(tokens)  # (B, L - p_1^2, Cvae)
        targets_BL = torch.cat(tokens, dim=1)  # (B, L): position i predicts token i
        return TrainBatch(inputs_BLc, targets_BL, layout.levels().to(targets_BL.device))

    @inference
    def generate(self, model, tokenizer, labels, sampler, generator, progress: Progress | None = None):
        return self._scales_loop(model, tokenizer, labels, sampler, generator, progress)

    # -- editing: VAR's zero-shot in-/out-painting and class-conditional editing (§4.6) ---------
    def can_edit(self, layout: TokenLayout, keep) -> str | None:
        return None  # any kept region: kept tokens simply replace sampled ones, scale by scale

    @inference
    def edit(self, model, tokenizer, tokens, keep, labels, sampler, generator, progress: Progress | None = None):
        """At every scale, the image's own tokens replace the sampled ones where `keep` is True,
        before f_hat is updated, so the next scale's input already holds the kept content."""
        return self._scales_loop(model, tokenizer, labels, sampler, generator, progress, tokens, keep)

    def _scales_loop(self, model, tokenizer, labels, sampler, generator, progress, known=None, keep=None):
        layout = self.layout(tokenizer)
        K, B = layout.num_levels, labels.shape[0]
        lab = cfg_labels(labels, model.null_class, sampler)
        cache = model.new_cache(lab.shape[0]) if self.config.kv_cache else None
        dev = labels.device
        x_in = torch.zeros(lab.shape[0], 0, tokenizer.latent_dim, device=dev)  # the start token only
        prefix = x_in  # all latent inputs so far (used without the cache)
        f_hat, out = None, []
        for k, (begin, end) in enumerate(layout.bounds):
            if cache is not None:
                logits = model(x_in, lab, start=begin, cache=cache)  # (2B, p_k^2, V)
            else:
                logits = model(prefix, lab, start=0)[:, begin:end]
            idx, guided = sample_step(sampler, logits, B, k, K, generator)  # (B, p_k^2)
            soft = sampler.soft_codes_weights(guided, k, K, generator)
            codes = soft @ tokenizer.codebook if soft is not None else tokenizer.code_vectors(idx)
            if known is not None:
                keep_1l = keep[k].to(dev)[None, :]  # (1, p_k^2)
                idx = torch.where(keep_1l, known[k].to(dev), idx)
                codes = torch.where(keep_1l[..., None], tokenizer.code_vectors(known[k].to(dev)), codes)
            out.append(idx)
            f_hat, nxt = tokenizer.latent_step(k, f_hat, codes)
            if nxt is not None:
                x_in = double(nxt, sampler)
                prefix = torch.cat([prefix, x_in], dim=1)
            if progress:
                progress(k + 1, K)
        return out
