"""The scaling law of every order (VAR §4.1) as library code: several model sizes per order at the
same tokens per parameter, held-out token loss against parameters and training FLOPs, a power-law
fit per order with the exponent's interval and Pearson r, log-log figures with the compute-optimal
frontier. Resumable: every finished point is one line of OUT/points.jsonl.

    >>> from genorder.experiments.scale import ScaleConfig, plan_scale, run_scale
    >>> config = ScaleConfig(orders=["raster"], depths=[1, 2, 3], out=Path("runs/scale"))
    >>> plan = plan_scale(config)          # the points, their budgets, which are done
    >>> result = run_scale(config, plan=plan)
    >>> result.fits["loss"]["raster"]["params"]["b"]

`ScaleConfig` is what `genorder scale` takes; `resolve_sweep` turns it into the
`genorder.scaling.SweepConfig` every point is fingerprinted with. A field left None comes from the
regime when `regime` names one (cpu, gpu or a TOML path; `regime_set` overrides its keys), else from
the built-in default. Jobs (one per point) go to an `Executor`; `progress(text)` gets one line per
event, in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from genorder.checkpoint import read_meta
from genorder.config import build_config
from genorder.data import class_balanced_labels, load_dataset
from genorder.errors import UserError
from genorder.executors import Executor, LocalExecutor
from genorder.experiments import _bridge
from genorder.flops import train_flops_per_sample
from genorder.hashing import dataset_fingerprint, short, tensors_fingerprint
from genorder.model import BackboneConfig, build_model, count_params
from genorder.parallel import Job
from genorder.registry import registry
from genorder.runs import load_run, run_started, write_json
from genorder.scaling import (
    Plan,
    SweepConfig,
    append_point,
    check_orders,
    compare_exponents,
    done_keys,
    fits_by_order,
    frontier,
    plan_budget,
    plot_scaling,
    point_key,
    read_points,
    test_token_loss,
    train_key,
)
from genorder.trainer import resolve_device

Progress = Callable[[str], None]

# the built-in defaults of the fields a regime may set (what `genorder scale` used before regimes)
DEFAULTS = {"width_per_depth": 64, "batch_size": 64, "lr": 2e-3, "seed": 0, "eval_n": 1000, "tokenizer_steps": 300}


def quiet(text: str) -> None:
    """The default progress callback: says nothing."""


class ScaleConfig(BaseModel):
    """Everything `genorder scale` takes (except where its jobs run: that is the executor)."""

    model_config = ConfigDict(extra="forbid")

    orders: list[str] | None = Field(None, description="default: every registered order")
    depths: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    width_per_depth: int | None = None
    tokens_per_param: float = 20.0
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    eval_n: int | None = None
    accuracy_n: int = 0
    bootstrap: int = 2000
    dataset: str = "fashion-mnist"
    tokenizer_multi: str | None = None
    tokenizer_single: str | None = None
    tokenizer_steps: int | None = None
    device: str = "auto"
    out: Path = Path("runs/scale")
    regime: str | None = None
    regime_set: list[str] = Field(default_factory=list)


def resolve_sweep(config: ScaleConfig) -> tuple[SweepConfig, dict[str, Any] | None, int]:
    """(the sweep's shared config, the resolved regime or None, tokenizer steps): explicit fields
    first, then the regime's values, then `DEFAULTS`."""
    values = {k: getattr(config, k) for k in DEFAULTS}
    extra: dict[str, Any] = {}
    regime = None
    if config.regime is not None:
        from genorder.regime import load_regime

        regime = load_regime(config.regime, config.regime_set)
        from_regime = {"width_per_depth": regime.backbone.width_per_depth or 64, "batch_size": regime.train.batch_size,
                       "lr": regime.lr.default, "seed": regime.train.seeds[0], "eval_n": regime.evaluation.heldout_n,
                       "tokenizer_steps": regime.tokenizer.steps}  # fmt: skip
        values = {k: from_regime[k] if v is None else v for k, v in values.items()}
        extra = {"schedule": regime.train.schedule, "cooldown": regime.train.cooldown,
                 "tokenizer_batch": regime.tokenizer.batch_size, "tokenizer_lr": regime.tokenizer.lr}  # fmt: skip
    elif config.regime_set:
        raise UserError("--set needs --regime (the keys are a regime's)")
    values = {k: DEFAULTS[k] if v is None else v for k, v in values.items()}
    steps = values.pop("tokenizer_steps")
    sweep = build_config(SweepConfig, {
        "orders": config.orders or None, "depths": config.depths, "tokens_per_param": config.tokens_per_param,
        "accuracy_n": config.accuracy_n, **values, **extra,
    }, section="scale")  # fmt: skip
    if steps < 1:
        raise UserError(f"--tokenizer-steps must be >= 1, got {steps}")
    return sweep, (regime.resolved() if regime is not None else None), steps


@dataclass
class ScalePlan:
    """The sweep before training: its points, their keys, and which are in points.jsonl already."""

    config: ScaleConfig
    sweep: SweepConfig
    regime: dict[str, Any] | None
    plans: list[Plan]
    keys: dict[str, str]
    done: set[str]
    context: dict[str, Any]
    stems: dict[str, Path | None]
    dev: torch.device

    def status(self, plan: Plan) -> str:
        return "done" if self.keys[plan.name] in self.done else "to train"


@dataclass
class ScaleResult:
    """Every point of the sweep, the power-law fits per order (loss, and class error where scored),
    the frontier and the pairwise exponent comparisons. `write()` writes scaling.json and the figures."""

    out: Path
    sweep: SweepConfig
    regime: dict[str, Any] | None
    points: list[dict[str, Any]]
    fits: dict[str, dict] = field(default_factory=dict)
    frontier: list[dict[str, Any]] = field(default_factory=list)
    exponents_differ: dict[str, list] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        data = {"config": self.sweep.model_dump(mode="json", exclude_none=True), "points": self.points, "fits": self.fits,
                "frontier": self.frontier, "exponents_differ": self.exponents_differ}  # fmt: skip
        if self.regime is not None:
            data["regime"] = self.regime
        return data

    def write(self, out: Path | None = None) -> None:
        out = out or self.out
        write_json(out / "scaling.json", self.data())
        title = f"test token loss, {self.sweep.tokens_per_param:g} tokens/param"
        plot_scaling(self.points, self.fits["loss"], out / "scaling_flops.png", "flops", "loss", f"{title}: against training FLOPs")
        plot_scaling(self.points, self.fits["loss"], out / "scaling_params.png", "params", "loss", f"{title}: against parameters")


def _class_accuracy(run, dataset_spec: str, n: int, cfg: float, seed: int, device: torch.device) -> dict | None:
    """Class consistency of n class-balanced samples (`genorder.classifier`), or None where that
    module is not installed yet. The one place `scale` calls the classifier."""
    try:
        from genorder.classifier import class_accuracy, load_or_train_classifier
    except ImportError:
        return None
    from genorder.sampling import generate_images

    clf, info = load_or_train_classifier(dataset_spec, device=str(device))
    labels = class_balanced_labels(run.model.num_classes, n)
    images = generate_images(run, labels, _bridge.make_sampler(cfg=cfg), seed=seed, batch_size=100)
    res = class_accuracy(clf, images, labels.to(images.device))
    return {**res, "classifier_test_accuracy": info.get("test_accuracy")}


def scale_point(p: Plan, key: str, rdir: Path, cfg: SweepConfig, dataset: str, tokenizer_stem: str, device: str,
                dev: torch.device, quiet: bool) -> dict:  # fmt: skip
    """Job: train one point (or finish / reuse its run) and score it; returns its points.jsonl record."""
    test_ds = load_dataset(dataset, "test")
    if not (rdir / "model.json").exists() or not read_meta(rdir / "model").get("final"):
        bb = cfg.backbone(p.depth)
        _bridge.train_run(
            p.order, rdir, dataset_spec=dataset, tokenizer_spec=tokenizer_stem, depth=p.depth,
            budget={"steps": p.steps}, backbone_opts={"width": bb["width"], "heads": bb["heads"]},
            train_opts={**cfg.train_opts(), "device": device},
            resume=run_started(rdir), samples_per_class=4, quiet=quiet,
        )  # fmt: skip
    run = load_run(rdir, dev)
    meta = read_meta(rdir / "model")
    held = test_token_loss(run.order, run.tokenizer, run.model, test_ds, cfg.eval_n, cfg.eval_batch, cfg.seed)
    acc = _class_accuracy(run, dataset, cfg.accuracy_n, cfg.cfg, cfg.seed, dev) if cfg.accuracy_n else None
    spent = meta["spent"]
    return {
        "key": key, "order": p.order, "depth": p.depth, "width": p.width, "params": p.params,
        "tokens_per_image": p.tokens_per_image, "steps": spent["steps"], "images": spent["images"],
        "tokens": spent["tokens"], "flops": spent["flops"], "train_seconds": spent["seconds"],
        "loss": held["loss"], "token_acc": held["acc"], "eval_images": held["images"], "eval_tokens": held["tokens"],
        "class_acc": acc, "class_error": (1 - acc["acc"]) if acc else None, "run": str(rdir),
        "device": str(dev),
    }  # fmt: skip


def _tokenizer_shape(spec: str | None, order, dataset, device: torch.device):
    """A checkpoint loaded, or the preset `resolve_tokenizer` would train, built untrained (its
    scales and V are all a plan needs)."""
    from genorder.runs import load_tokenizer
    from genorder.tokenizer_training import configure_for_dataset

    stem = _bridge.tokenizer_checkpoint(spec)
    if stem is not None:
        return load_tokenizer(stem, device)[0]
    name, opts = configure_for_dataset(spec, order.tokenizer_kind, dataset.channels, dataset.image_size)
    return registry("tokenizers").create(name, opts)


def _plans(cfg: SweepConfig, tokenizers: dict[str, Any], num_classes: int) -> list[Plan]:
    plans = []
    for name in cfg.orders:
        order = registry("orders").create(name, {})
        tok = tokenizers[order.tokenizer_kind]
        L = order.layout(tok).length
        for d in cfg.depths:
            bb = BackboneConfig(**cfg.backbone(d))
            model = build_model(order, tok, bb, num_classes)
            params = count_params(model)
            steps, images = plan_budget(cfg, params, L)
            plans.append(Plan(name, d, bb.C, params, L, steps, images, train_flops_per_sample(model) * images))
    return plans


def plan_scale(config: ScaleConfig, train_tokenizers: bool = True) -> ScalePlan:
    """Check the config, find (or, with `train_tokenizers`, train) the tokenizers, and plan every
    point. Nothing under OUT is written. Without `train_tokenizers` no tokenizer is trained: the
    presets' shapes are enough for the plan (`--plan-only`)."""
    cfg, regime, tok_steps = resolve_sweep(config)
    check_orders(cfg.orders)
    if len(set(cfg.depths)) != len(cfg.depths):
        raise UserError(f"--depths lists a depth twice: {','.join(map(str, config.depths))}")
    if config.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    dev = resolve_device(config.device)
    if cfg.accuracy_n:
        try:
            import genorder.classifier  # noqa: F401
        except ImportError:
            raise UserError("--accuracy-n needs genorder.classifier, which this installation lacks; use --accuracy-n 0") from None
    train_ds = load_dataset(config.dataset, "train")
    test_ds = load_dataset(config.dataset, "test")
    if len(test_ds) < 2:
        raise UserError(f"{config.dataset}: the test split holds {len(test_ds)} images; the held-out loss needs more")
    presets = (regime or {}).get("tokenizer", {}).get("presets", {})
    kinds = {registry("orders").create(o, {}).tokenizer_kind: o for o in cfg.orders}
    tokenizers, stems = {}, {}
    for kind, order_name in kinds.items():
        spec = (config.tokenizer_multi if kind == "multi-scale" else config.tokenizer_single) or presets.get(kind)
        order = registry("orders").create(order_name, {})
        if not train_tokenizers:
            tokenizers[kind], stems[kind] = _tokenizer_shape(spec, order, train_ds, dev), None
        else:
            tokenizers[kind], stems[kind] = _bridge.resolve_tokenizer(spec, order, config.dataset, train_ds, dev, tok_steps,
                                                                      train_opts=cfg.tokenizer_train_opts())  # fmt: skip
    context = {
        "dataset": dataset_fingerprint(train_ds), "test": dataset_fingerprint(test_ds),
        "tokenizers": {k: tensors_fingerprint(t.state_dict()) for k, t in sorted(tokenizers.items())},
    }  # fmt: skip
    plans = _plans(cfg, tokenizers, train_ds.num_classes)
    keys = {p.name: point_key(cfg, p, context) for p in plans}
    done = done_keys(read_points(config.out / "points.jsonl"))
    return ScalePlan(config, cfg, regime, plans, keys, done, context, stems, dev)


def run_scale(config: ScaleConfig, executor: Executor | None = None, progress: Progress | None = None,
              plan: ScalePlan | None = None) -> ScaleResult:  # fmt: skip
    """Train and score every point not yet in OUT/points.jsonl (appending each as it finishes), fit
    the power laws over this sweep's points, write scaling.json and the figures, return the result."""
    say = progress or quiet
    plan = plan or plan_scale(config)
    cfg, out = plan.sweep, config.out
    executor = executor or LocalExecutor(1, torch.get_num_threads())
    several = executor.workers > 1
    out.mkdir(parents=True, exist_ok=True)
    setup = {"config": cfg.model_dump(mode="json", exclude_none=True), "dataset": config.dataset, "context": plan.context,
             "tokenizers": {k: str(v) for k, v in plan.stems.items()}}  # fmt: skip
    if plan.regime is not None:
        setup["regime"] = plan.regime
    write_json(out / "scale-config.json", setup)
    order_kind = {o: registry("orders").create(o, {}).tokenizer_kind for o in cfg.orders}
    if cfg.accuracy_n:
        from genorder.classifier import load_or_train_classifier

        say("class-consistency classifier (trained once per dataset content, then cached)")
        load_or_train_classifier(config.dataset, device=str(plan.dev))  # before the workers, which then only read it
    jobs = []
    for i, p in enumerate(plan.plans):
        if plan.keys[p.name] in plan.done:
            say(f"{p.name}: already in points.jsonl, skipping")
            continue
        # one folder per trained model: another budget or tokenizer trains anew, other scoring does not
        rdir = out / "runs" / f"{p.name}-{short(train_key(cfg, p, plan.context), 8)}"
        jobs.append(Job(p.name, scale_point, (p, plan.keys[p.name], rdir, cfg, config.dataset,
                                              str(plan.stems[order_kind[p.order]]), config.device, plan.dev, several),
                        cost=float(p.train_flops) if several else -i))  # in parallel the largest first; else in order  # fmt: skip

    def written(name: str, point: dict) -> None:
        append_point(out / "points.jsonl", point)  # each point as it finishes: the sweep resumes from here
        acc = point["class_acc"]
        say(f"{name}: test loss {point['loss']:.4f} · {point['flops'] / 1e12:.3g} TFLOP"
            + (f" · class acc {acc['acc']:.3f}" if acc else ""))  # fmt: skip

    executor.run(jobs, on_result=written)
    keys = set(plan.keys.values())
    points = [q for q in read_points(out / "points.jsonl") if q.get("key") in keys]
    result = fit(out, cfg, points, config.bootstrap, plan.regime)
    result.write()
    return result


def fit(out: Path, cfg: SweepConfig, points: list[dict], n_boot: int, regime: dict | None = None) -> ScaleResult:
    """The fits of a sweep's points: loss (and class error, where scored) against params and FLOPs."""
    fits = fits_by_order(points, "loss", n_boot, cfg.seed)
    acc_points = [p for p in points if p.get("class_error") is not None]
    fits_err = fits_by_order(acc_points, "class_error", n_boot, cfg.seed) if acc_points else {}
    return ScaleResult(out, cfg, regime, points, {"loss": fits, "class_error": fits_err}, frontier(points),
                       {x: compare_exponents(fits, x) for x in ("params", "flops")})  # fmt: skip
