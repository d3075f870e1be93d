"""Shared pieces of every generation loop (design question 4).

The order owns the loop (which positions each step feeds and predicts); these helpers own what is
the same everywhere: CFG batch doubling with the null class, splitting guided logits, seeding, and
the eval-mode/inference-mode wrapper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from genorder.sampler import Sampler

F = TypeVar("F", bound=Callable[..., Any])


def cfg_labels(labels_B: torch.Tensor, null_class: int, sampler: Sampler) -> torch.Tensor:
    """(B,) -> (2B,) [labels, null...] when the sampler uses CFG, else (B,) unchanged."""
    if not sampler.uses_cfg:
        return labels_B
    return torch.cat([labels_B, torch.full_like(labels_B, null_class)])


def double(x: torch.Tensor, sampler: Sampler) -> torch.Tensor:
    """Repeat a batch-first input for the unconditional half when CFG is on."""
    return torch.cat([x, x]) if sampler.uses_cfg else x


def sample_step(
    sampler: Sampler,
    logits: torch.Tensor,
    batch: int,
    step: int,
    num_steps: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B or 2B, N, V) logits -> (tokens (B, N), guided + filtered logits (B, N, V))."""
    cond = logits[:batch]
    uncond = logits[batch:] if sampler.uses_cfg else None
    return sampler(cond, uncond, step, num_steps, generator)


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A `torch.Generator` on `device` seeded with `seed`, for `Order.generate` / `sample_step`
    (every random draw of a generation takes it, so the same seed gives the same samples); None
    when `seed` is None (torch's global generator, not reproducible).

    The generator lives on the device because CUDA sampling needs a CUDA generator: the same seed
    gives the same tokens on one device type, not across CPU and GPU."""
    if seed is None:
        return None
    g = torch.Generator(device=device)
    try:
        g.manual_seed(seed)
    except (RuntimeError, ValueError, OverflowError):  # torch seeds are 64-bit
        from genorder.errors import UserError

        raise UserError(f"seed {seed} is out of range; a seed is a 64-bit integer (0 .. {2**64 - 1})") from None
    return g


def inference(fn: F) -> F:
    """Run `fn(self, model, ...)` with the model in eval mode under inference_mode, then restore."""

    @functools.wraps(fn)
    def wrapper(self, model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return fn(self, model, *args, **kwargs)
        finally:
            model.train(was_training)

    return wrapper  # type: ignore[return-value]
