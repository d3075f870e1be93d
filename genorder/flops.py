"""FLOPs counted from the model's layers and the order's attention pattern (design question 7).

Forward FLOPs of one sample through `GenModel`:
  * matmuls applied per position: 2 · (in · out) for every Linear of the blocks, the head and the
    stem (the qkv, proj, fc1, fc2 and word/token embedding projections), times S positions;
  * matmuls applied once per sample: the AdaLN linears on the condition (6C² per block, 2C² head);
  * attention: 4 · C · (visible query-key pairs) per layer (QKᵀ and AV), with the pairs counted
    exactly from the order's group ids, so block-causal, causal and bidirectional differ correctly.
Training counts 3× the forward (backward ≈ 2× forward), the usual convention; the tokenizer's
encoder is counted separately (`tokenizer_flops`) when a tokenizer reports it.
"""

from __future__ import annotations

import torch
from torch import nn

from genorder.layout import mask_from_groups


def _linear_macs(module: nn.Module, per_sample_keys: tuple[str, ...] = ("ada_lin", "shared_ada_lin")) -> tuple[int, int]:
    per_pos, per_sample = 0, 0
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            macs = m.in_features * m.out_features
            if any(k in name.split(".") for k in per_sample_keys):
                per_sample += macs
            else:
                per_pos += macs
    return per_pos, per_sample


def visible_pairs(groups: torch.Tensor) -> int:
    """Number of (query, key) pairs the pattern allows."""
    g = groups.cpu()
    return int(mask_from_groups(g, g).sum())


def forward_flops(model, positions: int | None = None, pairs: int | None = None) -> float:
    """FLOPs of one full teacher-forced forward of one sample (all S positions at once)."""
    S = positions if positions is not None else model.seq_len
    P = pairs if pairs is not None else visible_pairs(model._groups_cpu)
    per_pos, per_sample = _linear_macs(model)
    attn = 4 * model.cfg.C * P * len(model.blocks)
    return float(2 * per_pos * S + 2 * per_sample + attn)


def train_flops_per_sample(model) -> float:
    return 3.0 * forward_flops(model)


def generation_flops(model, steps: list[tuple[int, int]], cfg: bool) -> float:
    """FLOPs of one generated sample, given each backbone call as (queries n, keys visible m) —
    e.g. next-scale with a cache: [(p_k², end_k)]; raster with a cache: [(1, i + 1)];
    raster without a cache: [(i + 1, i + 1)] with causal pairs counted by the caller as m·(m+1)/2.
    The pair count of a call is n·m unless the caller passes exact pairs as a third element."""
    per_pos, per_sample = _linear_macs(model)
    C, D = model.cfg.C, len(model.blocks)
    total = 0.0
    for st in steps:
        n, m = st[0], st[1]
        pairs = st[2] if len(st) > 2 else n * m
        total += 2 * per_pos * n + 2 * per_sample + 4 * C * pairs * D
    return total * (2 if cfg else 1)
