"""MaskGIT order: schedules (cosine, tokens per step, Halton), training masks, confidence and Halton
decoding (every token fixed at the end, fixed tokens never change), and a tiny training run."""

from __future__ import annotations

import math

import pytest
import torch
from genorder.testing import (
    CallRecorder,
    TinyCodebookTokenizer,
    masked_ce,
    one_thread,
    tiny_backbone,
    train_steps,
)

from genorder import StandardSampler, UserError
from genorder.generation import make_generator, sample_step
from genorder.model import build_model
from genorder.order import IGNORE
from genorder_plugins.maskgit import MaskGIT
from genorder_plugins.maskgit.schedule import cosine_schedule, halton_order, tokens_per_step

V, NUM_CLASSES = 16, 4


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def make(side=4, seed=0, **cfg):
    torch.manual_seed(seed)
    tok = TinyCodebookTokenizer((side,), V)
    order = MaskGIT(MaskGIT.Config(**cfg))
    model = build_model(order, tok, tiny_backbone(init_adaln_gamma=1.0), NUM_CLASSES)
    return order, tok, model


# -- schedules ---------------------------------------------------------------------------------
def test_cosine_schedule():
    assert cosine_schedule(0.0) == 1.0 and abs(cosine_schedule(1.0)) < 1e-12
    r = torch.linspace(0, 1, 11)
    torch.testing.assert_close(cosine_schedule(r), torch.cos(math.pi / 2 * r))


@pytest.mark.parametrize(
    "L,T",
    [(256, 8), (256, 12), (256, 1), (256, 256), (16, 8), (16, 15), (4, 4), (1, 1), (680, 10)]
    + [(9, 7), (2, 2)],
)
def test_tokens_per_step(L, T):
    counts = tokens_per_step(L, T)
    assert len(counts) == T and sum(counts) == L and min(counts) >= 1


def test_tokens_per_step_follows_the_cosine_schedule():
    counts = tokens_per_step(256, 8)
    left = 256
    for t, c in enumerate(counts):
        left -= c
        assert left == math.floor(256 * math.cos(math.pi / 2 * (t + 1) / 8))
    assert counts[0] < counts[-1]  # few tokens first, many at the end


def test_tokens_per_step_rejects_more_steps_than_tokens():
    with pytest.raises(ValueError):
        tokens_per_step(4, 5)


@pytest.mark.parametrize("h,w", [(16, 16), (4, 4), (1, 1), (3, 5), (7, 2)])
def test_halton_order_is_a_permutation(h, w):
    order = halton_order(h, w)
    assert order.dtype == torch.long and order.shape == (h * w,)
    assert torch.equal(order.sort().values, torch.arange(h * w))


def test_halton_order_starts_spread_out():
    order = halton_order(16, 16)
    rows, cols = order[:4] // 16, order[:4] % 16
    # first Halton points (1/2, 1/3), (1/4, 2/3), (3/4, 1/9), (1/8, 4/9)
    assert cols.tolist() == [8, 4, 12, 2] and rows.tolist() == [5, 10, 1, 7]


# -- training masks ----------------------------------------------------------------------------
def test_training_batch_ignore_placement_and_levels():
    order, tok, _ = make()
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, V, (64, 16), generator=g)
    b = order.training_batch([toks], tok, g)
    assert b.inputs.shape == (64, 16) and b.targets.shape == (64, 17)
    assert torch.equal(b.levels, torch.tensor([-1] + [0] * 16))
    assert (b.targets[:, 0] == IGNORE).all()
    masked = b.inputs == V
    assert (masked.sum(1) >= 1).all()
    assert torch.equal(b.targets[:, 1:] != IGNORE, masked)
    assert torch.equal(b.targets[:, 1:][masked], toks[masked])
    assert torch.equal(b.inputs[~masked], toks[~masked])
    # reproducible from the generator
    g2 = torch.Generator().manual_seed(0)
    torch.randint(0, V, (64, 16), generator=g2)  # same consumption as above
    again = order.training_batch([toks], tok, g2)
    assert torch.equal(again.inputs, b.inputs) and torch.equal(again.targets, b.targets)


def test_training_mask_ratio_distribution():
    """ratio = cos(pi/2 u): mean 2/pi, P(ratio <= x) = 1 - 2/pi acos(x); positions uniform."""
    order, tok, _ = make(side=8)
    g = torch.Generator().manual_seed(0)
    toks = torch.zeros(4000, 64, dtype=torch.long)
    masked = order.training_batch([toks], tok, g).inputs == V
    ratio = masked.float().mean(1)
    assert abs(ratio.mean().item() - 2 / math.pi) < 0.02
    for x in (0.25, 0.5, 0.75):
        expect = 1 - 2 / math.pi * math.acos(x)
        assert abs((ratio <= x).float().mean().item() - expect) < 0.04, x
    per_pos = masked.float().mean(0)  # every position equally likely
    assert (per_pos - 2 / math.pi).abs().max() < 0.05


