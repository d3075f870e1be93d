"""Official VAR transformer weights (`var_d16.pth` ... `var_d30.pth`) -> a next-scale `GenModel`.

Name mapping (official FoundationVision/VAR `models/var.py`, `basic_var.py` -> genorder):

| official                                 | genorder                              |
|------------------------------------------|---------------------------------------|
| `class_emb`                              | `class_emb` (row `num_classes` = null) |
| `pos_start`, `pos_1LC`, `lvl_embed`, `word_embed` | `stem.<same>`                 |
| `shared_ada_lin.1` (shared AdaLN only)   | `shared_ada_lin.1`                    |
| `blocks.{i}.attn.mat_qkv`                | `blocks.{i}.attn.qkv`                 |
| `blocks.{i}.attn.{q_bias,v_bias,scale_mul_1H11,proj}`, `blocks.{i}.{ffn.fc1,ffn.fc2,ada_lin.1,ada_gss}` | same |
| `head_nm.ada_lin.1`, `head`              | `head.ada_lin.1`, `head.head`          |
| buffers `lvl_1L`, `attn_bias_for_masking`, `blocks.{i}.attn.zero_k_bias` | checked, then derived again from the layout |

Read from the tensors: depth (number of blocks), width C (`class_emb`), classes (`class_emb` rows
- 1), V (`head`), Cvae (`word_embed`), MLP ratio (`ffn.fc1`), shared AdaLN (`shared_ada_lin` /
`ada_gss`), attention L2 norm and the heads (`scale_mul_1H11`, shape (1, H, 1, 1)), the scale
schedule (`lvl_1L`: p_k^2 positions at level k). Plain attention stores no per-head tensor, so there
the heads are VAR's own rule, heads = depth (`build_vae_var`), unless given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from pydantic import ValidationError

from genorder.config import format_validation_error
from genorder.errors import UserError
from genorder.importers import map_state, tensor
from genorder.layout import TokenLayout, block_causal_groups, mask_from_groups
from genorder.model import BackboneConfig, GenModel, build_model
from genorder.tokenizer import Tokenizer

from .order import NextScale

_BUFFERS = ("lvl_1L", "attn_bias_for_masking")


def _need(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    return tensor(state, key, source)


def infer_scales(state: Mapping[str, torch.Tensor], source: str = "VAR") -> tuple[int, ...]:
    """patch_nums from the `lvl_1L` buffer: level k occupies p_k^2 consecutive positions."""
    lvl = tensor(state, "lvl_1L", source, integral=True).reshape(-1).long()
    if lvl.numel() == 0:
        raise UserError(f"{source}: lvl_1L is empty (it lists the level of every position)")
    if int(lvl.min()) < 0:
        raise UserError(f"{source}: lvl_1L holds negative levels ({int(lvl.min())})")
    if int(lvl.max()) >= 64:
        raise UserError(f"{source}: lvl_1L holds level {int(lvl.max())}; a layout has at most 64 scales")
    counts = torch.bincount(lvl).tolist()
    scales = []
    for k, n in enumerate(counts):
        p = math.isqrt(n)
        if n == 0 or p * p != n:
            raise UserError(f"{source}: lvl_1L level {k} has {n} positions, not a square")
        scales.append(p)
    if not torch.equal(lvl, TokenLayout(tuple(scales)).levels()):
        raise UserError(f"{source}: lvl_1L is not sorted by level")
    return tuple(scales)


def infer_backbone(state: Mapping[str, torch.Tensor], heads: int | None = None, source: str = "VAR") -> tuple[BackboneConfig, int]:
    """(backbone config, number of classes) read from an official VAR state dict."""
    rx = re.compile(r"blocks\.(\d+)\..*")
    idx = {int(m.group(1)) for k in state if (m := rx.fullmatch(k))}
    depth = len(idx)
    if depth == 0 or idx != set(range(depth)):
        raise UserError(f"{source}: blocks.* indices {sorted(idx)} are not 0..{depth - 1}" if idx else f"{source}: no blocks.* weights")
    n_cls, C = (int(s) for s in tensor(state, "class_emb.weight", source, ndim=2, min_shape=(1, 8)).shape)
    if n_cls < 2:
        raise UserError(f"{source}: class_emb has {n_cls} row(s); it needs one per class plus the null class (at least 2)")
    hidden = int(tensor(state, "blocks.0.ffn.fc1.weight", source, ndim=2, min_shape=(1, 1)).shape[0])
    shared = "shared_ada_lin.1.weight" in state
    qk_norm = "blocks.0.attn.scale_mul_1H11" in state
    if qk_norm:
        found = int(tensor(state, "blocks.0.attn.scale_mul_1H11", source, ndim=4, min_shape=(1, 1, 1, 1)).shape[1])
        if heads is not None and heads != found:
            raise UserError(f"{source}: the weights have {found} attention heads (scale_mul_1H11), not {heads}")
        heads = found
    heads = heads or depth
    if C % heads:
        raise UserError(f"{source}: width {C} is not divisible by {heads} heads")
    try:
        cfg = BackboneConfig(
            depth=depth, width=C, heads=heads, mlp_ratio=hidden / C, adaln=True, shared_adaln=shared,
            qk_norm=qk_norm, drop_path=0.0,
        )
    except ValueError as err:  # pydantic's ValidationError
        raise UserError(f"{source}: the weights do not describe a valid backbone:\n"
                        f"{format_validation_error(err, 'backbone.') if isinstance(err, ValidationError) else err}") from None
    if round(cfg.mlp_ratio * C) != hidden:
        raise UserError(f"{source}: FFN width {hidden} is not representable for width {C}")
    return cfg, n_cls - 1


def official_name(name: str) -> str:
    """genorder GenModel state-dict name -> the official VAR one."""
    if name.startswith("stem."):
        return name[len("stem."):]
    if name.startswith("head.head."):
        return "head." + name[len("head.head."):]
    if name.startswith("head.ada_lin."):
        return "head_nm." + name[len("head."):]
    return re.sub(r"^(blocks\.\d+\.attn)\.qkv\.", r"\1.mat_qkv.", name)


def _check_buffers(state: Mapping[str, torch.Tensor], layout: TokenLayout, depth: int, source: str) -> set[str]:
    """The official buffers must hold what the layout implies; returns their names."""
    bias = _need(state, "attn_bias_for_masking", source)
    L = layout.length
    if tuple(bias.shape) != (1, 1, L, L):
        raise UserError(f"{source}: attn_bias_for_masking has shape {tuple(bias.shape)}, expected (1, 1, {L}, {L})")
    g = block_causal_groups(layout)
    if not torch.equal(bias[0, 0].float() == 0, mask_from_groups(g, g)):
        raise UserError(f"{source}: attn_bias_for_masking is not VAR's block-causal mask")
    names = set(_BUFFERS)
    for i in range(depth):
        key = f"blocks.{i}.attn.zero_k_bias"
        if bool(_need(state, key, source).abs().sum() != 0):
            raise UserError(f"{source}: {key} is not zero")
        names.add(key)
    return names


def convert(state: Mapping[str, torch.Tensor], tokenizer: Tokenizer, heads: int | None = None,
            source: str = "VAR") -> tuple[GenModel, NextScale, BackboneConfig]:
    """Official VAR state dict -> (next-scale GenModel in eval mode, its order, its backbone config)."""
    scales = infer_scales(state, source)
    if tuple(tokenizer.scales) != scales:
        raise UserError(f"{source}: scales {scales} differ from the tokenizer's {tuple(tokenizer.scales)}")
    cfg, num_classes = infer_backbone(state, heads, source)
    order = NextScale(NextScale.Config())
    layout = order.layout(tokenizer)
    used = _check_buffers(state, layout, cfg.depth, source)
    model = build_model(order, tokenizer, cfg, num_classes)
    new = map_state(state, model.state_dict(), official_name, source, used)
    model.load_state_dict(new)
    return model.eval(), order, cfg
