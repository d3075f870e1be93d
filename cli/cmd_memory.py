"""`genorder memory`: the memory model of a training step per GPU (genorder.memory)."""

from __future__ import annotations

from typing import Annotated

import typer
from genorder_cli.app import app, console, guarded
from rich.table import Table

from genorder.errors import UserError
from genorder.memory import GIB, estimate, var_shape

Opt = typer.Option


@app.command("memory")
@guarded
def memory(
    depth: Annotated[list[int] | None, Opt(help="VAR depth(s) d (width 64·d); repeatable (default 16 20 24 30)")] = None,
    batch_size: Annotated[int, Opt(help="global batch (split over --gpus)")] = 256,
    gpus: Annotated[int, Opt(help="GPUs W")] = 8,
    gpu_memory: Annotated[float, Opt(help="memory per GPU in GiB (H100: 80)")] = 80.0,
    seq_len: Annotated[int, Opt(help="tokens per image (VAR at 256 px: 680)")] = 680,
    vocab: Annotated[int, Opt(help="codebook size V")] = 4096,
    amp: Annotated[bool, Opt("--bf16/--fp32", help="bf16 autocast (the GPU default) or fp32 activations")] = True,
) -> None:
    """Per depth and per GPU: parameters, gradients, AdamW state, buffers and activations at the
    batch, for DDP and FSDP, with and without activation checkpointing, and the largest per-GPU
    batch that fits --gpu-memory (10% kept in reserve). Computed, not measured: pending a GPU run."""
    if gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {gpus}")
    if batch_size < gpus or batch_size % gpus:
        raise UserError(f"--batch-size {batch_size} is not a multiple of --gpus {gpus}")
    if gpu_memory <= 0 or seq_len < 1 or vocab < 2:
        raise UserError("--gpu-memory, --seq-len and --vocab must be positive")
    depths = depth or [16, 20, 24, 30]
    if any(d < 1 or d > 64 for d in depths):
        raise UserError("--depth must be in 1..64")
    per_gpu = batch_size // gpus
    t = Table(title=f"memory per GPU (GiB) · global batch {batch_size} on {gpus} GPUs ({per_gpu} each) · "
                    f"{'bf16 autocast' if amp else 'fp32'} · L={seq_len}, V={vocab}")  # fmt: skip
    for col in ("model", "params", "mode", "act. ckpt", "params", "grads", "AdamW", "buffers", "activations", "total",
                f"max batch/GPU in {gpu_memory:g} GiB"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("model", "mode", "act. ckpt") else "right")
    for d in depths:
        s = var_shape(d, seq_len, vocab)
        for mode in ("ddp", "fsdp"):
            for ckpt in (False, True):
                e = estimate(s, per_gpu, mode, gpus, amp=amp, checkpointing=ckpt)
                fits = e.max_batch(gpu_memory * GIB)
                t.add_row(f"d{d}", f"{s.n_params / 1e9:.2f}B", mode, "yes" if ckpt else "no",
                          *(f"{v / GIB:.1f}" for v in (e.params, e.grads, e.optimizer, e.buffers, e.activations, e.total)),
                          str(fits))  # fmt: skip
    console.print(t)
    console.print("computed by genorder.memory (CPU-checked within 15% at small sizes, tests/test_memory.py); "
                  "GPU figures are pending a GPU run", highlight=False)  # fmt: skip
