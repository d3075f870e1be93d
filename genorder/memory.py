"""A memory model of one training step per GPU: parameters, gradients, optimizer state and
activations, for DDP and FSDP, with and without activation checkpointing, and the largest batch
that fits a given memory (`genorder memory`).

Where the bytes are at the peak. The trainer runs forward -> loss -> zero_grad -> backward -> step,
so during the forward the previous step's gradients are still alive: the peak is at the end of the
forward, params + grads + AdamW state (exp_avg, exp_avg_sq) + the activations autograd saved.

Activations per sample, counted from the backbone's code (`genorder.model.Block`,
`genorder.attention.SelfAttention`) in units of L x C values (L tokens, width C, FFN ratio r):
the block input, LN1 output, the qkv input, qkv (3), the q/k normalisations and q scaling (3, with
qk_norm), the attention output, the projection input and output, the residual, LN2 output, the FFN
input, fc1 output and GELU output (2r), fc2 output: 13 + 2r + 3·qk_norm (24 for VAR's r = 4 with
qk_norm); plus per block the LayerNorm statistics (4 L), q/k norms and the attention's log-sum-exp
(5 H L), the attention mask (L²) and the AdaLN modulation (8 C). The head keeps its input, LN output
and scaled input (3 L C) and the logits with their log-softmax (2 L V, fp32). Under bf16 autocast
the matmul inputs and outputs are bf16 (2 bytes), the residual stream and LayerNorm outputs fp32.
Attention is counted as a fused kernel (no L x L probabilities kept: SDPA's flash / memory-efficient
/ CPU-flash paths, which the trainer's masks take).

With activation checkpointing each block keeps only its input (1 L C, fp32) and one block's full
set is live while it is recomputed in the backward.

DDP holds a full copy of everything plus its gradient buckets (a second copy of the gradients:
`gradient_as_bucket_view=False`, torch's default). FSDP holds 1/W of params, gradients and AdamW
state, plus the gathered weights of two units in the compute dtype (the one running and the one
prefetched) and one unit's unsharded gradient before its reduce-scatter.

Checked on the CPU (tests/test_memory.py) against the measured peak: the parameter, gradient and
optimizer tensors' actual bytes plus the allocator-level peak of the forward and loss recorded by
`torch.profiler` with profile_memory=True. GPU figures are computed, pending a GPU run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a step depends on."""

    depth: int
    width: int  # C
    heads: int
    seq_len: int  # L, tokens per image (VAR 256 px: 680)
    vocab: int  # V (VAR: 4096)
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    params: int | None = None  # exact count when known (a built model); else `approx_params`
    num_classes: int = 1000

    def approx_params(self) -> int:
        """Parameters of the backbone as `genorder.model` builds it (AdaLN, qk_norm) plus VAR's
        next-scale stem (token projection from 32-d codes, L position and 10 level embeddings)."""
        C, r = self.width, self.mlp_ratio
        hidden = round(r * C)
        block = 3 * C * C + 2 * C + C * C + C + C * hidden + hidden + hidden * C + C + 6 * C * C + 6 * C + self.heads
        head = C * self.vocab + self.vocab + 2 * C * C + 2 * C
        stem = 32 * C + C + self.seq_len * C + 10 * C
        return self.depth * block + head + stem + (self.num_classes + 1) * C

    @property
    def n_params(self) -> int:
        return self.params if self.params is not None else self.approx_params()

    def unit_params(self) -> int:
        """The largest FSDP unit (`genorder.fsdp.shard_units`): the FFN, or the head's Linear."""
        C, hidden = self.width, round(self.mlp_ratio * self.width)
        return max(2 * C * hidden + hidden + C, C * self.vocab + self.vocab, 6 * C * C + 6 * C)


def var_shape(depth: int, seq_len: int = 680, vocab: int = 4096) -> ModelShape:
    """VAR-d<depth> at 256 px: width 64·d, d heads."""
    return ModelShape(depth=depth, width=64 * depth, heads=depth, seq_len=seq_len, vocab=vocab)


