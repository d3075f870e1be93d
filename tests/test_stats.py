"""genorder.stats: the two-level interval's coverage on synthetic data with known between-seed and
within-seed variance, the samples-only interval's under-coverage when seeds vary, the A/A
false-positive rate, a planted effect detected, set-level metrics, t quantiles, determinism.

Monte-Carlo tolerances: a coverage estimated from R replicates has standard error
sqrt(0.95 * 0.05 / R); the tests allow 3.5 of them."""

from __future__ import annotations

import math

import pytest
import torch

from genorder.errors import UserError
from genorder.stats import (
    combine,
    hierarchical_mean,
    minimum_detectable,
    paired_difference,
    paired_set_difference,
    per_class_intervals,
    set_interval,
    t_quantile,
)

P = 0.75  # a class accuracy


def _mc_tol(p: float, reps: int, k: float = 3.5) -> float:
    return k * math.sqrt(p * (1 - p) / reps)


def _bernoulli_arm(g: torch.Generator, S: int, N: int, p: float, sd_seed: float) -> torch.Tensor:
    """(S, N) 0/1 correctness: seed s has accuracy p + N(0, sd_seed^2), each sample Bernoulli of it."""
    p_S = (p + sd_seed * torch.randn(S, generator=g, dtype=torch.float64)).clamp(0.01, 0.99)
    return (torch.rand(S, N, generator=g, dtype=torch.float64) < p_S[:, None]).double()


def test_t_quantiles_match_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.975, 3) == pytest.approx(3.1824, abs=1e-4)
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(0.8, 4) == pytest.approx(0.9410, abs=1e-4)
    assert t_quantile(0.025, 10) == pytest.approx(-2.2281, abs=1e-4)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e5) == pytest.approx(1.959964, abs=1e-4)
    # the MDD at many degrees of freedom is the textbook 2.80 SE (alpha 0.05 two-sided, power 0.8)
    assert minimum_detectable(1.0, math.inf) == pytest.approx(2.8016, abs=1e-4)


@pytest.mark.parametrize("S,N,sd_seed", [(4, 500, 0.02), (2, 500, 0.03), (6, 200, 0.0)])
def test_two_level_interval_covers_95_percent_and_samples_only_does_not(S, N, sd_seed):
    """Known truth: the expected accuracy is P. Between-seed sd 0.02 at N = 500 makes both sources
    of noise about equal (sampling sd of a seed's mean: sqrt(.75 * .25 / 500) = 0.019)."""
    g = torch.Generator().manual_seed(1)
    reps = 400
    cover = cover_samples = dominant_seeds = 0
    for r in range(reps):
        x = _bernoulli_arm(g, S, N, P, sd_seed)
        ci = hierarchical_mean(x)
        cover += ci.covers(P)
        cover_samples += hierarchical_mean(x, scope="samples").covers(P)
        dominant_seeds += ci.dominant == "seeds"
    cov, cov_s = cover / reps, cover_samples / reps
    assert abs(cov - 0.95) <= _mc_tol(0.95, reps), f"two-level coverage {cov:.3f} over {reps} replicates"
    if sd_seed > 0:
        # the samples-only interval ignores the seeds: its SE is about 1/sqrt(2) of the truth, so it
        # covers about P(|Z| < 1.96 / sqrt(2)) = 83%
        assert cov_s < 0.95 - _mc_tol(0.95, reps), f"samples-only coverage {cov_s:.3f} should fall short"
        assert cov - cov_s > 0.06
    else:
        # no seed effect: the samples-only interval is right too, and the samples dominate
        assert abs(cov_s - 0.95) <= _mc_tol(0.95, reps)
        assert dominant_seeds / reps < 0.25


def test_decomposition_names_the_dominant_source():
    g = torch.Generator().manual_seed(2)
    seeds_big = [hierarchical_mean(_bernoulli_arm(g, 4, 2000, P, 0.05)) for i in range(40)]
    samples_big = [hierarchical_mean(_bernoulli_arm(g, 4, 100, P, 0.0)) for i in range(40)]
    assert sum(ci.dominant == "seeds" for ci in seeds_big) >= 36
    assert sum(ci.dominant == "samples" for ci in samples_big) >= 28
    # the within part is the bootstrap variance of the mean, about p(1-p) / (S N); resampling
    # converges to the closed form
    x = _bernoulli_arm(g, 4, 2000, P, 0.0)
    exact = hierarchical_mean(x)
    assert exact.var_within == pytest.approx(P * (1 - P) / (4 * 2000), rel=0.1)
    assert hierarchical_mean(x, reps=1000, seed=0).var_within == pytest.approx(exact.var_within, rel=0.15)
    assert (hierarchical_mean(x, reps=50).lo, hierarchical_mean(x, reps=50).hi) == (exact.lo, exact.hi)
    one = hierarchical_mean(_bernoulli_arm(g, 1, 500, P, 0.0))
    assert one.var_between is None and one.dominant == "unknown (1 seed)" and math.isinf(one.df)


def test_a_a_false_positive_rate_is_about_5_percent():
    """Two arms of the same distribution (each with its own seed effects), paired on seed and
    sample index: 'better' or 'worse' must come out in about 5% of the replicates."""
    g = torch.Generator().manual_seed(3)
    reps = 400
    positives = 0
    for r in range(reps):
        a = _bernoulli_arm(g, 3, 400, P, 0.015)
        b = _bernoulli_arm(g, 3, 400, P, 0.015)
        positives += paired_difference(a, b).verdict != "no detectable difference"
    rate = positives / reps
    assert abs(rate - 0.05) <= _mc_tol(0.05, reps), f"A/A false-positive rate {rate:.3f}"


