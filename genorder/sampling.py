"""Generate images from a run: labels -> order.generate -> tokenizer.decode, with progress."""

from __future__ import annotations

import torch

from genorder.errors import UserError
from genorder.generation import make_generator
from genorder.order import Progress
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
    device = next(run.model.parameters()).device
    g = make_generator(seed, device)
    out = []
    n_batches = (len(labels) + batch_size - 1) // batch_size
    for b in range(n_batches):
        lab = labels[b * batch_size : (b + 1) * batch_size].to(device)
        cb = (lambda i, t, _b=b: progress(_b * t + i, n_batches * t)) if progress else None
        tokens = run.order.generate(run.model, run.tokenizer, lab, sampler, g, cb)
        with torch.inference_mode():
            out.append(run.tokenizer.decode(tokens).float().clamp(-1, 1).cpu())
    return torch.cat(out)


# -- indexed generation: each image's randomness is a function of its index in a design ---------


def generate_indexed(
    order,
    model,
    tokenizer,
    labels: torch.Tensor,
    sample_seeds: torch.Tensor,
    sampler: Sampler,
    *,
    block: int = 50,
    progress: Progress | None = None,
) -> torch.Tensor:
    """(N,) labels and (N,) per-sample seeds (`genorder.paired.paired_design`) -> (N, C, H, W)
    images in [-1, 1], where image i depends on (labels, sample_seeds) at its own indices only,
    never on how many images are asked for or how a caller batches them.

    `Order.generate` draws from one generator per call, so the images are generated in aligned
    blocks of `block` consecutive indices [j * block, (j + 1) * block), block j from a generator
    seeded with the seed of its first sample: a prefix of a design whose length is a multiple of
    `block` gives the same images as the whole design, and two orders given the same design and block get the same labels and seeds.
    block = 1 gives every image its own generator (exactly per-sample, at batch-1 sampling speed,
    which for a token-by-token order on a CPU is many times slower an image). Every design compared
    against another must use the same block."""
    if block < 1:
        raise UserError(f"block must be >= 1, got {block}")
    if labels.shape != sample_seeds.shape or labels.dim() != 1:
        raise UserError(f"labels and sample_seeds must both be (N,), got {tuple(labels.shape)} and {tuple(sample_seeds.shape)}")
    device = next(model.parameters()).device
    n = len(labels)
    n_blocks = (n + block - 1) // block
    out = []
    for b in range(n_blocks):
        sl = slice(b * block, min((b + 1) * block, n))
        g = make_generator(int(sample_seeds[sl.start]), device)
        cb = (lambda i, t, _b=b: progress(_b * t + i, n_blocks * t)) if progress else None
        tokens = order.generate(model, tokenizer, labels[sl].to(device), sampler, g, cb)
        with torch.inference_mode():
            out.append(tokenizer.decode(tokens).float().clamp(-1, 1).cpu())
    if not out:
        raise UserError("generate_indexed needs at least one label")
    return torch.cat(out)
