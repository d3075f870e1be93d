"""Contract tests run against every registered order (built-in or third-party), with the smallest
stub tokenizer that serves it (chosen by `order.tokenizer_kind`): build_model, teacher forcing to a
finite loss with finite gradients, and a seeded `generate` that returns token maps of the layout's
shapes, makes `num_steps` backbone calls, reports progress and restores train mode."""

from __future__ import annotations

import pytest
import torch
from helpers import CallRecorder, masked_ce, one_thread, tiny_backbone, tokenizer_for

from genorder import StandardSampler
from genorder.generation import make_generator
from genorder.model import GenModel, build_model
from genorder.order import Order, TrainBatch
from genorder.registry import registry

V, NUM_CLASSES, B = 16, 4, 2
KNOWN_KINDS = ("single-scale", "multi-scale")


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def order_names() -> list[str]:
    return registry("orders").names()


def make(name: str):
    order = registry("orders").create(name)
    if order.tokenizer_kind not in KNOWN_KINDS:
        pytest.skip(f"no stub tokenizer for {name!r}: tokenizer_kind={order.tokenizer_kind!r}")
    tok = tokenizer_for(order, codebook_size=V)
    torch.manual_seed(0)
    model = build_model(order, tok, tiny_backbone(), NUM_CLASSES)
    return order, tok, model


def test_builtin_orders_are_registered():
    assert {"next-scale", "raster", "maskgit"} <= set(order_names())


@pytest.mark.parametrize("name", order_names())
def test_training_batch_forward_finite_loss(name):
    order, tok, model = make(name)
    assert isinstance(order, Order) and isinstance(model, GenModel)
    layout = order.layout(tok)
    groups = order.groups(layout)
    assert groups.dtype == torch.long and groups.ndim == 1 and groups.numel() >= layout.length
    assert model.seq_len == groups.numel()
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, V, (B, p * p), generator=g) for p in layout.scales]
    batch = order.training_batch(tokens, tok, g)
    assert isinstance(batch, TrainBatch)
    S = groups.numel()
    assert batch.targets.shape == (B, S) and batch.targets.dtype == torch.long
    if batch.levels is not None:
        assert batch.levels.shape == (S,)
    model.train()
    logits = model(batch.inputs, torch.tensor([0, NUM_CLASSES]))
    assert logits.shape == (B, S, V)
    loss = masked_ce(logits, batch.targets)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert model.stem.no_decay, "stems list their position tables in no_decay"
    groups_pg = model.param_groups(0.05)
    assert sum(len(pg["params"]) for pg in groups_pg) == len(list(model.parameters()))


@pytest.mark.parametrize("cfg", [0.0, 1.5])
@pytest.mark.parametrize("name", order_names())
def test_generate_contract(name, cfg):
    order, tok, model = make(name)
    layout = order.layout(tok)
    sampler = StandardSampler(StandardSampler.Config(cfg=cfg, top_k=8))
    labels = torch.tensor([1, NUM_CLASSES])  # a class and the null class
    rec = CallRecorder(model)
    rec.train()
    seen: list[tuple[int, int]] = []
    out = order.generate(
        rec, tok, labels, sampler, make_generator(0, "cpu"), lambda d, t: seen.append((d, t))
    )
    assert rec.training, "generate restores train mode"
    assert [tuple(m.shape) for m in out] == [(B, p * p) for p in layout.scales]
    for m in out:
        assert m.dtype == torch.long and int(m.min()) >= 0 and int(m.max()) < V
    steps = order.num_steps(layout)
    assert len(rec.calls) == steps
    assert seen and seen[-1] == (steps, steps)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    again = order.generate(model, tok, labels, sampler, make_generator(0, "cpu"))
    assert all(torch.equal(a, b) for a, b in zip(out, again)), "same seed, same tokens"
