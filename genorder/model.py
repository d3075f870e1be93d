"""The one backbone every order uses: class condition -> order stem -> blocks -> head -> logits.

Switches (BackboneConfig), so that ablation rows differ only in what the VAR paper changed:
  * `adaln`: class-conditioned AdaLN in every block and before the head (VAR_SPEC §2.4-2.5), or a
    plain GPT-2 pre-LN block with affine LayerNorms (the condition then enters only through the
    order's start token);
  * `shared_adaln`: one shared Linear(C, 6C) plus a per-block learnable offset (VAR-d36-s);
  * `qk_norm`: q/k L2-normalised attention with a learnable per-head scale;
  * the attention pattern comes from the order (group ids), not from a switch here.
Width 64·depth and heads = depth by default, as VAR. Initialisation follows VAR_SPEC §2.6.

Design question 6: the condition is `class_emb(label)` (B, C); index `num_classes` is the null class
used for CFG and for label dropout (done by the trainer, never inside `forward`). The stem receives
it (start token) and, with `adaln`, so does every block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, model_validator
from torch import nn

from genorder.attention import AttnSpec, KVCache, SelfAttention, plan_attention
from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.order import Stem


@dataclass
class Modulations:
    """AdaLN modulations: per block (B, 1, 6, C) [gamma1, gamma2, scale1, scale2, shift1, shift2],
    and the head's (B, 1, 2, C) [scale, shift]. None without AdaLN."""

    blocks: list[torch.Tensor] | None
    head: torch.Tensor | None


class BackboneConfig(ComponentConfig):
    depth: int = Field(16, ge=1, le=64, description="number of blocks d")
    width: int | None = Field(None, ge=8, description="C; default 64·depth")
    heads: int | None = Field(None, ge=1, description="attention heads; default depth (head dim 64)")
    mlp_ratio: float = Field(4.0, gt=0)
    adaln: bool = Field(True, description="class-conditioned AdaLN (VAR) instead of plain LayerNorm")
    shared_adaln: bool = Field(False, description="one shared AdaLN linear (VAR-d36-s)")
    qk_norm: bool = Field(True, description="q/k L2-normalised attention with learnable scale")
    drop_path: float | None = Field(None, ge=0, lt=1, description="max drop-path rate; default 0.1·d/24")
    init_head: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = Field(1e-3, description="AdaLN gate init (README d16/d20: 1e-3)")
    attn_backend: str = Field("auto", pattern="^(auto|sdpa|flex)$", description="flex: FlexAttention on CUDA")

    @model_validator(mode="after")
    def _shapes_fit(self) -> BackboneConfig:
        """Width splits into whole heads and the feed-forward layer is at least 1 wide."""
        if self.C % self.H:
            raise ValueError(f"width {self.C} must be divisible by heads {self.H} (set backbone.width or backbone.heads)")
        if round(self.mlp_ratio * self.C) < 1:
            raise ValueError(f"mlp_ratio {self.mlp_ratio:g} gives a feed-forward width of 0 at width {self.C}")
        return self

    @property
    def C(self) -> int:
        return self.width or 64 * self.depth

    @property
    def H(self) -> int:
        return self.heads or self.depth

    @property
    def max_drop_path(self) -> float:
        return 0.1 * self.depth / 24 if self.drop_path is None else self.drop_path


def check_trainable_on(config: BackboneConfig, device: torch.device) -> None:
    """A backbone config `train` can run on `device` (checked before anything is written):
    FlexAttention has no backward pass on a CPU."""
    if config.attn_backend == "flex" and device.type != "cuda":
        raise UserError(f"backbone.attn_backend = flex needs a CUDA device to train (FlexAttention has no backward "
                        f"pass on {device.type}); use auto or sdpa")  # fmt: skip


def init_std(width: int) -> float:
    """VAR's init std sqrt(1 / (3C)) (VAR_SPEC §2.6); stems use it for their own tables."""
    return math.sqrt(1.0 / (3 * width))