# -- decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "unmask_order,cfg,top_k",
    [("confidence", 0.0, 0), ("confidence", 2.0, 4), ("halton", 0.0, 0), ("halton", 1.0, 3)],
)
def test_generation_fixes_everything_and_never_remasks(unmask_order, cfg, top_k):
    T = 5
    order, tok, model = make(steps=T, unmask_order=unmask_order)
    spy = CallRecorder(model)
    sampler = StandardSampler(StandardSampler.Config(cfg=cfg, top_k=top_k))
    labels = torch.tensor([0, 1, 3])
    seen = []
    out = order.generate(
        spy, tok, labels, sampler, make_generator(0, "cpu"), lambda d, t: seen.append((d, t))
    )
    assert seen == [(t + 1, T) for t in range(T)]
    assert len(spy.calls) == T == order.num_steps(order.layout(tok))
    assert len(out) == 1 and out[0].shape == (3, 16)
    final = out[0]
    assert int(final.min()) >= 0 and int(final.max()) < V  # no [MASK] left
    B2 = 6 if cfg else 3
    fed = [c[0] for c in spy.calls]
    feeds = [c[:3] for c in fed] + [final]
    assert all(c.shape[0] == B2 for c in fed) and not any(cached for _, _, cached in spy.calls)
    assert (fed[0] == V).all()
    counts = tokens_per_step(16, T)
    for t in range(T):
        before, after = feeds[t], feeds[t + 1]
        fixed_before, fixed_after = before != V, after != V
        assert (fixed_after.sum(1) == sum(counts[: t + 1])).all()
        assert (fixed_after | ~fixed_before).all()  # never re-masked
        assert torch.equal(after[fixed_before], before[fixed_before])  # never changed
    if cfg:
        assert all(torch.equal(c[:3], c[3:]) for c in fed)  # same ids in both halves
    if unmask_order == "halton":
        h = halton_order(4, 4)
        for t in range(T):
            pos = h[: sum(counts[: t + 1])]
            assert (feeds[t + 1][:, pos] != V).all()


def test_generation_is_seeded():
    order, tok, model = make(steps=4)
    sampler = StandardSampler(StandardSampler.Config(cfg=1.0))
    labels = torch.tensor([0, 2])
    a = order.generate(model, tok, labels, sampler, make_generator(3, "cpu"))[0]
    b = order.generate(model, tok, labels, sampler, make_generator(3, "cpu"))[0]
    c = order.generate(model, tok, labels, sampler, make_generator(4, "cpu"))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_requires_single_scale_and_enough_tokens():
    with pytest.raises(UserError, match="single-scale"):
        order = MaskGIT(MaskGIT.Config())
        build_model(order, TinyCodebookTokenizer((1, 2, 4), V), tiny_backbone(), NUM_CLASSES)
    with pytest.raises(UserError, match="steps"):
        order = MaskGIT(MaskGIT.Config(steps=17))
        build_model(order, TinyCodebookTokenizer((4,), V), tiny_backbone(), NUM_CLASSES)


def test_layout_and_groups():
    order, tok, model = make()
    layout = order.layout(tok)
    assert order.num_steps(layout) == 8
    assert torch.equal(order.groups(layout), torch.zeros(17, dtype=torch.long))
    assert model.seq_len == 17
    assert order.layout(TinyCodebookTokenizer((16,), V)).length == 256


def test_training_lowers_the_loss():
    order, tok, model = make(seed=0)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(16) % NUM_CLASSES
    protos = torch.randint(0, V, (NUM_CLASSES, 16), generator=g)
    tokens = [protos[labels]]

    def eval_loss():
        model.eval()
        with torch.no_grad():
            b = order.training_batch(tokens, tok, torch.Generator().manual_seed(123))
            return masked_ce(model(b.inputs, labels), b.targets).item()

    before = eval_loss()
    train_steps(model, order, tok, tokens, labels, steps=50)
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


def test_confidence_keeps_the_most_likely_tokens_without_noise():
    """choice_temperature 0: step 0 fixes the positions whose sampled token has the highest log p
    under the (guided, filtered) distribution it was drawn from; replayed with the same generator."""
    order, tok, model = make(steps=4, choice_temperature=0.0)
    spy = CallRecorder(model)
    labels = torch.tensor([0, 2])
    sampler = StandardSampler(StandardSampler.Config(temperature=0.7))
    order.generate(spy, tok, labels, sampler, make_generator(0, "cpu"))
    model.eval()
    with torch.no_grad():
        logits = model(torch.full((2, 16), V), labels)[:, 1:]
        sampled_BL, guided_BLV = sample_step(sampler, logits, 2, 0, 4, make_generator(0, "cpu"))
    logp_BL = guided_BLV.log_softmax(-1).gather(-1, sampled_BL[..., None]).squeeze(-1)
    k = tokens_per_step(16, 4)[0]
    expect = torch.zeros(2, 16, dtype=torch.bool).scatter_(1, logp_BL.topk(k, dim=1).indices, True)
    fed = spy.calls[1][0]
    assert torch.equal(fed != V, expect)
    assert torch.equal(fed[expect], sampled_BL[expect])
