"""Raster AR order: KV-cached decoding equals cache-free decoding, cached logits equal the full
causal forward, the multi-scale control variant, and a tiny training run lowers the loss."""

from __future__ import annotations

import pytest
import torch
from genorder.testing import TinyCodebookTokenizer, masked_ce, one_thread, tiny_backbone, train_steps

from genorder import StandardSampler, UserError
from genorder.generation import make_generator
from genorder.model import build_model
from genorder.order import TrainBatch
from genorder_plugins.raster import Raster
from genorder_plugins.raster.stem import RasterStem

V, NUM_CLASSES = 16, 4


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def make(scales=(4,), multiscale=False, kv_cache=True, seed=0, **bb):
    torch.manual_seed(seed)
    tok = TinyCodebookTokenizer(scales, V)
    order = Raster(Raster.Config(multiscale=multiscale, kv_cache=kv_cache))
    model = build_model(order, tok, tiny_backbone(**bb), NUM_CLASSES)
    return order, tok, model


def test_layout_groups_steps_and_training_batch():
    order, tok, model = make()
    layout = order.layout(tok)
    assert layout.length == 16 and order.num_steps(layout) == 16
    assert torch.equal(order.groups(layout), torch.arange(16))
    tokens = [torch.randint(0, V, (3, 16))]
    batch = order.training_batch(tokens, tok, None)
    assert isinstance(batch, TrainBatch)
    assert batch.inputs.shape == (3, 15) and torch.equal(batch.inputs, tokens[0][:, :-1])
    assert torch.equal(batch.targets, tokens[0])
    assert batch.levels.shape == (16,)
    logits = model(batch.inputs, torch.tensor([0, 1, 2]))
    assert logits.shape == (3, 16, V)
    assert isinstance(model.stem, RasterStem)
    assert "pos_1LC" in model.stem.no_decay


def test_default_layout_is_256_tokens():
    order = Raster(Raster.Config())
    assert order.layout(TinyCodebookTokenizer((16,), V)).length == 256
    assert order.layout(TinyCodebookTokenizer((16,), V)).scales == (16,)


@pytest.mark.parametrize("cfg,top_k", [(0.0, 0), (2.0, 0), (0.0, 4), (1.5, 3)])
def test_kv_cache_and_recompute_give_the_same_tokens(cfg, top_k):
    order_c, tok, model = make(init_adaln_gamma=1.0)
    order_n = Raster(Raster.Config(kv_cache=False))
    sampler = StandardSampler(StandardSampler.Config(cfg=cfg, top_k=top_k, temperature=1.3))
    labels = torch.tensor([0, 1, 2, 3, NUM_CLASSES])  # incl. the null class
    seen = []
    a = order_c.generate(
        model, tok, labels, sampler, make_generator(7, "cpu"), lambda d, t: seen.append((d, t))
    )
    b = order_n.generate(model, tok, labels, sampler, make_generator(7, "cpu"))
    assert seen == [(i + 1, 16) for i in range(16)]
    assert len(a) == len(b) == 1 and a[0].shape == (5, 16)
    assert torch.equal(a[0], b[0])
    assert int(a[0].min()) >= 0 and int(a[0].max()) < V
    c = order_c.generate(model, tok, labels, sampler, make_generator(8, "cpu"))
    assert not torch.equal(a[0], c[0])  # the seed matters


def test_cached_logits_equal_full_causal_forward():
    """Teacher-forced: prefill of the start token then single-token steps through the static cache
    reproduce the full causal forward at every position (fp32, eval mode, AdaLN gates not ~0)."""
    order, tok, model = make(init_adaln_gamma=1.0)
    model.eval()
    B, L = 3, 16
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(0, V, (B, L), generator=g)
    labels = torch.tensor([0, 3, NUM_CLASSES])
    with torch.no_grad():
        full = model(toks[:, :-1], labels)  # (B, L, V)
        cache = model.new_cache(B)
        steps = [model(toks[:, :0], labels, start=0, cache=cache)]
        for i in range(1, L):
            steps.append(model(toks[:, i - 1 : i], labels, start=i, cache=cache))
        stepped = torch.cat(steps, dim=1)
        # chunked prefill then a multi-token chunk (masked attention inside the cache)
        cache2 = model.new_cache(B)
        chunks = [
            model(toks[:, :4], labels, start=0, cache=cache2),  # positions [0, 5)
            model(toks[:, 4:7], labels, start=5, cache=cache2),  # positions [5, 8)
            model(toks[:, 7:15], labels, start=8, cache=cache2),  # positions [8, 16)
        ]
        chunked = torch.cat(chunks, dim=1)
    assert full.dtype == torch.float32 and full.abs().max() > 1e-3
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    # sensitivity: the causal mask and the positions matter
    with torch.no_grad():
        changed = model(torch.cat([toks[:, :-2], (toks[:, -2:-1] + 1) % V], dim=1), labels)
    torch.testing.assert_close(changed[:, :-1], full[:, :-1], atol=1e-5, rtol=1e-5)
    assert (changed[:, -1] - full[:, -1]).abs().max() > 1e-4


def test_multiscale_tokenizer_requires_the_flag():
    tok = TinyCodebookTokenizer((1, 2, 4), V)
    with pytest.raises(UserError, match="multiscale"):
        build_model(Raster(Raster.Config()), tok, tiny_backbone(), NUM_CLASSES)
    with pytest.raises(UserError, match="multiscale"):
        Raster(Raster.Config()).training_batch([torch.zeros(1, 1).long()], tok, None)


def test_multiscale_control_variant():
    order, tok, model = make(scales=(1, 2, 4), multiscale=True)
    layout = order.layout(tok)
    assert layout.length == 21 and order.num_steps(layout) == 21
    assert torch.equal(order.groups(layout), torch.arange(21))
    tokens = [torch.randint(0, V, (2, p * p)) for p in (1, 2, 4)]
    batch = order.training_batch(tokens, tok, None)
    assert batch.inputs.shape == (2, 20) and batch.targets.shape == (2, 21)
    assert torch.equal(batch.levels, torch.tensor([0] + [1] * 4 + [2] * 16))
    loss = masked_ce(model(batch.inputs, torch.tensor([0, 1])), batch.targets)
    assert torch.isfinite(loss)
    sampler = StandardSampler(StandardSampler.Config(cfg=1.0))
    out = order.generate(model, tok, torch.tensor([1, 2]), sampler, make_generator(0, "cpu"))
    assert [m.shape for m in out] == [(2, 1), (2, 4), (2, 16)]
    out_n = Raster(Raster.Config(multiscale=True, kv_cache=False)).generate(
        model, tok, torch.tensor([1, 2]), sampler, make_generator(0, "cpu")
    )
    assert all(torch.equal(x, y) for x, y in zip(out, out_n))


def test_multiscale_full_vae_layout_is_680():
    scales = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    order = Raster(Raster.Config(multiscale=True))
    tok = TinyCodebookTokenizer(scales, V)
    layout = order.layout(tok)
    assert layout.length == 680 and order.num_steps(layout) == 680
    assert order.groups(layout).shape == (680,)


def test_training_lowers_the_loss():
    order, tok, model = make(seed=0)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8) % NUM_CLASSES
    protos = torch.randint(0, V, (NUM_CLASSES, 16), generator=g)
    tokens = [protos[labels]]  # each class one fixed sequence
    losses = train_steps(model, order, tok, tokens, labels, steps=50)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, (first, last)


def test_model_not_left_in_eval_mode():
    order, tok, model = make()
    model.train()
    order.generate(model, tok, torch.tensor([0]), StandardSampler(StandardSampler.Config()), None)
    assert model.training
