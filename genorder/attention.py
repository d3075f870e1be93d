"""Self-attention for every order: q/k L2-norm switch, group-id masks, static KV cache.

Design question 3. An order states its pattern once, as group ids (S,): key j is visible from query i
iff groups[j] <= groups[i]. From that one tensor:
  * training on the CPU (and the reference path) uses SDPA with the boolean mask, or no mask /
    `is_causal` when the pattern is bidirectional / token-causal (so those hit flash kernels);
  * training on a GPU with a block-causal pattern uses a FlexAttention block mask built from the
    same group ids (`backend="flex"`, compiled on CUDA), so the sparse pattern runs at flash speed
    (it also runs, eagerly and slowly, on the CPU, which is how the tests compare it with SDPA);
  * generation feeds chunks of positions through a `KVCache`; queries [start, start+n) see keys
    [0, start+n) under the same rule. For next-scale (one scale per step) and raster (one token per
    step) every cached key is visible, so no mask is built at all.
`tests/test_attention.py` proves all paths give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genorder.layout import mask_from_groups


@dataclass
class AttnSpec:
    """How one forward call attends. Built once per call by `GenModel`, shared by all layers."""

    mode: str  # "none" (all visible) | "causal" | "mask" | "flex"
    mask: torch.Tensor | None = None  # (Lq, Lk) bool for "mask"; a BlockMask for "flex"
    start: int = 0  # sequence offset of the first query (KV cache write position)


def plan_attention(
    groups_cpu: torch.Tensor, start: int, n: int, cached: bool, device: torch.device, backend: str
) -> AttnSpec:
    """Decide the cheapest exact kernel for queries [start, start+n) over keys [0 or start, start+n).

    The decision is made on a CPU copy of the group ids, so the generation loop never syncs."""
    k0 = 0 if cached else start
    gq = groups_cpu[start : start + n]
    gk = groups_cpu[k0 : start + n]
    if bool((gk.max() <= gq.min())):
        return AttnSpec("none", start=start)
    if k0 == start and n > 1 and torch.equal(gq, gk) and bool((gq[1:] > gq[:-1]).all()):
        return AttnSpec("causal", start=start)
    if backend == "flex" and not cached:
        return AttnSpec("flex", _flex_block_mask(gq.to(device), n, device), start=start)
    return AttnSpec("mask", mask_from_groups(gq, gk).to(device), start=start)


def _flex_block_mask(groups: torch.Tensor, n: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return groups[kv_idx] <= groups[q_idx]

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=n, KV_LEN=n, device=device)


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


class KVCache:
    """Static (preallocated) per-layer key/value buffers: (layers, B, H, max_len, head_dim).

    Positions are written at `AttnSpec.start`; queries attend to keys [0, start + n). Nothing is
    concatenated, so memory is allocated once per generation."""

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int, device, dtype) -> None:
        shape = (layers, batch, heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.key_index = torch.arange(max_len, device=device)  # (max_len,) for static-shape steps
        self.mods = None  # the generation's AdaLN modulations, memoised by GenModel.forward

    def write_and_read(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor):
        """k, v: (B, H, n, hd) -> cached keys and values (B, H, start + n, hd)."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} > {self.max_len}")
        self.k[layer, :, :, start:end] = k.to(self.k.dtype)
        self.v[layer, :, :, start:end] = v.to(self.v.dtype)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention as VAR (VAR_SPEC §2.4): qkv without bias plus learnable q and v
    biases (the k bias is a fixed zero), optional q/k L2 normalisation with a learnable per-head
    scale exp(theta) (theta = ln 4 at init, clamped at ln 100) and softmax scale 1; without the
    normalisation the softmax scale is 0.25 / sqrt(head_dim), as VAR."""

    def __init__(self, width: int, heads: int, qk_norm: bool, layer: int, backend: str = "auto") -> None:
        super().__init__()
        assert width % heads == 0, f"width {width} not divisible by heads {heads}"
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.layer = layer
        self.backend = backend
        self.qk_norm = qk_norm
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
        if qk_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0)))
            self.scale = 1.0
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLC: torch.Tensor, spec: AttnSpec, cache: KVCache | None = None) -> torch.Tensor:
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        qkv = F.linear(x_BLC, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if self.qk_norm:
            s = self.scale_mul_1H11.clamp(max=math.log(100.0)).exp()
            q = F.normalize(q, dim=-1) * s
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.write_and_read(self.layer, spec.start, k, v)
            q = q.to(k.dtype)
        if spec.mode == "flex":
            fn = _compiled_flex() if x_BLC.is_cuda else None
            from torch.nn.attention.flex_attention import flex_attention

            o = (fn or flex_attention)(q, k, v, block_mask=spec.mask, scale=self.scale)
        else:
            o = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=spec.mask if spec.mode == "mask" else None,
                is_causal=spec.mode == "causal",
                scale=self.scale,
            )
        o = rearrange(o, "b h l d -> b l (h d)")
        return self.proj(o)
