"""Sharded data parallelism (FSDP2, `torch.distributed.fsdp.fully_shard`) and how the trainer wraps
its model: DDP (the default) or FSDP, chosen by `ParallelConfig.mode`.

    torchrun --nproc_per_node 8 $(which genorder) train --order next-scale --depth 30 --parallel fsdp

FSDP shards every parameter, its gradient and its AdamW state over the W processes of the group
(each holds 1/W of them); a group of parameters is all-gathered just before the module that owns it
runs and freed after, and gradients are reduce-scattered (averaged, like DDP) in the backward.

Wrapping per transformer block. A block's weights are three groups: its AdaLN linear
(`blk.ada_lin`, which the model calls *outside* the block's forward, once per batch, to compute all
modulations up front), its attention and its FFN, each one `fully_shard` unit; the head's
`Linear(C, V)` is one more; the root unit holds what is left (class embedding, stem, the head's
AdaLN, LayerNorm affines, a shared AdaLN). Only modules the model calls through `__call__` can be
units (their hooks gather the weights), which is why the AdaLN linear is not in the attention's
unit. Parameter names are unchanged (`blocks.3.attn.qkv.weight`), so sharded checkpoints and the
exported `model.safetensors` use the names of the ordinary ones.

Options: a mixed-precision policy (`param_dtype` bf16 = the gathered weights the forward sees are
bf16, the sharded fp32 master copy is what AdamW updates; `reduce_dtype` fp32 = gradients are
reduced in fp32), activation checkpointing per block (the block's activations are recomputed in
the backward instead of kept), and gradient clipping on the sharded gradients
(`torch.nn.utils.clip_grad_norm_` over DTensor gradients computes the global norm: `full_norm`).

In one process `mode="fsdp"` trains the plain model (there is nothing to shard) but still writes
sharded (DCP) checkpoints, so a run keeps one checkpoint format whatever its world size.
"""

from __future__ import annotations

import functools
import warnings
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from genorder.config import ComponentConfig
from genorder.distributed import World

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ParallelConfig(ComponentConfig):
    mode: Literal["ddp", "fsdp"] = Field("ddp", description="ddp: replicate the model; fsdp: shard it (FSDP2)")
    param_dtype: Literal["fp32", "bf16"] = Field("fp32", description="fsdp: dtype of the gathered weights")
    reduce_dtype: Literal["fp32", "bf16"] = Field("fp32", description="fsdp: dtype of the gradient reductions")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in the backward")
    reshard_after_forward: bool = Field(True, description="fsdp: free gathered weights after each unit's forward")


def checkpoint_blocks(model: nn.Module) -> int:
    """Activation checkpointing per transformer block (`model.blocks`): each block's forward runs
    under `torch.utils.checkpoint` (non-reentrant, RNG state preserved, so drop-path draws the same
    masks when recomputed). Parameter names are unchanged. Returns the number of blocks."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(getattr(model, "blocks", []))
    for blk in blocks:
        inner = blk.forward

        def forward(*args, _inner=inner, **kwargs):
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        blk.forward = functools.wraps(inner)(forward)
    return len(blocks)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules that become one FSDP unit each, innermost first (the root is added last)."""
    units: list[nn.Module] = []
    for blk in getattr(model, "blocks", []):
        for name in ("ada_lin", "attn", "ffn"):
            m = getattr(blk, name, None)
            if isinstance(m, nn.Module) and any(True for _ in m.parameters()):
                units.append(m)
    head = getattr(model, "head", None)
    inner = getattr(head, "head", None)
    if isinstance(inner, nn.Linear):
        units.append(inner)
    return units


def fully_shard_model(model: nn.Module, cfg: ParallelConfig, device: torch.device, world_size: int) -> nn.Module:
    """Shard `model` in place over a 1-D mesh of all `world_size` processes (FSDP2), one unit per
    `shard_units` module plus the root. Returns the same module (now an FSDPModule)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # FSDP2 warns when a unit returns a view (an in-place op on it would skip the gradient's
    # reduce-scatter hook); the backbone only adds residuals out of place (x = x + h), which the
    # FSDP-equals-one-process tests check
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world_size,))
    mp = MixedPrecisionPolicy(param_dtype=DTYPES[cfg.param_dtype], reduce_dtype=DTYPES[cfg.reduce_dtype])
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
    return model


def wrap_for_training(model: nn.Module, cfg: ParallelConfig, world: World, device: torch.device) -> nn.Module:
    """What the training step calls: the model itself (one process), its DDP wrapper, or the model
    sharded in place by FSDP. Call it before building the optimizer (FSDP replaces the parameters
    by sharded DTensors)."""
    if cfg.activation_checkpointing:
        checkpoint_blocks(model)
    if world.size == 1:
        return model
    if cfg.mode == "fsdp":
        return fully_shard_model(model, cfg, device, world.size)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """The global value of a gradient norm (a DTensor under FSDP, a tensor otherwise)."""
    full = getattr(norm, "full_tensor", None)
    return full() if callable(full) else norm


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (the tensor itself otherwise)."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t
