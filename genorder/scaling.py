"""Scaling laws per generation order (VAR §4.1, Fig. 5): the sweep's points, their budgets, the
held-out token loss, power-law fits with intervals, the compute-optimal frontier and the figure.

A sweep trains every order at several model sizes (depths; width = `width_per_depth`·d, as the
backbone's default 64·d) on the same data and tokenizers. Every point gets the same number of
**target tokens per parameter**: images = ceil(tokens_per_param · params / L), L being the tokens
the order predicts per image (its layout's length), turned into whole optimizer steps of one fixed
batch, so the budget is deterministic (steps and images, never wall-clock). Training FLOPs are the
trainer's counted ones (3x forward, `genorder.flops`).

Each finished point is one JSON line in `points.jsonl` (`append_point`), keyed by a fingerprint of
everything that decides its result (`point_key`): a re-run skips the points already there.

The fit, per order and per x (parameters or training FLOPs), is ordinary least squares on log10
axes, log L = log a + b·log X, with
  * the exponent's 95% interval both from the regression (t quantile, n-2 degrees of freedom) and
    from a bootstrap over the points (percentile; resamples with a single distinct x are redrawn);
  * Pearson's r of (log X, log L), as VAR reports (-0.998 for loss against parameters).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field

from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.hashing import config_fingerprint
from genorder.order import IGNORE

# two-sided 95% quantiles of Student's t by degrees of freedom (1..30); 1.96 beyond
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    if df < 1:
        return math.inf
    return _T975[df - 1] if df <= len(_T975) else 1.96


def registered_orders() -> list[str]:
    """Every registered order, by name (the sweep's default)."""
    from genorder.registry import registry

    return sorted(registry("orders").names())


class SweepConfig(ComponentConfig):
    """Everything a sweep's points share (one fingerprint per point is taken over this and the point).
    `genorder.experiments.scale.ScaleConfig` (what `genorder scale` takes) resolves into one."""

    orders: list[str] = Field(default_factory=lambda: registered_orders(), min_length=1,
                              description="default: every registered order")
    depths: list[Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=3)
    width_per_depth: int = Field(64, ge=8, description="width C = width_per_depth·depth (head dim 64 by default)")
    heads_per_depth: int = Field(1, ge=1, description="heads = heads_per_depth·depth")
    tokens_per_param: float = Field(20.0, gt=0, description="target tokens seen per parameter (same for every point)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, description="peak learning rate, the same at every size")
    seed: int = 0
    eval_n: int = Field(1000, ge=1, description="test images for the held-out token loss")
    eval_batch: int = Field(250, ge=1)
    accuracy_n: int = Field(0, ge=0, description="class-consistency samples per point (0: not measured)")
    cfg: float = Field(1.5, ge=0, description="CFG of the class-consistency samples")
    min_steps: int = Field(1, ge=1, description="at least this many optimizer steps per point")
    # set by a regime (None: the trainer's defaults); left out of the fingerprints when None, so the
    # points of a sweep made before regimes existed keep their keys
    schedule: str | None = Field(None, description="lr schedule of every point (a regime's)")
    cooldown: float | None = Field(None, gt=0, lt=1, description="cool-down fraction of the wsd schedule")
    tokenizer_batch: int | None = Field(None, ge=1, description="batch of a tokenizer trained first")
    tokenizer_lr: float | None = Field(None, gt=0, description="lr of a tokenizer trained first")

    def train_opts(self) -> dict[str, Any]:
        """The `TrainConfig` options every point trains with."""
        extra = {k: v for k, v in (("schedule", self.schedule), ("cooldown", self.cooldown)) if v is not None}
        return {"batch_size": self.batch_size, "lr": self.lr, "seed": self.seed, **extra}

    def tokenizer_train_opts(self) -> dict[str, Any] | None:
        opts = {k: v for k, v in (("batch_size", self.tokenizer_batch), ("lr", self.tokenizer_lr)) if v is not None}
        return opts or None

    def backbone(self, depth: int) -> dict[str, Any]:
        return {"depth": depth, "width": self.width_per_depth * depth, "heads": self.heads_per_depth * depth}


@dataclass(frozen=True)
class Plan:
    """One point of the sweep before training: its size and its deterministic budget."""

    order: str
    depth: int
    width: int
    params: int
    tokens_per_image: int
    steps: int
    images: int
    train_flops: float  # counted: 3x forward per image, times images

    @property
    def name(self) -> str:
        return f"{self.order}-d{self.depth}-w{self.width}"


def plan_budget(cfg: SweepConfig, params: int, tokens_per_image: int) -> tuple[int, int]:
    """(steps, images): whole steps of `batch_size` covering tokens_per_param·params target tokens."""
    images = math.ceil(cfg.tokens_per_param * params / max(tokens_per_image, 1))
    steps = max(cfg.min_steps, math.ceil(images / cfg.batch_size))
    return steps, steps * cfg.batch_size


EVAL_FIELDS = {"eval_n", "eval_batch", "accuracy_n", "cfg"}  # measurement only: no retraining


def train_key(cfg: SweepConfig, plan: Plan, context: dict[str, Any]) -> str:
    """Fingerprint of what decides a point's trained model: the shared config without the lists of
    orders and depths (adding sizes later keeps the finished points) and without the evaluation
    settings, the point, and `context` (dataset and tokenizer content hashes)."""
    shared = cfg.model_dump(mode="json", exclude={"orders", "depths", *EVAL_FIELDS}, exclude_none=True)
    return config_fingerprint({"shared": shared, "point": asdict(plan), "context": context})


def point_key(cfg: SweepConfig, plan: Plan, context: dict[str, Any]) -> str:
    """Fingerprint of a point's whole result: its trained model (`train_key`) and how it is scored."""
    evals = cfg.model_dump(mode="json", include=EVAL_FIELDS)
    return config_fingerprint({"train": train_key(cfg, plan, context), "eval": evals})


# -- points on disk --------------------------------------------------------------------------------


def read_points(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of `path` (a line cut off by a crash is ignored)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_point(path: Path, point: dict[str, Any]) -> None:
    """Append one finished point as a single line, flushed and fsynced (resume reads it back)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(point, default=str) + "\n"
    with path.open("a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def done_keys(points: Iterable[dict[str, Any]]) -> set[str]:
    return {p["key"] for p in points if "key" in p}


# -- held-out loss -----------------------------------------------------------------------------------


@torch.no_grad()
def test_token_loss(order, tokenizer, model, dataset, n: int, batch_size: int = 250, seed: int = 0) -> dict[str, float]:
    """Mean per-token cross-entropy (nats) of teacher forcing on the first `n` images of `dataset`
    (the test split), true labels (no label dropout), eval mode; MaskGIT's masks come from a fixed
    generator, so the number is deterministic. Returns {"loss", "acc", "tokens", "images"}."""
    device = next(model.parameters()).device
    model.eval()
    g = torch.Generator().manual_seed(seed)
    n = min(n, len(dataset))
    loss_sum, correct, count = 0.0, 0.0, 0
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        images, labels = dataset.get_batch(idx)
        images, labels = images.to(device), labels.to(device)
        tokens = tokenizer.encode(images)
        batch = order.training_batch(tokens, tokenizer, g)
        logits_BSV = model(batch.inputs, labels).float()
        targets_BS = batch.targets
        valid = targets_BS != IGNORE
        loss_sum += float(F.cross_entropy(logits_BSV[valid], targets_BS[valid], reduction="sum"))
        correct += float((logits_BSV.argmax(-1) == targets_BS)[valid].sum())
        count += int(valid.sum())
    return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1), "tokens": count, "images": n}


# -- fits --------------------------------------------------------------------------------------------


def _ols(lx: list[float], ly: list[float]) -> tuple[float, float, float, float]:
    """(slope, intercept, Pearson r, standard error of the slope) of ly on lx."""
    n = len(lx)
    mx, my = sum(lx) / n, sum(ly) / n
    sxx = sum((x - mx) ** 2 for x in lx)
    syy = sum((y - my) ** 2 for y in ly)
    sxy = sum((x - mx) * (y - my) for x, y in zip(lx, ly))
    if sxx <= 0:
        raise ValueError("all x are equal: no slope")
    b = sxy / sxx
    a = my - b * mx
    r = sxy / math.sqrt(sxx * syy) if syy > 0 else 0.0
    resid = sum((y - (a + b * x)) ** 2 for x, y in zip(lx, ly))
    se = math.sqrt(resid / (n - 2) / sxx) if n > 2 else math.inf
    return b, a, r, se


def fit_power_law(xs: list[float], ys: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Fit y = a·x^b on log10 axes. Returns a, b, r (Pearson on log-log), the slope's standard error,
    `b_ci_t` (regression 95% interval) and `b_ci_boot` (bootstrap over points, 95% percentile)."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys) if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
    if len({x for x, _ in pts}) < 2:
        raise ValueError("a power-law fit needs at least 2 points with different x")
    lx = [math.log10(x) for x, _ in pts]
    ly = [math.log10(y) for _, y in pts]
    b, log_a, r, se = _ols(lx, ly)
    n = len(pts)
    ci_t = [b - t975(n - 2) * se, b + t975(n - 2) * se] if n > 2 else None
    rng = random.Random(seed)
    boots = []
    if n > 2 and n_boot > 0:
        tries = 0
        while len(boots) < n_boot and tries < 20 * n_boot:
            tries += 1
            idx = [rng.randrange(n) for _ in range(n)]
            if len({lx[i] for i in idx}) < 2:
                continue
            boots.append(_ols([lx[i] for i in idx], [ly[i] for i in idx])[0])
    ci_boot = None
    if boots:
        boots.sort()
        ci_boot = [boots[int(0.025 * (len(boots) - 1))], boots[math.ceil(0.975 * (len(boots) - 1))]]
    return {"a": 10.0**log_a, "b": b, "r": r, "b_se": se, "b_ci_t": ci_t, "b_ci_boot": ci_boot, "n": n,
            "n_boot": len(boots), "x_range": [min(x for x, _ in pts), max(x for x, _ in pts)]}  # fmt: skip


def predict(fit: dict[str, Any], x: float) -> float:
    return fit["a"] * x ** fit["b"]


def frontier(points: list[dict[str, Any]], x: str = "flops", y: str = "loss") -> list[dict[str, Any]]:
    """The compute-optimal frontier: the points no other point beats with less or equal x (sorted by x).
    Each entry: {x, y, order, depth}."""
    pts = sorted((p for p in points if p.get(x) and p.get(y) is not None), key=lambda p: (p[x], p[y]))
    out, best = [], math.inf
    for p in pts:
        if p[y] < best:
            best = p[y]
            out.append({"x": p[x], "y": p[y], "order": p["order"], "depth": p["depth"]})
    return out


def fits_by_order(points: list[dict[str, Any]], y: str = "loss", n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """{order: {"params": fit or {"error"}, "flops": fit or {"error"}}} of `y` against each x."""
    out: dict[str, dict] = {}
    for order in dict.fromkeys(p["order"] for p in points):
        mine = [p for p in points if p["order"] == order and p.get(y) is not None]
        out[order] = {}
        for x in ("params", "flops"):
            try:
                out[order][x] = fit_power_law([p[x] for p in mine], [p[y] for p in mine], n_boot, seed)
            except ValueError as e:
                out[order][x] = {"error": str(e), "n": len(mine)}
    return out


def compare_exponents(fits: dict[str, dict], x: str = "params") -> list[dict[str, Any]]:
    """Pairwise: do two orders' exponents differ? 'yes' when their bootstrap (else regression)
    intervals do not overlap, 'no' otherwise (an overlap is not proof of equality; said in the docs)."""
    names = [o for o in fits if "b" in fits[o].get(x, {})]
    out = []
    for i, o1 in enumerate(names):
        for o2 in names[i + 1 :]:
            f1, f2 = fits[o1][x], fits[o2][x]
            c1, c2 = f1.get("b_ci_boot") or f1.get("b_ci_t"), f2.get("b_ci_boot") or f2.get("b_ci_t")
            differ = None if not (c1 and c2) else (c1[1] < c2[0] or c2[1] < c1[0])
            out.append({"a": o1, "b": o2, "x": x, "b_a": f1["b"], "b_b": f2["b"], "ci_a": c1, "ci_b": c2,
                        "differ": differ})  # fmt: skip
    return out


# -- the figure --------------------------------------------------------------------------------------


def plot_scaling(points: list[dict[str, Any]], fits: dict[str, dict], path: str | Path, x: str = "flops",
                 y: str = "loss", title: str = "") -> Path:  # fmt: skip
    """Log-log: every order's points, its fitted power law (dashed as a 2-point line) and the
    compute-optimal frontier over all points (when x is FLOPs)."""
    from genorder.plot import line_plot

    series: dict[str, list[tuple[float, float]]] = {}
    for order in dict.fromkeys(p["order"] for p in points):
        series[order] = [(p[x], p[y]) for p in points if p["order"] == order and p.get(y) is not None]
    for order, f in fits.items():
        fit = f.get(x, {})
        if "b" in fit:
            lo, hi = fit["x_range"]
            series[f"fit {order} b={fit['b']:+.3f}"] = [(lo, predict(fit, lo)), (hi, predict(fit, hi))]
    if x == "flops":
        fr = frontier(points, x, y)
        if len(fr) >= 2:
            series["frontier (all orders)"] = [(p["x"], p["y"]) for p in fr]
    xlabel = {"flops": "training FLOPs (log2 axis)", "params": "parameters (log2 axis)"}[x]
    ylabel = {"loss": "test token loss (nats, log10 axis)"}.get(y, y)
    return line_plot(series, path, title or f"{y} against {x}", xlabel, ylabel, xlog=True, ylog=True)


def check_orders(orders: list[str]) -> None:
    from genorder.registry import registry

    for o in orders:
        registry("orders").get(o)
    if len(set(orders)) != len(orders):
        raise UserError(f"an order is listed twice: {', '.join(orders)}")