def test_planted_effect_is_detected_in_its_direction():
    g = torch.Generator().manual_seed(4)
    a = _bernoulli_arm(g, 3, 2000, 0.83, 0.005)
    b = _bernoulli_arm(g, 3, 2000, 0.75, 0.005)
    cmp = paired_difference(a, b, metric="class_acc")
    assert cmp.verdict == "better" and cmp.diff.lo > 0 and cmp.diff.covers(0.08)
    assert paired_difference(b, a).verdict == "worse"
    assert paired_difference(a, b, higher_is_better=False).verdict == "worse"  # e.g. a loss
    # the design could have seen it: the planted 8 points exceed the minimum detectable difference
    assert 0 < cmp.mdd < 0.08
    assert cmp.mdd == pytest.approx((t_quantile(0.975, 2) + t_quantile(0.8, 2)) * cmp.diff.se)
    d = cmp.as_dict()
    assert d["verdict"] == "better" and "mdd_formula" in d and d["diff"]["n_seeds"] == 3


def test_pairing_removes_shared_noise():
    """Both arms share a per-sample difficulty (the same label, the same sample seed): the paired
    interval of A - B is narrower than one from independent arms."""
    g = torch.Generator().manual_seed(5)
    shared_SN = torch.randn(3, 500, generator=g, dtype=torch.float64)
    a = shared_SN + 0.3 * torch.randn(3, 500, generator=g, dtype=torch.float64)
    b = shared_SN + 0.3 * torch.randn(3, 500, generator=g, dtype=torch.float64)
    paired = paired_difference(a, b, scope="samples").diff
    unpaired_var = hierarchical_mean(a, scope="samples").var_within + hierarchical_mean(b, scope="samples").var_within
    assert paired.var_within < 0.2 * unpaired_var


def _mean_stat(x_Rn1: torch.Tensor) -> torch.Tensor:
    return x_Rn1[..., 0].mean(dim=1)


def test_set_interval_of_a_mean_agrees_with_the_per_sample_interval_and_covers():
    g = torch.Generator().manual_seed(6)
    x = _bernoulli_arm(g, 3, 300, P, 0.02)
    per = hierarchical_mean(x)
    sets = set_interval([row[:, None] for row in x], _mean_stat, reps=400, seed=0)
    assert sets.estimate == pytest.approx(per.estimate)
    assert (sets.lo, sets.hi) == pytest.approx((per.lo, per.hi))  # the seed-level part is identical
    assert sets.var_within == pytest.approx(per.var_within, rel=0.25)
    reps, cover = 200, 0
    for r in range(reps):
        y = _bernoulli_arm(g, 3, 200, P, 0.02)
        cover += set_interval([row[:, None] for row in y], _mean_stat, reps=40, seed=r).covers(P)
    assert abs(cover / reps - 0.95) <= _mc_tol(0.95, reps)


def _spread(x_RnD: torch.Tensor) -> torch.Tensor:
    """A non-linear set statistic: the mean per-dimension variance of the set."""
    return x_RnD.var(dim=1).mean(dim=1)


def test_paired_set_difference_detects_a_planted_spread_and_not_an_a_a():
    g = torch.Generator().manual_seed(7)
    base = [torch.randn(1000, 4, generator=g) for _ in range(3)]
    wide = [1.2 * torch.randn(1000, 4, generator=g) for _ in range(3)]
    same = [torch.randn(1000, 4, generator=g) for _ in range(3)]
    planted = paired_set_difference(wide, base, _spread, reps=100, metric="spread")
    assert planted.verdict == "worse" and planted.diff.estimate == pytest.approx(0.44, abs=0.1)
    aa = paired_set_difference(same, base, _spread, reps=100)
    assert aa.verdict == "no detectable difference" and aa.diff.covers(0.0)


def test_deterministic_given_the_seed_and_bad_input_is_refused():
    g = torch.Generator().manual_seed(8)
    x = _bernoulli_arm(g, 3, 200, P, 0.01)
    assert hierarchical_mean(x, reps=100, seed=11) == hierarchical_mean(x, reps=100, seed=11)
    assert hierarchical_mean(x, reps=100, seed=11).var_within != hierarchical_mean(x, reps=100, seed=12).var_within
    s = [row[:, None] for row in x]
    assert set_interval(s, _mean_stat, seed=3) == set_interval(s, _mean_stat, seed=3)
    with pytest.raises(UserError, match="same"):
        paired_difference(x, x[:, :100])
    with pytest.raises(UserError, match="non-finite"):
        hierarchical_mean(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(UserError, match="scope"):
        combine(torch.zeros(2), torch.zeros(5, 2), 10, scope="all")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="same number of seeds"):
        paired_set_difference(s, s[:2], _mean_stat)


def test_per_class_intervals_cover_each_class_accuracy():
    g = torch.Generator().manual_seed(9)
    labels = torch.arange(1000) % 4
    p_k = torch.tensor([0.9, 0.7, 0.5, 0.8], dtype=torch.float64)
    x = (torch.rand(3, 1000, generator=g, dtype=torch.float64) < p_k[labels]).double()
    cis = per_class_intervals(x, labels, 5)
    assert cis[4] is None and all(ci.n_per_seed == 250 and ci.n_seeds == 3 for ci in cis[:4])
    assert [round(ci.estimate, 1) for ci in cis[:4]] == [0.9, 0.7, 0.5, 0.8]
    assert cis[0].estimate == pytest.approx(float(x[:, labels == 0].mean()))
    with pytest.raises(UserError, match="labels"):
        per_class_intervals(x, labels[:10], 4)