class DropPath(nn.Module):
    """Per-sample stochastic depth (scaled by 1 / keep)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)
        return x * mask / keep


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LN transformer block; with AdaLN: x += g1·Attn(LN(x)(1+s1)+b1); x += g2·FFN(LN(x)(1+s2)+b2)."""

    def __init__(self, cfg: BackboneConfig, layer: int, drop_path: float) -> None:
        super().__init__()
        C = cfg.C
        self.adaln, self.shared = cfg.adaln, cfg.adaln and cfg.shared_adaln
        affine = not cfg.adaln
        self.ln1 = nn.LayerNorm(C, eps=1e-6, elementwise_affine=affine)
        self.ln2 = nn.LayerNorm(C, eps=1e-6, elementwise_affine=affine)
        self.attn = SelfAttention(C, cfg.H, cfg.qk_norm, layer, cfg.attn_backend)
        self.ffn = FFN(C, round(cfg.mlp_ratio * C))
        self.drop_path = DropPath(drop_path)
        if self.shared:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / math.sqrt(C))
        elif self.adaln:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def modulation(self, ada: torch.Tensor) -> torch.Tensor:
        """(B, C) condition, or (B, 1, 6, C) shared-AdaLN output -> this block's (B, 1, 6, C)."""
        if self.shared:
            return self.ada_gss + ada
        return rearrange(self.ada_lin(ada), "b (six c) -> b 1 six c", six=6)

    def forward(self, x_BLC: torch.Tensor, mod_B16C: torch.Tensor | None, spec: AttnSpec, cache: KVCache | None) -> torch.Tensor:
        if not self.adaln:
            x_BLC = x_BLC + self.drop_path(self.attn(self.ln1(x_BLC), spec, cache))
            return x_BLC + self.drop_path(self.ffn(self.ln2(x_BLC)))
        g1, g2, s1, s2, b1, b2 = mod_B16C.unbind(2)  # each (B, 1, C); VAR's chunk order
        h = self.attn(self.ln1(x_BLC) * (1 + s1) + b1, spec, cache)
        x_BLC = x_BLC + self.drop_path(h * g1)
        h = self.ffn(self.ln2(x_BLC) * (1 + s2) + b2)
        return x_BLC + self.drop_path(h * g2)


class Head(nn.Module):
    """AdaLN-before-head (scale, shift from the condition) or a plain affine LayerNorm, then Linear(C, V)."""

    def __init__(self, cfg: BackboneConfig, vocab: int) -> None:
        super().__init__()
        C = cfg.C
        self.adaln = cfg.adaln
        self.ln = nn.LayerNorm(C, eps=1e-6, elementwise_affine=not cfg.adaln)
        if cfg.adaln:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))
        self.head = nn.Linear(C, vocab)

    def modulation(self, cond_BC: torch.Tensor) -> torch.Tensor:
        return rearrange(self.ada_lin(cond_BC), "b (two c) -> b 1 two c", two=2)  # (B, 1, 2, C)

    def forward(self, x_BLC: torch.Tensor, mod_B12C: torch.Tensor | None) -> torch.Tensor:
        h = self.ln(x_BLC)
        if self.adaln:
            scale, shift = mod_B12C.unbind(2)
            h = h * (1 + scale) + shift
        return self.head(h).float()  # (B, L, V) fp32 logits


