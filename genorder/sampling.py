"""Generate images from a run: labels -> order.generate -> tokenizer.decode, with progress."""

from __future__ import annotations

import torch

from genorder.generation import make_generator
from genorder.order import Progress
from genorder.registry import registry
from genorder.runs import Run
from genorder.sampler import Sampler


def generate_images(
    run: Run,
    labels: torch.Tensor,
    sampler: Sampler,
    seed: int | None = 0,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> torch.Tensor:
    """(N,) labels -> (N, C, H, W) images in [-1, 1]. Deterministic for a given seed."""
    if batch_size < 1:
        from genorder.errors import UserError

        raise UserError(f"the generation batch size must be at least 1, got {batch_size}")
    device = next(run.model.parameters()).device
    g = make_generator(seed, device)
    out = []
    n_batches = (len(labels) + batch_size - 1) // batch_size
    for b in range(n_batches):
        lab = labels[b * batch_size : (b + 1) * batch_size].to(device)
        cb = (lambda i, t, _b=b: progress(_b * t + i, n_batches * t)) if progress else None
        with registry("orders").blame(run.order_name, "generating (generate())"):  # a plugin's bug: one error line
            tokens = run.order.generate(run.model, run.tokenizer, lab, sampler, g, cb)
        with torch.inference_mode():
            out.append(run.tokenizer.decode(tokens).float().clamp(-1, 1).cpu())
    return torch.cat(out)
