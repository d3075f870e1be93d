"""Paired comparisons with intervals: is order A better than order B, by how much, and could this
design have told?

Two sources of noise make a metric move from one run of a comparison to the next:

* the **samples**: a finite set of n generated images per trained model (class correctness 0/1
  per image, or a set-level metric such as a Fréchet distance of the set);
* the **seeds**: S trained models (training seeds) per order, which differ from one another.

The interval (`hierarchical_mean`, `set_interval`) is two-level:

1. within each seed, a bootstrap over its samples gives the sampling variance of that seed's
   estimate; averaged over seeds it is `var_within`, the part of Var(estimate) that more samples
   would shrink (for a mean, by default, in closed form: the limit of infinitely many resamples);
2. over seeds, the spread of the S seed-level estimates, s^2 / S (s^2 with ddof 1), estimates the
   whole Var(estimate) = sigma_b^2 / S + (within part), since each seed's estimate carries its own
   sampling noise too. `var_between` = max(0, s^2 / S - var_within) is the part more seeds would
   shrink. `dominant` says which of the two is larger.

The interval is estimate ± t(S - 1, 0.975) · sqrt(s^2 / S): the classical one-way random-effects
interval of a balanced design, exact for normal seed-level estimates. It is wide at S = 2 (t = 12.7)
because between-seed variance estimated from two seeds is that uncertain. The naive nested
bootstrap (resample seeds, then samples within each resampled seed, percentile interval) is not
used: its variance is about (S-1)/S · B + (2S-1)/S · W (B, W: the between and within parts), so it
counts the within-seed noise about twice and, with few seeds, takes z quantiles for a variance with
S - 1 degrees of freedom (it under-covers when seeds dominate). With one seed, or with
`scope="samples"`, the interval is estimate ± z · sqrt(var_within): a statement about *these*
trained models, not about a new training seed (tests/test_stats.py shows it under-covers when seeds
vary).

A paired difference (`paired_difference`, `paired_set_difference`) matches the two arms on seed
index and sample index (same labels, same per-sample seeds: `genorder.paired.paired_design`): the
per-seed estimate is of the difference A - B, and the within-seed bootstrap draws the same sample
indices for both arms. The verdict is "better" / "worse" when the interval excludes 0 (in the
metric's direction), else "no detectable difference". The design's minimum detectable difference
is mdd = (t(df, 1 - alpha/2) + t(df, power)) · SE, the two-sided test's 80%-power effect size at
alpha = 0.05 (2.80 · SE with many degrees of freedom).

Everything is deterministic given `seed` (a `torch.Generator` on the CPU draws the resamples).

    >>> ci = hierarchical_mean(correct_SN)                      # (S seeds, N samples) 0/1
    >>> ci.estimate, ci.lo, ci.hi, ci.dominant
    >>> cmp = paired_difference(correct_A_SN, correct_B_SN)     # same labels and sample seeds
    >>> cmp.verdict, cmp.diff.lo, cmp.diff.hi, cmp.mdd
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import torch

from genorder.errors import UserError

Scope = Literal["seeds", "samples"]
SetStatistic = Callable[[torch.Tensor], torch.Tensor]  # (R, n, ...) resampled sets -> (R,) values
VERDICTS = ("better", "worse", "no detectable difference")


# -- Student's t quantiles (no scipy) ------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, may be fractional) degrees of freedom."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (inf: the normal quantile)."""
    if not 0.0 < p < 1.0:
        raise UserError(f"a quantile needs 0 < p < 1, got {p}")
    if df <= 0 or math.isnan(df):
        raise UserError(f"Student's t needs df > 0, got {df}")
    if math.isinf(df) or df > 1e7:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, max(1.0, NormalDist().inv_cdf(p))
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):  # bisection to double precision
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# -- the interval ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A two-level interval of an estimate averaged over seeds (see the module docstring)."""

    estimate: float
    lo: float
    hi: float
    se: float  # the standard error the interval uses
    df: float  # its degrees of freedom (S - 1, or inf for the samples-only interval)
    var_within: float  # Var(estimate) from sampling within seeds (bootstrap)
    var_between: float | None  # Var(estimate) from seed-to-seed differences beyond that; None: 1 seed
    n_seeds: int
    n_per_seed: int
    level: float
    scope: str  # "seeds": generalises over training seeds; "samples": these trained models only

    @property
    def dominant(self) -> str:
        """Which source of noise is larger: "seeds", "samples" or "unknown (1 seed)"."""
        if self.var_between is None:
            return "unknown (1 seed)"
        return "seeds" if self.var_between > self.var_within else "samples"

    @property
    def half_width(self) -> float:
        return 0.5 * (self.hi - self.lo)

    def covers(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["df"] = None if math.isinf(self.df) else self.df
        out["dominant"] = self.dominant
        return out


def combine(theta_S: torch.Tensor, within_RS: torch.Tensor | None, n_per_seed: int, *, level: float = 0.95,
            scope: Scope = "seeds", var_within: float | None = None) -> Interval:
    """The interval from seed-level estimates `theta_S` (S,) and their within-seed bootstrap
    replicates `within_RS` (R, S) (replicate r of seed s: the statistic on a resample of seed s's
    samples), or the within-seed variance of the mean over seeds given directly (`var_within`)."""
    if scope not in ("seeds", "samples"):
        raise UserError(f"scope must be 'seeds' or 'samples', got {scope!r}")
    if not 0.0 < level < 1.0:
        raise UserError(f"level must be in (0, 1), got {level}")
    theta_S = theta_S.double()
    S = len(theta_S)
    if S == 0:
        raise UserError("an interval needs at least one seed")
    estimate = float(theta_S.mean())
    if var_within is None:
        if within_RS is None or within_RS.shape[0] < 2:
            raise UserError("combine needs at least 2 within-seed bootstrap replicates or var_within")
        var_within = float(within_RS.double().mean(dim=1).var(unbiased=True))
    q = 0.5 + level / 2.0
    if S == 1 or scope == "samples":
        var_between = None if S == 1 else max(0.0, float(theta_S.var(unbiased=True)) / S - var_within)
        se, df = math.sqrt(var_within), math.inf
    else:
        var_total = float(theta_S.var(unbiased=True)) / S  # includes each seed's own sampling noise
        var_between = max(0.0, var_total - var_within)
        se, df = math.sqrt(var_total), float(S - 1)
    half = t_quantile(q, df) * se
    return Interval(estimate, estimate - half, estimate + half, se, df, var_within, var_between, S, n_per_seed,
                    level, scope)  # fmt: skip


def _as_SN(values: Any, name: str = "values") -> torch.Tensor:
    x = torch.as_tensor(values).double()
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[1] == 0:
        raise UserError(f"{name} must be (seeds, samples) with at least one sample, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise UserError(f"{name} has non-finite entries")
    return x


def _within_means(x_SN: torch.Tensor, reps: int, g: torch.Generator, chunk_elems: int = 1 << 23) -> torch.Tensor:
    """(R, S) bootstrap means: replicate r resamples each seed's N samples with replacement."""
    S, N = x_SN.shape
    per = max(1, chunk_elems // (S * N))
    out = []
    rows = torch.arange(S)[None, :, None]  # (1, S, 1)
    for start in range(0, reps, per):
        r = min(per, reps - start)
        idx = torch.randint(0, N, (r, S, N), generator=g)  # (r, S, N)
        out.append(x_SN[rows, idx].mean(dim=2))  # (r, S)
    return torch.cat(out) if out else torch.zeros(0, S, dtype=x_SN.dtype)


def hierarchical_mean(values_SN: Any, *, reps: int | None = None, seed: int = 0, level: float = 0.95,
                      scope: Scope = "seeds") -> Interval:
    """Interval of the mean of a per-sample metric `values_SN` (S seeds, N samples per seed; a 1-d
    array is one seed), e.g. class correctness 0/1.

    `reps`: None (default) takes the within-seed bootstrap variance in closed form, its limit as
    the resamples grow (a mean's bootstrap variance is the plug-in variance over N:
    sum_s mean_i (x_si - x_s)^2 / (N S^2)); an integer draws that many resamples instead (from `seed`)."""
    x = _as_SN(values_SN)
    S, N = x.shape
    if reps is None:
        var_within = float(x.var(dim=1, unbiased=False).sum()) / (N * S * S)
        return combine(x.mean(dim=1), None, N, level=level, scope=scope, var_within=var_within)
    if reps < 2:
        raise UserError(f"the bootstrap needs reps >= 2, got {reps}")
    g = torch.Generator().manual_seed(seed)
    return combine(x.mean(dim=1), _within_means(x, reps, g), N, level=level, scope=scope)


def per_class_intervals(values_SN: Any, labels_N: Any, num_classes: int, **kw: Any) -> list[Interval | None]:
    """One `hierarchical_mean` per class: the columns of `values_SN` (S, N) whose label in the
    shared design `labels_N` (N,) is k (None for a class with no sample); `kw` as for it."""
    x = _as_SN(values_SN)
    labels = torch.as_tensor(labels_N)
    if labels.shape != (x.shape[1],):
        raise UserError(f"labels must be ({x.shape[1]},) for values of shape {tuple(x.shape)}, got {tuple(labels.shape)}")
    return [hierarchical_mean(x[:, labels == k], **kw) if bool((labels == k).any()) else None for k in range(num_classes)]


def set_interval(sets: Sequence[torch.Tensor], statistic: SetStatistic, *, reps: int = 200, seed: int = 0,
                 level: float = 0.95, scope: Scope = "seeds", chunk: int = 8) -> Interval:
    """Interval of a set-level metric (a Fréchet distance, ...) averaged over seeds: `sets[s]` is
    seed s's sample set (n, ...) (e.g. features (n, D)); `statistic` maps a batch of sets
    (R, n, ...) to (R,) values. The within-seed bootstrap resamples each set's rows with replacement
    (`chunk` resamples at a time)."""
    return _set_level([(x, None) for x in sets], statistic, reps, seed, level, scope, chunk)


def _set_level(pairs: list[tuple[torch.Tensor, torch.Tensor | None]], statistic: SetStatistic, reps: int, seed: int,
               level: float, scope: Scope, chunk: int) -> Interval:
    """Per seed (a, b): the statistic of a (b None) or statistic(a) - statistic(b), with the same
    resampled row indices for a and b."""
    if not pairs:
        raise UserError("a set-level interval needs at least one seed's sample set")
    if reps < 2:
        raise UserError(f"the bootstrap needs reps >= 2, got {reps}")
    g = torch.Generator().manual_seed(seed)
    theta, within = [], []
    for a, b in pairs:
        n = len(a)
        if n < 2 or (b is not None and len(b) != n):
            raise UserError(f"paired sets need the same size >= 2 per seed, got {n} and {None if b is None else len(b)}")

        def value(idx_Rn: torch.Tensor | None, a=a, b=b) -> torch.Tensor:
            xa = a[None] if idx_Rn is None else a[idx_Rn]  # (R, n, ...)
            v = statistic(xa).double()
            if b is not None:
                v = v - statistic(b[None] if idx_Rn is None else b[idx_Rn]).double()
            return v

        theta.append(value(None)[0])
        reps_s = []
        for start in range(0, reps, chunk):
            idx = torch.randint(0, n, (min(chunk, reps - start), n), generator=g)  # (r, n)
            reps_s.append(value(idx))
        within.append(torch.cat(reps_s))
    n_per = len(pairs[0][0])
    return combine(torch.stack(theta), torch.stack(within, dim=1), n_per, level=level, scope=scope)


# -- paired comparisons ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A - B on one metric: its interval, the verdict for A and the design's detectable size."""

    metric: str
    diff: Interval  # of A - B
    higher_is_better: bool
    verdict: str  # "better" / "worse" (A against B) / "no detectable difference"
    mdd: float  # minimum detectable |A - B| at `power` and alpha = 1 - level (two-sided)
    power: float

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "diff": self.diff.as_dict(), "higher_is_better": self.higher_is_better,
                "verdict": self.verdict, "mdd": self.mdd, "power": self.power,
                "mdd_formula": MDD_FORMULA}  # fmt: skip


MDD_FORMULA = "(t(df, 1 - alpha/2) + t(df, power)) * SE of the difference (2.80 * SE at alpha 0.05, power 0.8, df -> inf)"


def minimum_detectable(se: float, df: float, *, level: float = 0.95, power: float = 0.8) -> float:
    """The true difference a two-sided test at alpha = 1 - level detects with probability `power`:
    (t(df, 1 - alpha/2) + t(df, power)) * se."""
    if not 0.0 < power < 1.0:
        raise UserError(f"power must be in (0, 1), got {power}")
    return (t_quantile(0.5 + level / 2.0, df) + t_quantile(power, df)) * se


def verdict(diff: Interval, higher_is_better: bool) -> str:
    """"better" / "worse" for A (the interval of A - B excludes 0), else "no detectable difference"."""
    if diff.lo > 0.0:
        return "better" if higher_is_better else "worse"
    if diff.hi < 0.0:
        return "worse" if higher_is_better else "better"
    return "no detectable difference"


def _comparison(metric: str, diff: Interval, higher_is_better: bool, power: float) -> Comparison:
    mdd = minimum_detectable(diff.se, diff.df, level=diff.level, power=power)
    return Comparison(metric, diff, higher_is_better, verdict(diff, higher_is_better), mdd, power)


def paired_difference(a_SN: Any, b_SN: Any, *, higher_is_better: bool = True, metric: str = "", reps: int | None = None,
                      seed: int = 0, level: float = 0.95, power: float = 0.8, scope: Scope = "seeds") -> Comparison:
    """A - B of a per-sample metric, paired on seed index and sample index: `a_SN`, `b_SN` (S, N)
    with row s, column i of both arms from the same seed index, label and per-sample seed."""
    a, b = _as_SN(a_SN, "arm A"), _as_SN(b_SN, "arm B")
    if a.shape != b.shape:
        raise UserError(f"paired arms need the same (seeds, samples) shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = hierarchical_mean(a - b, reps=reps, seed=seed, level=level, scope=scope)
    return _comparison(metric, diff, higher_is_better, power)


def paired_set_difference(a_sets: Sequence[torch.Tensor], b_sets: Sequence[torch.Tensor], statistic: SetStatistic, *,
                          higher_is_better: bool = False, metric: str = "", reps: int = 200, seed: int = 0,
                          level: float = 0.95, power: float = 0.8, scope: Scope = "seeds",
                          chunk: int = 8) -> Comparison:
    """A - B of a set-level metric (lower is better by default, as for a Fréchet distance): per
    seed index s, statistic(a_sets[s]) - statistic(b_sets[s]); the within-seed bootstrap resamples
    the same sample indices in both arms (they are matched by label and per-sample seed)."""
    if len(a_sets) != len(b_sets):
        raise UserError(f"paired arms need the same number of seeds, got {len(a_sets)} and {len(b_sets)}")
    diff = _set_level(list(zip(a_sets, b_sets, strict=True)), statistic, reps, seed, level, scope, chunk)
    return _comparison(metric, diff, higher_is_better, power)
