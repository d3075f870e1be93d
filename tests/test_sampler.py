"""Sampler math against hand-computed cases."""

import math

import pytest
import torch

from genorder.registry import registry
from genorder.sampler import StandardSampler, top_k_filter, top_p_filter

NEG = float("-inf")


def test_top_k_keeps_k_largest_and_ties():
    x = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert top_k_filter(x, 2).tolist() == [[NEG, 5.0, NEG, 4.0, NEG]]
    ties = torch.tensor([[1.0, 3.0, 3.0, 0.0]])  # k-th largest is 3: both 3s kept
    assert top_k_filter(ties, 2).tolist() == [[NEG, 3.0, 3.0, NEG]]
    assert torch.equal(top_k_filter(x, 0), x)


def test_top_p_hand_case():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # ascending cumulative mass: 0.05, 0.20, 0.50, 1.0 ; drop where cum <= 1 - p
    out = top_p_filter(logits, 0.8)  # drop cum <= 0.2 -> the 0.05 and 0.15 tokens
    assert torch.isinf(out[0, 2:]).all() and torch.isfinite(out[0, :2]).all()
    out = top_p_filter(logits, 0.96)  # drop cum <= 0.04 -> none
    assert torch.isfinite(out).all()
    out = top_p_filter(logits, 0.01)  # the most likely token always survives
    assert torch.isfinite(out[0, 0]) and torch.isinf(out[0, 1:]).all()


def test_cfg_linear_ramp_matches_var():
    s = StandardSampler(StandardSampler.Config(cfg=1.5))
    weights = [1 + s.guidance(k, 10) for k in range(10)]
    expected = [1.0, 1.1667, 1.3333, 1.5, 1.6667, 1.8333, 2.0, 2.1667, 2.3333, 2.5]
    assert weights == pytest.approx(expected, abs=1e-4)
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert s.guide(c, u, 9, 10).item() == pytest.approx(2.5 * 2 - 1.5 * 1)
    assert s.guide(c, u, 0, 10).item() == 2.0  # first scale unguided
    const = StandardSampler(StandardSampler.Config(cfg=2.0, cfg_schedule="constant"))
    assert const.guidance(0, 10) == const.guidance(9, 10) == 2.0
    assert not StandardSampler(StandardSampler.Config()).uses_cfg


def test_same_seed_same_draws_and_distribution():
    s = StandardSampler(StandardSampler.Config(temperature=1.0))
    logits = torch.randn(4, 50, 7)
    a, _ = s(logits, None, 0, 1, torch.Generator().manual_seed(3))
    b, _ = s(logits, None, 0, 1, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    probs = torch.tensor([0.7, 0.2, 0.1])
    draws, _ = s(probs.log().expand(1, 20000, 3), None, 0, 1, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.02)


def test_temperature_and_topk_compose():
    s = StandardSampler(StandardSampler.Config(temperature=0.5, top_k=1))
    logits = torch.tensor([[[0.0, 1.0, 0.5]]])
    filt = s.filter(logits)
    assert filt[0, 0, 1].item() == 2.0 and math.isinf(filt[0, 0, 0].item())


def test_more_smooth_weights_are_distributions():
    s = StandardSampler(StandardSampler.Config(more_smooth=True))
    w = s.soft_codes_weights(torch.randn(2, 5, 9), 3, 10, torch.Generator().manual_seed(0))
    assert torch.allclose(w.sum(-1), torch.ones(2, 5))
    assert StandardSampler(StandardSampler.Config()).soft_codes_weights(torch.randn(1, 1, 3), 0, 1, None) is None


@pytest.mark.parametrize("name", registry("samplers").names())
def test_every_registered_sampler_contract(name):
    s = registry("samplers").create(name, {})
    cond, uncond = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    tok, filt = s(cond, uncond if s.uses_cfg else None, 1, 4, torch.Generator().manual_seed(0))
    assert tok.shape == (2, 6) and tok.dtype == torch.long and int(tok.max()) < 11
    assert filt.shape == cond.shape


CHI2_999_DF8 = 26.124  # the 0.999 quantile of chi-square with 8 degrees of freedom


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_categorical_draws_follow_the_probabilities(seed):
    """Inverse-CDF draws against softmax(logits): a chi-square goodness-of-fit test over 9 tokens
    (one row per draw, 20,000 rows), which a sampler drawing from the wrong distribution fails
    (the same test on draws from a shifted distribution must reject it)."""
    from genorder.sampler import categorical

    probs_V = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.08, 0.07, 0.05, 0.03, 0.02])
    n = 20_000
    draws = categorical(probs_V.log().expand(n, 9), torch.Generator().manual_seed(seed))
    assert draws.shape == (n,) and draws.dtype == torch.long
    counts = torch.bincount(draws, minlength=9).double()
    expected = probs_V.double() * n
    assert float(((counts - expected) ** 2 / expected).sum()) < CHI2_999_DF8
    wrong = probs_V.roll(1).double() * n  # the test has the power to see a wrong distribution
    assert float(((counts - wrong) ** 2 / wrong).sum()) > 10 * CHI2_999_DF8


def test_categorical_never_draws_a_zero_probability_token():
    """-inf logits (top-k / top-p filtered), first, inside and last in the row, are never drawn,
    also where the remaining mass is tiny."""
    from genorder.sampler import categorical

    logits = torch.randn(4000, 12)
    logits[:, [0, 5, 11]] = float("-inf")
    logits[:2000, 1] = 30.0  # rows where one token holds almost all the mass
    draws = categorical(logits, torch.Generator().manual_seed(0))
    assert not torch.isin(draws, torch.tensor([0, 5, 11])).any()
    assert int(draws.min()) >= 1 and int(draws.max()) <= 10
    one_hot = torch.full((10, 7), float("-inf"))
    one_hot[torch.arange(10), torch.arange(10) % 7] = 0.0
    assert torch.equal(categorical(one_hot, torch.Generator().manual_seed(1)), torch.arange(10) % 7)


def test_categorical_same_generator_same_draws_any_batch_shape():
    """Deterministic: the same seed gives the same draws; a (B, N, V) batch draws row-major, as
    its flattened (B·N, V) view does."""
    from genorder.sampler import categorical

    logits = torch.randn(3, 5, 17)
    a = categorical(logits, torch.Generator().manual_seed(7))
    b = categorical(logits, torch.Generator().manual_seed(7))
    flat = categorical(logits.reshape(15, 17), torch.Generator().manual_seed(7))
    assert a.shape == (3, 5) and torch.equal(a, b) and torch.equal(a.reshape(15), flat)
    assert not torch.equal(a, categorical(logits, torch.Generator().manual_seed(8)))
