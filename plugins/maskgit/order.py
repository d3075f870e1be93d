"""MaskGIT: bidirectional masked-token prediction, decoded in T parallel steps.

Training: per sample a mask ratio r = cos(pi/2 * u), u ~ U(0, 1), masks round(r * L) positions
(at least one) chosen uniformly at random; masked positions are fed [MASK] and carry the loss.
Sampling (`Config.steps` = T): everything starts masked; each step is one full bidirectional
forward (no KV cache), tokens are sampled for every position, and the `tokens_per_step[t]` most
confident new ones are fixed (confidence = log p + annealed Gumbel noise; fixed tokens have +inf and
are never re-masked), or, with `unmask_order = "halton"`, the next positions of a 2-D Halton order
(Halton-MaskGIT: no confidence, no retraining), or, with `unmask_order = "random"`, the next positions
of a random permutation drawn per sample at the start (no confidence). The option is also accepted
as `order` (`order = confidence | random | halton`). `unmask_order = "random"` with `steps` = L (one
token per step) is MAR's "random order, bidirectional" row (arXiv 2406.11838, Tab. 1).
Editing: the kept tokens start fixed (confidence +inf) and the rest is decoded by the same loop.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import AliasChoices, Field

from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.generation import cfg_labels, double, inference, sample_step
from genorder.layout import TokenLayout, bidirectional_groups
from genorder.order import IGNORE, Order, Progress, TrainBatch
from genorder.sampler import gumbel

from .schedule import cosine_schedule, halton_order, tokens_per_step
from .stem import MaskGITStem


class MaskGIT(Order):
    """Masked parallel decoding over a single-scale tokenizer; unmasks by confidence, in a random order or in a 2-D Halton order (option order = confidence | random | halton)."""

    class Config(ComponentConfig):
        steps: int = Field(8, ge=1, description="sampling steps T (one full forward each)")
        choice_temperature: float = Field(
            4.5, ge=0.0, description="Gumbel noise on the confidence, annealed linearly to 0"
        )
        unmask_order: Literal["confidence", "random", "halton"] = Field(
            "confidence",
            validation_alias=AliasChoices("unmask_order", "order"),
            description="positions fixed per step: most confident, next of a random permutation per "
            "sample, or next in a 2-D Halton order (also accepted as `order`)",
        )

    config: Config
    tokenizer_kind = "single-scale"

    def check_tokenizer(self, tokenizer) -> None:
        scales = tuple(tokenizer.scales)
        if len(scales) != 1:
            raise UserError(f"maskgit needs a single-scale tokenizer; this one has scales {scales}")
        if self.config.steps > scales[0] ** 2:
            raise UserError(
                f"maskgit steps = {self.config.steps} exceeds the {scales[0] ** 2} tokens to "
                "generate; "
                "every step must fix at least one token"
            )

    def layout(self, tokenizer) -> TokenLayout:
        self.check_tokenizer(tokenizer)
        return TokenLayout(tuple(tokenizer.scales))

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        return bidirectional_groups(layout.length + 1)  # S = class token + L tokens

    def num_steps(self, layout: TokenLayout) -> int:
        return self.config.steps

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> MaskGITStem:
        return MaskGITStem(layout.length, tokenizer.codebook_size, width)

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        layout = self.layout(tokenizer)
        if len(tokens) != 1:
            raise ValueError(f"expected one token map, got {len(tokens)}")
        tok_BL = tokens[0]
        B, L = tok_BL.shape
        dev = tok_BL.device
        V = tokenizer.codebook_size
        u_B = torch.rand(B, generator=generator, device=dev)
        num_B = torch.round(cosine_schedule(u_B) * L).long().clamp_(1, L)  # masked per sample
        scores_BL = torch.rand(B, L, generator=generator, device=dev)
        rank_BL = scores_BL.argsort(dim=1).argsort(dim=1)  # a uniform random permutation per row
        masked_BL = rank_BL < num_B[:, None]
        inputs_BL = tok_BL.masked_fill(masked_BL, V)
        targets_BL = tok_BL.masked_fill(~masked_BL, IGNORE)
        ignore_B1 = torch.full((B, 1), IGNORE, dtype=torch.long, device=dev)  # the class token
        targets_BS = torch.cat([ignore_B1, targets_BL], dim=1)
        levels_S = torch.cat([torch.tensor([-1]), layout.levels()]).to(dev)
        return TrainBatch(inputs_BL, targets_BS, levels_S)

    @inference
    def generate(
        self, model, tokenizer, labels, sampler, generator, progress: Progress | None = None
    ):
        return self._decode(model, tokenizer, labels, sampler, generator, progress)

    # -- editing: fix the known tokens, decode the rest ------------------------------------------
    def can_edit(self, layout: TokenLayout, keep) -> str | None:
        return None  # any kept region: known tokens start fixed, as MaskGIT's own editing

    @inference
    def edit(self, model, tokenizer, tokens, keep, labels, sampler, generator, progress: Progress | None = None):
        """The kept tokens start fixed (never re-masked); the unknown ones are decoded with the
        same schedule as generation, over min(T, unknown) steps."""
        return self._decode(model, tokenizer, labels, sampler, generator, progress, tokens[0], keep[0])

    def _decode(self, model, tokenizer, labels, sampler, generator, progress, known_BL=None, keep_L=None):
        layout = self.layout(tokenizer)
        L, B = layout.length, labels.shape[0]
        V = tokenizer.codebook_size
        dev = labels.device
        ids_BL = torch.full((B, L), V, dtype=torch.long, device=dev)  # V = [MASK]
        fixed_BL = torch.zeros(B, L, dtype=torch.bool, device=dev)
        if known_BL is not None:
            fixed_BL = keep_L.to(dev)[None, :].expand(B, L).clone()
            ids_BL = torch.where(fixed_BL, known_BL.to(dev), ids_BL)
        done = int(fixed_BL[0].sum())  # tokens fixed so far (the same for every sample)
        unknown = L - done
        T = min(self.config.steps, unknown)
        if T == 0:
            return [ids_BL]
        lab = cfg_labels(labels, model.null_class, sampler)  # (B or 2B,)
        counts = tokens_per_step(unknown, T)
        halton_L = None  # (unknown,) free positions in unmasking order, for unmask_order = "halton"
        if self.config.unmask_order == "halton":
            halton_L = halton_order(layout.scales[0], layout.scales[0]).to(dev)
            halton_L = halton_L[~fixed_BL[0, halton_L]]
        random_BL = None  # (B, unknown) free positions in a random order per sample, for "random"
        if self.config.unmask_order == "random":
            scores_BL = torch.rand(B, L, generator=generator, device=dev).masked_fill(fixed_BL, 2.0)
            random_BL = scores_BL.argsort(dim=1)[:, :unknown]  # fixed positions sort last
        first = done
        for t in range(T):
            logits = model(double(ids_BL, sampler), lab, start=0)[:, 1:]  # (B2, L, V)
            sampled_BL, guided_BLV = sample_step(sampler, logits, B, t, T, generator)
            sampled_BL = torch.where(fixed_BL, ids_BL, sampled_BL)
            if random_BL is not None:
                new_fixed_BL = fixed_BL.clone()
                new_fixed_BL.scatter_(1, random_BL[:, done - first : done - first + counts[t]], True)
            elif halton_L is None:
                logp_BLV = guided_BLV.log_softmax(dim=-1)
                logp_BL = logp_BLV.gather(-1, sampled_BL[..., None]).squeeze(-1)
                temp = self.config.choice_temperature * (1.0 - (t + 1) / T)
                conf_BL = logp_BL + temp * gumbel((B, L), generator, dev)
                conf_BL = conf_BL.masked_fill(fixed_BL, float("inf"))
                keep_Bk = conf_BL.topk(done + counts[t], dim=1).indices
                new_fixed_BL = torch.zeros_like(fixed_BL).scatter_(1, keep_Bk, True)
            else:
                new_fixed_BL = fixed_BL.clone()
                new_fixed_BL[:, halton_L[done - first : done - first + counts[t]]] = True
            ids_BL = torch.where(new_fixed_BL, sampled_BL, torch.full_like(ids_BL, V))
            fixed_BL = new_fixed_BL
            done += counts[t]
            if progress:
                progress(t + 1, T)
        return [ids_BL]