class GenModel(nn.Module):
    """Backbone + an order's stem. `forward(inputs, labels, start=0, cache=None) -> (B, n, V)` logits
    for the n positions the stem produced from `inputs` (positions [start, start + n)).

    What an order's `generate` uses: `null_class` (the unconditional label), `new_cache(batch)`
    (a static `KVCache` for up to `seq_len` positions; pass it as `cache=` and feed each step's
    positions with `start=` their offset: the keys of earlier steps are reused, and the AdaLN
    modulations are computed once per cache), `seq_len`, `num_classes`, `vocab`. Build one with
    `build_model(order, tokenizer, BackboneConfig(...), num_classes)`."""

    def __init__(self, cfg: BackboneConfig, stem: Stem, vocab: int, num_classes: int, groups: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.vocab = vocab
        C = cfg.C
        self.class_emb = nn.Embedding(num_classes + 1, C)  # index num_classes = null class
        self.stem = stem
        if cfg.adaln and cfg.shared_adaln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        dpr = [cfg.max_drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([Block(cfg, i, dpr[i]) for i in range(cfg.depth)])
        self.head = Head(cfg, vocab)
        self.register_buffer("groups", groups.clone().long(), persistent=False)
        self._groups_cpu = groups.clone().long().cpu()
        self._plans: dict[tuple, AttnSpec] = {}
        self.reset_parameters()

    # -- properties --------------------------------------------------------------------------
    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def seq_len(self) -> int:
        return int(self._groups_cpu.numel())

    # -- init (VAR_SPEC §2.6) ------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """VAR's initialisation (VAR_SPEC §2.6): every Linear and Embedding trunc-normal with std
        `init_std(C)`, zero biases, the head scaled by `init_head`, the AdaLN linears by
        `init_adaln` / `init_adaln_gamma`, the residual projections by 1/sqrt(2 depth); then the
        stem's own `Stem.reset_parameters()` for its tables."""
        cfg, std = self.cfg, init_std(self.cfg.C)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head.head.weight.mul_(cfg.init_head)
            if cfg.adaln:
                self.head.ada_lin[-1].weight.mul_(cfg.init_adaln)
            C = cfg.C
            for blk in self.blocks:
                blk.attn.proj.weight.div_(math.sqrt(2 * cfg.depth))
                blk.ffn.fc2.weight.div_(math.sqrt(2 * cfg.depth))
                if blk.adaln and not blk.shared:
                    w = blk.ada_lin[-1].weight
                    w[2 * C :].mul_(cfg.init_adaln)
                    w[: 2 * C].mul_(cfg.init_adaln_gamma)
                elif blk.shared:
                    blk.ada_gss[:, :, 2:].mul_(cfg.init_adaln)
                    blk.ada_gss[:, :, :2].mul_(cfg.init_adaln_gamma)
                if cfg.qk_norm:
                    blk.attn.scale_mul_1H11.fill_(math.log(4.0))
        reset = getattr(self.stem, "reset_parameters", None)
        if reset is not None:
            reset()

    # -- forward -------------------------------------------------------------------------------
    def condition(self, labels_B: torch.Tensor) -> torch.Tensor:
        return self.class_emb(labels_B)  # (B, C)

    def modulations(self, cond_BC: torch.Tensor) -> Modulations:
        """All AdaLN modulations for a batch of conditions: they depend on the class only, so a
        generation computes them once (memoised on its KV cache) instead of at every step."""
        if not self.cfg.adaln:
            return Modulations(None, None)
        ada = cond_BC
        if self.cfg.shared_adaln:
            ada = rearrange(self.shared_ada_lin(cond_BC), "b (six c) -> b 1 six c", six=6)
        return Modulations([blk.modulation(ada) for blk in self.blocks], self.head.modulation(cond_BC))

    def backbone(self, x_BLC: torch.Tensor, mods: Modulations, spec: AttnSpec, cache: KVCache | None) -> torch.Tensor:
        """Blocks then head: (B, n, C) stem output -> (B, n, V) fp32 logits."""
        for i, blk in enumerate(self.blocks):
            x_BLC = blk(x_BLC, None if mods.blocks is None else mods.blocks[i], spec, cache)
        return self.head(x_BLC, mods.head)

    def forward(self, inputs: Any, labels: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        cond_BC = self.condition(labels)
        x_BLC = self.stem(inputs, cond_BC, start)
        spec = self._plan(start, x_BLC.shape[1], cache is not None, x_BLC.device)
        if cache is None:
            mods = self.modulations(cond_BC)
        else:  # one generation = one cache = one set of labels
            if cache.mods is None:
                cache.mods = self.modulations(cond_BC)
            mods = cache.mods
        return self.backbone(x_BLC, mods, spec, cache)

    def _plan(self, start: int, n: int, cached: bool, device: torch.device) -> AttnSpec:
        """The attention plan of a call shape, built once and reused (masks live on the device)."""
        b = self.cfg.attn_backend
        backend = "flex" if b == "flex" or (b == "auto" and device.type == "cuda") else "sdpa"
        key = (start, n, cached, str(device), backend)
        if key not in self._plans:
            self._plans[key] = plan_attention(self._groups_cpu, start, n, cached, device, backend)
        return self._plans[key]

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty static KV cache for `batch` rows (the CFG-doubled batch when CFG is on) and up
        to `max_len` positions (default `seq_len`), on the model's device and dtype."""
        p = next(self.parameters())
        return KVCache(
            len(self.blocks), batch, self.cfg.H, max_len or self.seq_len, self.cfg.C // self.cfg.H,
            p.device, dtype or p.dtype,
        )

    # -- optimiser groups (VAR_SPEC §3.3) -------------------------------------------------------
    def param_groups(self, weight_decay: float) -> list[dict]:
        no_decay_names = ("scale_mul", "ada_gss", *getattr(self.stem, "no_decay", ()))
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if p.ndim <= 1 or name.endswith("bias") or any(k in name for k in no_decay_names):
                no_decay.append(p)
            else:
                decay.append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_model(order, tokenizer, cfg: BackboneConfig, num_classes: int) -> GenModel:
    """The model an order trains: shared backbone around the order's stem, sized from the tokenizer."""
    order.check_tokenizer(tokenizer)
    layout = order.layout(tokenizer)
    stem = order.build_stem(tokenizer, layout, cfg.C)
    return GenModel(cfg, stem, tokenizer.codebook_size, num_classes, order.groups(layout))
