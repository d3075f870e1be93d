"""Generate images from a run: labels -> order.generate -> tokenizer.decode, with progress; and
per-index seeded generation split over processes (`generate_indexed`, `gather_to_main`), the
images the same whatever the number of processes."""

from __future__ import annotations

from pathlib import Path

import torch

from genorder.errors import UserError
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


# -- samples that depend on their index only: the same whatever the number of processes ------------


def image_seed(seed: int, index: int) -> int:
    """The generator seed of the chunk of images starting at `index`: a 63-bit hash of (seed, index),
    so nearby seeds and indices give unrelated streams."""
    import hashlib

    digest = hashlib.sha256(f"genorder-sample:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) of the consecutive chunks of `chunk` images that cover n images."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def generate_indexed(
    run: Run,
    labels: torch.Tensor,
    sampler: Sampler,
    seed: int = 0,
    chunk: int = 50,
    rank: int = 0,
    world_size: int = 1,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of the images for `labels` (N,): (indices (M,), uint8 (M, C, H, W)).

    The N images are cut into chunks of `chunk` consecutive indices; chunk [s, s + chunk) is one
    batch, generated with a generator seeded by `image_seed(seed, s)`, and process r of W takes the
    chunks r, r + W, ... So every image depends on (seed, its index, chunk) only: W processes
    together produce, byte for byte, the images one process produces (on one machine; floats may
    differ across CPU/GPU models). `chunk` is part of the recipe: orders draw one batch's noise from
    one generator, so a different chunk gives other (equally valid) images."""
    from genorder.images import to_uint8

    device = next(run.model.parameters()).device
    make_generator(seed, device)  # the seed's range is checked as for every generation (UserError)
    mine = chunks(len(labels), chunk)[rank::world_size]
    idx, out = [], []
    for c, (s, e) in enumerate(mine):
        g = torch.Generator(device=device)
        g.manual_seed(image_seed(seed, s))
        lab = labels[s:e].to(device)
        cb = (lambda i, t, _c=c: progress(_c * t + i, len(mine) * t)) if progress else None
        with registry("orders").blame(run.order_name, "generating (generate())"):  # a plugin's bug: one error line
            tokens = run.order.generate(run.model, run.tokenizer, lab, sampler, g, cb)
        with torch.inference_mode():
            out.append(to_uint8(run.tokenizer.decode(tokens).float().clamp(-1, 1)))
        idx.append(torch.arange(s, e))
    if not out:
        c, h = run.tokenizer.channels, run.tokenizer.image_size
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, c, h, h, dtype=torch.uint8)
    return torch.cat(idx), torch.cat(out)


def gather_to_main(
    indices: torch.Tensor, images: torch.Tensor, n: int, scratch: str | Path, rank: int, world_size: int
) -> torch.Tensor | None:
    """Every process's (indices, images) -> all n images in index order on rank 0 (None on the
    others). In one process, no copy; under torchrun each process writes its part next to
    `scratch` (the folder of the final file: shared on one node), rank 0 reads and removes them."""
    if world_size == 1:
        order = torch.argsort(indices)
        return images[order]
    import numpy as np
    import torch.distributed as dist

    from genorder.checkpoint import save_npz

    scratch = Path(scratch)
    part = scratch.with_name(f".{scratch.name}.part-{rank}-of-{world_size}.npz")
    save_npz(part, indices=indices.numpy(), images=images.numpy())
    dist.barrier()
    full = None
    if rank == 0:
        parts = [scratch.with_name(f".{scratch.name}.part-{r}-of-{world_size}.npz") for r in range(world_size)]
        got_i, got_x = [], []
        for p in parts:
            with np.load(p) as z:
                got_i.append(torch.from_numpy(z["indices"]))
                got_x.append(torch.from_numpy(z["images"]))
        all_i, all_x = torch.cat(got_i), torch.cat(got_x)
        if sorted(all_i.tolist()) != list(range(n)):
            raise RuntimeError(f"the processes' parts do not cover images 0..{n - 1} once each")
        full = all_x[torch.argsort(all_i)]
        for p in parts:
            p.unlink(missing_ok=True)
    dist.barrier()
    return full


# -- indexed generation: each image's randomness is a function of its index in a design ---------


def generate_design(
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
        raise UserError("generate_design needs at least one label")
    return torch.cat(out)
