"""Every registered order's full sampling (generate + decode) and one training step, timed.

Parametrized over `registry("orders").names()`, so a plugin's order is benchmarked as soon as it is
installed. `extra_info` carries the order, its sequential steps, the batch and images/s (from the
median), so `--benchmark-json` is the speed report.
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from genorder.bench import (
    BenchConfig,
    StepRunner,
    _dynamo_limits,
    autocast_for,
    build_subjects,
    cast_for_inference,
    generation_steps,
    make_sampler,
    make_train_step,
)
from genorder.flops import generation_flops, train_flops_per_sample
from genorder.generation import make_generator
from genorder.registry import registry
from genorder.timing import synchronize

ORDERS = registry("orders").names()


def _subject(sizing, order_name: str):
    cfg = BenchConfig(orders=[order_name], depth=sizing.depth, resolution=sizing.resolution,
                      device=str(sizing.device), floor=False)
    return next(build_subjects(cfg, sizing.device)), cfg


def _res(sizing) -> str:
    return "256px" if sizing.resolution == "256" else sizing.resolution


def _images_per_s(benchmark, batch: int) -> float | None:
    stats = getattr(benchmark, "stats", None)
    median = getattr(getattr(stats, "stats", None), "median", None)
    return batch / median if median else None


@pytest.mark.parametrize("order_name", ORDERS)
def test_sample(benchmark, sizing, order_name, compiled):
    """One batch: `order.generate` with CFG (doubled batch), top-k 900, top-p 0.95, then the decode;
    `compiled` (with --gen-compile): fixed-shape steps through torch.compile."""
    subject, cfg = _subject(sizing, order_name)
    order, tok, model = subject.order, subject.tokenizer, subject.model
    steps = generation_steps(order, order.layout(tok))
    cast_for_inference(subject, sizing.dtype)
    runner = StepRunner(model, static=True, compile=True) if compiled else model
    sampler = make_sampler(cfg)
    B, dev = sizing.sample_batch, sizing.device
    labels = torch.arange(B, device=dev) % model.num_classes

    def sample():
        with autocast_for(dev, sizing.dtype), (_dynamo_limits() if compiled else nullcontext()):
            tokens = order.generate(runner, tok, labels, sampler, make_generator(0, dev))
            with torch.inference_mode():
                tok.decode(tokens)
        synchronize(dev)

    benchmark.group = f"sample-{_res(sizing)}-d{sizing.depth}-bs{B}"
    benchmark.pedantic(sample, setup=lambda: synchronize(dev), rounds=sizing.rounds, warmup_rounds=1)
    benchmark.extra_info.update({
        "order": order_name, "compiled": compiled, "steps": len(steps), "batch": B, "device": str(dev),
        "dtype": str(sizing.dtype), "resolution": sizing.resolution, "depth": sizing.depth,
        "transformer_gflops_per_image": generation_flops(model, steps, True) / 1e9,
        "images_per_s": _images_per_s(benchmark, B),
    })


@pytest.mark.parametrize("order_name", ORDERS)
def test_train_step(benchmark, sizing, order_name):
    """One AdamW step on random tokens (bf16 autocast on CUDA, grad clip 2), encoder excluded."""
    subject, _ = _subject(sizing, order_name)
    order, tok, model = subject.order, subject.tokenizer, subject.model
    B, dev = sizing.train_batch, sizing.device
    step = make_train_step(order, tok, model, B, dev)

    def train():
        step()
        synchronize(dev)

    benchmark.group = f"train-{_res(sizing)}-d{sizing.depth}-bs{B}"
    benchmark.pedantic(train, setup=lambda: synchronize(dev), rounds=sizing.rounds, warmup_rounds=1)
    benchmark.extra_info.update({
        "order": order_name, "steps": 1, "batch": B, "device": str(dev), "resolution": sizing.resolution,
        "depth": sizing.depth, "train_gflops_per_image": train_flops_per_sample(model) / 1e9,
        "images_per_s": _images_per_s(benchmark, B),
    })