def activation_bytes_per_sample(s: ModelShape, amp: bool, checkpointing: bool) -> float:
    """Activation bytes one sample keeps at the peak (see the module docstring)."""
    L, C, H, V, r = s.seq_len, s.width, s.heads, s.vocab, s.mlp_ratio
    wide = 2 if amp else 4  # matmul inputs/outputs
    residual = 4 * L * C * 4  # block input, LN1 out, residual, LN2 out (fp32)
    matmul = L * C * (9 + 3 * s.qk_norm + 2 * r) * wide
    small = 4 * (4 * L + 5 * H * L * s.qk_norm + H * L + L * L + 8 * C)
    block = residual + matmul + small
    head = 3 * L * C * 4 + 2 * L * V * 4
    if checkpointing:
        return s.depth * (L * C * 4 + 8 * C * 4) + block + head
    return s.depth * block + head


@dataclass
class Estimate:
    parallel: str
    world_size: int
    batch_per_gpu: int
    checkpointing: bool
    params: float  # bytes per GPU
    grads: float
    optimizer: float
    buffers: float  # DDP buckets, or FSDP's gathered units and unsharded gradient
    activations: float
    per_sample: float = field(repr=False, default=0.0)

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.buffers + self.activations

    def max_batch(self, memory_bytes: float, reserve: float = 0.10) -> int:
        """The largest per-GPU batch whose peak fits `memory_bytes` less `reserve` (a fraction kept
        for the CUDA context, allocator fragmentation and kernel workspaces)."""
        room = memory_bytes * (1 - reserve) - (self.params + self.grads + self.optimizer + self.buffers)
        return max(0, int(room // self.per_sample)) if self.per_sample > 0 else 0


def estimate(
    s: ModelShape,
    batch_per_gpu: int,
    parallel: Literal["none", "ddp", "fsdp"] = "ddp",
    world_size: int = 1,
    amp: bool = True,
    checkpointing: bool = False,
    param_dtype_bytes: int = 4,
) -> Estimate:
    """Bytes per GPU at the peak of one training step (fp32 master weights, fp32 gradients, AdamW).
    `parallel="none"`: one process, no wrapper (what the CPU test measures)."""
    P = s.n_params
    per = activation_bytes_per_sample(s, amp, checkpointing)
    if parallel == "fsdp":
        W = world_size
        gathered = 2 * s.unit_params() * (2 if amp else param_dtype_bytes)
        buffers = gathered + s.unit_params() * 4
        return Estimate("fsdp", W, batch_per_gpu, checkpointing, 4 * P / W, 4 * P / W, 8 * P / W, buffers,
                        per * batch_per_gpu, per)  # fmt: skip
    buckets = 4 * P if parallel == "ddp" and world_size > 1 else 0.0
    return Estimate(parallel, world_size, batch_per_gpu, checkpointing, 4 * P, 4 * P, 8 * P, buckets,
                    per * batch_per_gpu, per)  # fmt: skip


def shape_of(model, seq_len: int) -> ModelShape:
    """The ModelShape of a built `genorder.model.GenModel` (exact parameter count)."""
    from genorder.model import count_params

    cfg = model.cfg
    return ModelShape(depth=len(model.blocks), width=cfg.C, heads=cfg.H, seq_len=seq_len, vocab=model.vocab,
                      mlp_ratio=cfg.mlp_ratio, qk_norm=cfg.qk_norm, params=count_params(model),
                      num_classes=model.num_classes)  # fmt: skip


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def measured_peak_cpu(model, order, tokenizer, images, labels, checkpointing: bool = False) -> dict[str, int]:
    """Measure, on the CPU, the peak of one training step as the trainer runs it: after a first
    step (so AdamW state and gradients exist), the actual bytes of parameters, gradients and
    optimizer state, plus the allocator-level peak of the forward and loss (torch.profiler,
    profile_memory=True: the running sum of every allocation and free in the step's order)."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from genorder.order import IGNORE

    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    with torch.no_grad():
        tokens = tokenizer.encode(images)
    batch = order.training_batch(tokens, tokenizer, torch.Generator().manual_seed(0))
    model.train()

    def loss_of() -> torch.Tensor:
        logits = model(batch.inputs, labels)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), ignore_index=IGNORE)

    loss = loss_of()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    del loss
    params = _storage_bytes(model.parameters())
    grads = _storage_bytes(p.grad for p in model.parameters() if p.grad is not None)
    state = _storage_bytes(v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = loss_of()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    del loss
    return {"params": params, "grads": grads, "optimizer": state, "activations": peak,
            "total": params + grads + state + peak, "seq_len": int(batch.targets.shape[1])}  # fmt: skip
