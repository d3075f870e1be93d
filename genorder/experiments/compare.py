"""Compare orders: train several orders at one depth under one identical, deterministic budget, score
each at several checkpoints along training, and say what each budget bought.

    >>> from genorder.experiments import CompareConfig, run_compare
    >>> cfg = CompareConfig.build(orders=["raster", "maskgit"], dataset="shapes", steps=40, no_fid=True, out="runs/c")
    >>> result = run_compare(cfg, progress=print)
    >>> result.rows[0]["heldout_loss"], result.write()

Per order and seed: one run trained with `train_run` (the same code as `genorder train`), its
weights saved at `points` evenly spaced fractions of the budget; each saved point is then scored:
held-out token loss on a fixed test subset; class accuracy (a classifier trained once on the
dataset, cached by content) on the paired design, the same labels and per-sample seeds for every
order and seed (`evaluation.n` samples, `evaluation.final_n` at the last point; `compare_paired`);
FID / KID / precision-recall (`CheckpointProbe`, `evaluation.fid_n` samples) against the test split,
next to the real-against-real FID at the same n. At the last point `compare_paired` gives each order
its two-level (seeds x samples) and samples-only intervals, per-class accuracy and the
classifier-feature FD / precision / recall against its floor, and each pair of orders its paired
differences with verdicts and minimum detectable differences (comparison.json's "pairwise").

The work is a set of jobs (`compare_jobs`: classifier, FID references, tokenizers, one training job
per order and seed, one scoring job per run) handed to an executor (`genorder.executors`): local
worker processes, one per GPU, or a SLURM cluster. Each job computes the same numbers wherever it
runs, so comparison.json does not depend on the executor. An interrupted comparison continues each
run from its last checkpoint when it is run again with the same config.

The sizes, budgets, evaluation sizes and per-order learning rates come from a regime
(`genorder.regime`, `genorder/regimes/*.toml`); the resolved regime is the last key of
comparison.json.

`CompareResult.write(out)` writes:
  comparison.json          every result (config, tokenizers, classifier, floors, LR sweep, every curve
                           point, the intervals, the pairwise verdicts, the regime): a function of
                           the config and the data only
  comparison_timings.json  everything that depends on the machine's load (wall-clock per point, total)
  comparison.png           the sample grids side by side (seed 0)
  comparison_curves.png    class accuracy and FID against training FLOPs and wall-clock, bands over seeds
  heldout_loss.png         held-out loss against training images, every order and seed
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from genorder.errors import UserError
from genorder.regime import (
    Regime,
    default_regime_name,
    load_regime,
    split_overrides,
    with_overrides,
)

COMPONENT_SECTIONS = ("order", "backbone", "train", "sampler", "tokenizer")


@dataclass(frozen=True)
class Event:
    """What `run_compare` reports as it goes: kind "phase" (a set of jobs starts: `name` is its label,
    `total` its number of jobs), "start" / "done" (one job; `seconds` its wall-clock when done), or
    "message" (`text`: one line, e.g. "trained the tokenizer ...")."""

    kind: Literal["phase", "start", "done", "message"]
    name: str = ""
    seconds: float = 0.0
    total: int = 0
    text: str = ""


Progress = Callable[[Event], None]


class CompareConfig(BaseModel):
    """Everything a comparison depends on, resolved: the regime's values with the caller's options on
    top (`build`). Results depend on it and the data only (not on `workers`/the executor)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    orders: list[str]
    dataset: str = "fashion-mnist"
    regime: Regime
    budget: dict[str, Any]  # steps, images, flops or minutes
    lr: float | None = None  # one peak lr for every order (None: the regime's rate per order)
    tune_lr: bool = False
    tune_fraction: float = 0.5
    tokenizer: list[str] = []  # one spec for every order, or MULTI,SINGLE by order kind
    tokenizer_minutes: float | None = None
    image_size: int | None = None
    extractor: str = "genorder-inception-fid"
    no_fid: bool = False
    cfg: float = 1.5
    top_k: int = 0
    per_class: int = 6
    out: Path = Path("runs/compare")
    workers: int | None = None  # None: one per CPU core up to 8 on a CPU; every GPU on a GPU node
    device: str = "auto"
    sections: dict[str, dict[str, Any]] = {}  # component sections: [order] [backbone] [train] [sampler] [tokenizer]
    fid_cache: Path | None = None
    classifier_cache: Path | None = None
    force: bool = False  # run a CPU comparison estimated over an hour of training
    estimate: bool = True  # time two steps of each order first and print the estimated duration

    # -- the regime's values, as the experiment uses them --------------------------------------
    @property
    def depth(self) -> int:
        return self.regime.backbone.depth

    @property
    def batch_size(self) -> int:
        return self.regime.train.batch_size

    @property
    def seeds(self) -> list[int]:
        return list(self.regime.train.seeds)

    @property
    def schedule(self) -> str:
        return self.regime.train.schedule

    @property
    def cooldown(self) -> float:
        return self.regime.train.cooldown

    @property
    def threads(self) -> int | None:
        return self.regime.train.threads or None

    @property
    def points(self) -> int:
        return self.regime.evaluation.points

    @property
    def n(self) -> int:
        return self.regime.evaluation.n

    @property
    def final_n(self) -> int:
        return self.regime.evaluation.last_n

    @property
    def fid_n(self) -> int:
        return self.regime.evaluation.inception_n

    @property
    def ref_n(self) -> int:
        return self.regime.evaluation.ref_n

    @property
    def fid_points(self) -> str:
        return self.regime.evaluation.fid_points

    @property
    def lrs(self) -> list[float]:
        return list(self.regime.lr.tune)

    @property
    def load_dependent(self) -> bool:
        return "minutes" in self.budget or self.tokenizer_minutes is not None

    @classmethod
    def build(
        cls,
        regime: str | Path | Regime | None = None,
        set_: list[str] | None = None,
        *,
        orders: list[str] | None = None,
        depth: int | None = None,
        steps: int | None = None,
        images: int | None = None,
        flops: float | None = None,
        minutes: float | None = None,
        batch_size: int | None = None,
        lrs: list[float] | None = None,
        tokenizer_steps: int | None = None,
        seeds: list[int] | None = None,
        points: int | None = None,
        schedule: str | None = None,
        n: int | None = None,
        final_n: int | None = None,
        fid_n: int | None = None,
        ref_n: int | None = None,
        fid_points: str | None = None,
        threads: int | None = None,
        device: str = "auto",
        **options: Any,
    ) -> CompareConfig:
        """The config of a comparison: `regime` (a name, a TOML path, a `Regime`; None: by device),
        then `set_` ("key.path=value": a key the regime defines sets the regime, any other key
        under [order] [backbone] [train] [sampler] [tokenizer] goes to the components: see
        `genorder.regime.split_overrides`), then the keyword options (the CLI's flags) on top.
        `options` are the remaining fields of `CompareConfig`."""
        from genorder.registry import builtin_names, registry
        from genorder.trainer import resolve_device

        names = list(orders) if orders is not None else builtin_names("orders")
        if not names:
            raise UserError("--orders is empty")
        for nm in names:
            registry("orders").get(nm)
        regime_items, component_items = split_overrides(set_ or [])
        flags = {"backbone.depth": depth, "train.batch_size": batch_size, "train.schedule": schedule,
                 "train.seeds": seeds, "train.threads": threads, "tokenizer.steps": tokenizer_steps,
                 "evaluation.points": points, "evaluation.n": n, "evaluation.ref_n": ref_n,
                 "evaluation.final_n": final_n, "evaluation.fid_n": fid_n,
                 "evaluation.fid_points": fid_points, "lr.tune": lrs}  # fmt: skip
        budget = {k: v for k, v in {"steps": steps, "images": images, "flops": flops, "minutes": minutes}.items() if v is not None}
        if list(budget) == ["steps"]:
            flags["train.steps"] = steps
        if threads is not None and threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        if schedule is not None and schedule not in ("wsd", "lin0"):
            raise UserError(f"--schedule must be wsd or lin0, got {schedule!r}")
        if fid_points is not None and fid_points not in ("all", "last"):
            raise UserError(f"--fid-points must be all or last, got {fid_points!r}")
        if seeds is not None and not seeds:
            raise UserError("need at least one seed")
        if lrs is not None and (not lrs or any(v <= 0 for v in lrs)):
            raise UserError("--lrs needs positive learning rates")
        for key, value in [("evaluation.points", points), ("evaluation.n", n), ("evaluation.ref_n", ref_n),
                           ("evaluation.final_n", final_n), ("evaluation.fid_n", fid_n)]:
            if value is not None and value < (1 if key == "evaluation.points" else 2):
                raise UserError("need at least one seed, --points >= 1, --n >= 2, --final-n >= 2, --fid-n >= 2, --ref-n >= 2 "
                                "and 0 < --tune-fraction <= 1")
        if isinstance(regime, Regime):
            reg = regime
            if regime_items:
                raise UserError("--set on a regime key needs the regime by name or path, not a Regime object")
        else:
            reg = load_regime(regime or default_regime_name(resolve_device(device).type), regime_items)
        overrides = [f"{k}={_toml(v)}" for k, v in flags.items() if v is not None]
        if overrides:
            reg = with_overrides(reg, overrides)
        from genorder.config import parse_overrides
        from genorder.regime import nest_overrides

        sections = nest_overrides(parse_overrides(component_items))
        unknown = set(sections) - set(COMPONENT_SECTIONS)
        if unknown:
            raise UserError(f"--set: unknown section(s) {sorted(unknown)}; use {', '.join(COMPONENT_SECTIONS)} or a regime key")
        width = reg.width(reg.backbone.depth)
        if width and "width" not in sections.get("backbone", {}):
            sections.setdefault("backbone", {})["width"] = width  # the regime's width
        tune_fraction = options.get("tune_fraction", 0.5)
        if not 0 < tune_fraction <= 1:
            raise UserError("need at least one seed, --points >= 1, --n >= 2, --ref-n >= 2 and 0 < --tune-fraction <= 1")
        workers = options.get("workers")
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        return cls(orders=names, regime=reg, budget=budget or {"steps": reg.train.steps}, sections=sections,
                   device=device, **options)  # fmt: skip


def _toml(value: Any) -> str:
    """A Python value as a TOML value (for regime overrides)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@dataclass
class CompareResult:
    """What a comparison found. `rows`: one per order (the final point averaged over seeds, the plateau
    test, the goals, the paired intervals); `runs`: every order's runs (one per seed, every curve
    point); `floor`: the FID floor (None without FID); `paired`: the classifier-FD floor and the
    pairwise comparisons (`compare_paired.final_statistics`); `tokenizers`, `classifier`, `lr` (the rate each order trained at),
    `lr_sweep`; `timings`: wall-clock (load-dependent, kept apart). `to_json()` is comparison.json."""

    config: CompareConfig
    rows: list[dict]
    runs: dict[str, list[dict]]
    floor: dict | None
    tokenizers: dict[str, dict]
    classifier: dict
    lr: dict[str, float]
    lr_sweep: dict[str, Any] | None
    heldout_images: int
    device: str
    threads: int
    test_split: dict | None = None  # where the test split came from (the dataset's own, or held out)
    paired: dict[str, Any] = field(default_factory=dict)  # compare_paired.final_statistics: floor, pairwise, scope
    timings: dict[str, list[dict]] = field(default_factory=dict)
    sweep_timings: dict[str, Any] = field(default_factory=dict)
    stats_seconds: float = 0.0  # the paired statistics in the main process
    total_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The document of comparison.json: every key as `genorder compare` wrote it before the
        experiments became library code (issue 21), then the resolved regime under "regime"."""
        c = self.config
        return {
            "orders": c.orders, "dataset": c.dataset, "depth": c.depth, "budget": c.budget, "load_dependent_budget": c.load_dependent,
            "batch_size": c.batch_size, "lr": self.lr, "schedule": c.schedule, "cooldown": c.cooldown if c.schedule == "wsd" else None, "seeds": c.seeds, "points": c.points, "device": self.device,
            "threads": self.threads, "sampler": _sampler_opts(c), "sections": _model_sections(c), "image_size": c.image_size,
            "evaluation": {"n": c.n, "class_balanced": True, "ref_n": c.ref_n, "extractor": None if c.no_fid else c.extractor,
                           "fid_points": None if c.no_fid else c.fid_points,
                           "heldout_images": self.heldout_images, "heldout_split": "class-balanced, seeded (genorder.subsets.disjoint_subsets)",
                           "test_split": self.test_split,
                           "final_n": c.final_n, "fid_n": c.fid_n, "boot_reps": c.regime.evaluation.boot_reps,
                           "design": _design(c)},
            "classifier": {"test_accuracy": self.classifier["test_accuracy"], "dataset_hash": self.classifier["dataset_hash"]},
            "fid_floor": self.floor,
            "tokenizers": self.tokenizers,
            "tokenizer_budget": {"steps": c.regime.tokenizer.steps, "minutes": c.tokenizer_minutes, **_tok_train(c)},
            "lr_sweep": self.lr_sweep or None,
            "rows": self.rows,
            "classifier_fd_floor": self.paired.get("classifier_fd_floor"),
            "pairwise": self.paired.get("pairwise", []),
            "pairwise_scope": {"verdict_scope": self.paired.get("verdict_scope"), "note": self.paired.get("note")},
            "runs": self.runs,
            "regime": c.regime.resolved(),
        }  # fmt: skip

    def timings_json(self) -> dict[str, Any]:
        return {
            "note": "wall-clock seconds: they depend on the machine and its load, so they live apart from comparison.json",
            "total_seconds": self.total_seconds, "runs": self.timings, "lr_sweep": self.sweep_timings,
            "paired_statistics_seconds": self.stats_seconds,
            "classifier_reused": self.classifier["reused"], "classifier_path": self.classifier["path"],  # machine-specific
        }  # fmt: skip

    def write(self, out: str | Path | None = None) -> list[Path]:
        """Write comparison.json, comparison_timings.json and the three PNGs to `out` (default: the
        config's out, where the runs are); returns their paths."""
        from genorder.images import side_by_side
        from genorder.plot import line_plot
        from genorder.runs import write_json

        c = self.config
        out = Path(out) if out is not None else c.out
        out.mkdir(parents=True, exist_ok=True)
        names = c.orders
        png = side_by_side([str(c.out / nm / f"seed{c.seeds[0]}" / "samples.png") for nm in names], names, out / "comparison.png")
        curves = _curves_png(names, self.runs, self.timings, self.floor, out / "comparison_curves.png", c.depth, c.dataset, c.fid_n)
        loss_png = line_plot(
            {f"{nm} s{r['seed']}": [(p["images"], p["heldout_loss"]) for p in r["points"]] for nm in names for r in self.runs[nm]},
            out / "heldout_loss.png", f"held-out token loss ({self.heldout_images} test images), depth {c.depth}, {c.dataset}",
            "training images seen", "cross-entropy per token",
        )  # fmt: skip
        write_json(out / "comparison.json", self.to_json())
        write_json(out / "comparison_timings.json", self.timings_json())
        return [Path(png), Path(curves), Path(loss_png), out / "comparison.json", out / "comparison_timings.json"]


def _design(c: CompareConfig) -> dict:
    from genorder.experiments import compare_paired as cp

    return {"labels": "i mod K", "sample_seeds": f"genorder.paired.sample_seed({cp.DESIGN_SEED}, i)", "seed": cp.DESIGN_SEED,
            "block": cp.BLOCK, "same_for": "every order and seed"}  # fmt: skip


def _model_sections(c: CompareConfig) -> dict:
    """The component sections the runs are built from ([tokenizer] configures the tokenizer jobs)."""
    return {k: v for k, v in c.sections.items() if k != "tokenizer"}


def _sampler_opts(c: CompareConfig) -> dict:
    return {"cfg": c.cfg, "top_k": c.top_k}


def _tok_train(c: CompareConfig) -> dict:
    return {"lr": c.regime.tokenizer.lr, "batch_size": c.regime.tokenizer.batch_size}


def _tokenizer_for(order, specs: list[str]) -> str | None:
    """One spec for every order, or MULTI,SINGLE (by the order's tokenizer kind); None: the preset
    declared for the order's kind and the dataset's shape."""
    if not specs:
        return None
    if len(specs) == 1:
        return specs[0]
    return specs[0] if order.tokenizer_kind == "multi-scale" else specs[1]


def planned_tokenizer(spec: str | None, order, ds, tok_opts: dict, device: str | None = None):
    """The tokenizer `spec` (or the order's default preset for the dataset on `device`) would be: a
    checkpoint's, or the preset's untrained weights (the shapes are what the plan needs)."""
    from genorder.registry import registry
    from genorder.training_run import is_checkpoint_spec, tokenizer_stem

    if spec and is_checkpoint_spec(spec):
        from genorder.runs import load_tokenizer

        return load_tokenizer(tokenizer_stem(spec), torch.device("cpu"))[0]
    from genorder.tokenizer_training import configure_for_dataset

    name, opts = configure_for_dataset(spec, order.tokenizer_kind, ds.channels, ds.image_size, dict(tok_opts), device=device)
    return registry("tokenizers").create(name, opts)


def _tokens_per_image(spec: str | None, order, ds, tok_opts: dict, device: str | None = None) -> float:
    """Tokens per image the tokenizer `spec` (or the order's default preset) would give: a scheduling
    estimate only (the longest runs start first); 100 when it cannot be told yet (the tokenizer job
    then reports the problem)."""
    try:
        scales = planned_tokenizer(spec, order, ds, tok_opts, device).scales
    except Exception:  # noqa: BLE001 - an estimate; the tokenizer job raises the real error
        return 100.0
    return float(sum(s * s for s in scales))


def _band(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, None
    return sum(vals) / len(vals), min(vals), max(vals)


def default_executor(config: CompareConfig, device: torch.device):
    """Every GPU of the node (one worker each) on a GPU; else local worker processes, one per CPU
    core up to 8 (or `config.workers`)."""
    from genorder.executors import GpuExecutor, LocalExecutor

    if device.type == "cuda" and device.index is None and config.workers is None and torch.cuda.device_count() > 1:
        return GpuExecutor(devices=list(range(torch.cuda.device_count())), threads=config.threads)
    workers = config.workers if config.workers is not None else (1 if device.type == "cuda" else max(1, min(os.cpu_count() or 1, 8)))
    return LocalExecutor(workers=workers, threads=config.threads)


def run_compare(config: CompareConfig, executor=None, progress: Progress | None = None) -> CompareResult:
    """Run the comparison `config` describes on `executor` (default: `default_executor`), reporting
    to `progress`; returns the result (call `.write()` for the files)."""
    from genorder.classifier import ClassifierConfig, cache_key
    from genorder.data import class_balanced_labels, load_dataset
    from genorder.experiments import compare_jobs as cj
    from genorder.hashing import config_fingerprint, dataset_fingerprint
    from genorder.parallel import Job, Result
    from genorder.registry import registry
    from genorder.runs import load_run
    from genorder.sampling import generate_images
    from genorder.trainer import resolve_device
    from genorder.training_run import make_sampler

    t_start = time.perf_counter()
    say = progress or (lambda event: None)

    def message(text: str) -> None:
        say(Event("message", text=text))

    c = config
    names, out, dataset = c.orders, c.out, c.dataset
    dev = resolve_device(c.device)
    if c.threads is not None:
        torch.set_num_threads(c.threads)
    tok_opts = dict(c.sections.get("tokenizer", {}))
    sections = _model_sections(c)
    budget, depth, batch_size, seed_list = c.budget, c.depth, c.batch_size, c.seeds
    n_points, n, ref, fid_points, schedule, cooldown = c.points, c.n, c.ref_n, c.fid_points, c.schedule, c.cooldown
    tok_steps, tok_train = c.regime.tokenizer.steps, _tok_train(c)
    sampler_opts = _sampler_opts(c)
    make_sampler(sections, **sampler_opts)  # validates the sampler options before anything runs
    executor = executor or default_executor(c, dev)
    if not c.no_fid:
        from genorder import metrics

        metrics.require_torch_fidelity()

    train_ds = load_dataset(dataset, "train", image_size=c.image_size)
    test_ds = load_dataset(dataset, "test", image_size=train_ds.image_size, channels=train_ds.channels)
    held = min(c.regime.evaluation.heldout_n, len(test_ds) // 2) if len(test_ds) >= 4 else len(test_ds)
    # held-out loss: reported on one seeded class-balanced subset of `held` test images, the LR
    # sweep's on another (disjoint when possible: compare_jobs.heldout_subset)
    split = getattr(test_ds, "split_info", None) or {}
    if split.get("source") == "held out":
        message(f"held-out split: {split['test']} images ({100 * split['holdout']:g}% of each class, seed {split['seed']}) "
                f"kept out of training; {split['train']} train images")  # fmt: skip
    elif split.get("source") == "training images":
        message("note: the dataset has no test split and none is held out (holdout 0): held-out loss, classifier "
                "and FID reference are measured on training images")  # fmt: skip
    describe = getattr(executor, "describe", lambda: f"{executor.workers} workers")()
    message(f"compare {', '.join(names)} · depth {depth} · budget {budget} per order and seed"
            f"{' (wall-clock: load-dependent)' if c.load_dependent else ''} · seeds {seed_list} · {n_points} points · "
            f"device {dev} · {describe} · regime {c.regime.name}")  # fmt: skip

    if len(seed_list) * c.final_n > len(train_ds):  # the classifier FD's floor: that many train images
        raise UserError(f"the classifier FD pools {len(seed_list)} seeds x evaluation.final_n = {c.final_n} samples and its floor "
                        f"needs as many train images; the split has {len(train_ds)}: lower --final-n")  # fmt: skip

    # 1. the jobs: classifier, FD references and tokenizers first, then one training job per order
    #    and seed, then one scoring job per run (results do not depend on the executor)
    from genorder import metrics as _metrics

    clf_root = str(c.classifier_cache or Path(c.fid_cache or _metrics.default_cache_dir()) / "classifiers")
    dev_s = str(dev)
    order_opts = sections.get("order", {})
    order_objs = {nm: registry("orders").create(nm, order_opts) for nm in names}
    order_tok: dict[str, str] = {}
    run_cost: dict[str, float] = {}  # tokens per image of each order's tokenizer: the longest runs start first
    pre: list = [Job("classifier", cj.classifier_job, (dataset, dev_s, clf_root, c.image_size), cost=150.0)]
    if not c.no_fid:
        pre.append(Job("fid-reference", cj.fid_reference_job, (dataset, c.fid_n, ref, c.extractor, dev_s, str(c.fid_cache) if c.fid_cache else None,
                                                                c.image_size), cost=100.0))  # fmt: skip
    for nm in names:
        spec = _tokenizer_for(order_objs[nm], c.tokenizer) or c.regime.tokenizer.presets.get(order_objs[nm].tokenizer_kind)
        tok_key = spec or f"default {order_objs[nm].tokenizer_kind}"
        if f"tokenizer:{tok_key}" not in {j.name for j in pre}:
            pre.append(Job(f"tokenizer:{tok_key}", cj.tokenizer_job, (spec, nm, order_opts, dataset, c.image_size, dev_s, tok_steps,
                                                                      c.tokenizer_minutes, tok_train, tok_opts), cost=200.0))  # fmt: skip
        order_tok[nm] = tok_key
        run_cost[nm] = _tokens_per_image(spec, order_objs[nm], train_ds, tok_opts, dev.type)
    clf_hash = config_fingerprint({"train": dataset_fingerprint(train_ds), "test": dataset_fingerprint(test_ds)})
    threads_now = torch.get_num_threads()
    base_key = {"dataset": dataset_fingerprint(train_ds), "depth": depth, "batch_size": batch_size, "sections": sections, "schedule": schedule,
                "cooldown": cooldown, "sampler": sampler_opts, "threads": threads_now, "image_size": c.image_size}  # fmt: skip
    score_key = {"n": n, "final_n": c.final_n, "fid_n": c.fid_n, "design": _design(c), "extractor": None if c.no_fid else c.extractor, "fid_points": fid_points, "ref_n": ref,
                 "classifier": cache_key(clf_hash, ClassifierConfig()), "heldout_n": held}  # fmt: skip
    common = {"dataset": dataset, "depth": depth, "batch_size": batch_size, "sections": sections, "sampler_opts": sampler_opts, "schedule": schedule, "cooldown": cooldown,
              "per_class": c.per_class, "image_size": c.image_size, "device": dev_s, "heldout_n": held, "n": n, "ref_n": ref,
              "final_n": c.final_n, "fid_n": c.fid_n,
              "extractor": None if c.no_fid else c.extractor, "fid_points": fid_points, "score_key": score_key,
              "fid_cache": str(c.fid_cache) if c.fid_cache else None, "classifier_cache": clf_root}  # fmt: skip
    pre.append(Job("classifier-floor", cj.classifier_floor_job, (common, len(seed_list) * c.final_n), deps=("classifier",), cost=50.0))

    if c.estimate and not c.load_dependent:
        from genorder.experiments.compare_estimate import check_compare, estimate_compare

        planned = {}
        for nm in names:
            spec = _tokenizer_for(order_objs[nm], c.tokenizer) or c.regime.tokenizer.presets.get(order_objs[nm].tokenizer_kind)
            planned[nm] = planned_tokenizer(spec, order_objs[nm], train_ds, tok_opts, dev.type)
        with torch.random.fork_rng(devices=[]):  # the estimate leaves this process's RNG as it was
            est = estimate_compare(orders=order_objs, tokenizers=planned, dataset=train_ds, sections=sections, depth=depth,
                                   batch_size=batch_size, budget=budget, points=n_points, schedule=schedule,
                                   cooldown=cooldown, seeds=len(seed_list), workers=getattr(executor, "workers", 1), device=dev)  # fmt: skip
        message(est.line() + (" (the LR sweep comes on top)" if c.tune_lr else ""))
        check_compare(est, c.force)

    def run_phase(jobs: list, label: str) -> dict:
        say(Event("phase", name=f"{label} ({describe})", total=len(jobs)))
        return executor.run(jobs, on_event=lambda kind, name, seconds: say(Event(kind, name=name, seconds=seconds)))

    pre_done: dict[str, Any] = {}  # results of the jobs in `pre`, once they have run

    def announce(done: dict) -> None:
        """Report what the first jobs found or built: the classifier, the floor, each tokenizer."""
        clf = done["classifier"]
        message(f"classifier {clf['path']} ({'cached' if clf['reused'] else 'trained'}): {100 * clf['test_accuracy']:.1f}% on the test split")
        if done.get("fid-reference"):
            fl = done["fid-reference"]
            message(f"FID floor (real train vs real test) at n = {c.fid_n}: {fl['fid_floor']:.2f} (reference: {fl['ref_n']} test images)")
        for tok_key in dict.fromkeys(order_tok.values()):
            t = done[f"tokenizer:{tok_key}"]
            psnr = "?" if t["psnr"] is None else f"{t['psnr']:.2f}"
            message(f"{'using the cached' if t['reused'] else 'trained the'} tokenizer {t['stem']} for {tok_key} "
                    f"({t['steps']} steps, test PSNR {psnr} dB)")  # fmt: skip

    def run_jobs_for(runs: list[tuple[str, int, float, dict, Path, int]], label: str, score: bool) -> dict:
        """runs: (order, seed, lr, budget, run dir, points). One training job each, after its
        tokenizer and, with `score`, one scoring job after it, the classifier and the FID references.
        The first call also runs the jobs of `pre` in the same graph: training starts as soon as its
        tokenizer is ready, while the classifier and the references are still being built."""
        first = not pre_done
        jobs = list(pre) if first else []

        def dep(name: str):
            return Result(name) if first else pre_done[name]

        for nm, seed, lr_, bud, run_dir, pts in runs:
            tok_job = f"tokenizer:{order_tok[nm]}"
            key_base = {**base_key, "order": nm, "seed": seed, "lr": lr_, "budget": bud, "points": pts}
            spec = {**common, "name": nm, "seed": seed, "lr": lr_, "budget": bud, "run_dir": str(run_dir),
                    "key_base": key_base, "tokenizer": dep(tok_job), "points": pts}  # fmt: skip
            name = f"train:{nm}:{seed}:{lr_:g}"
            jobs.append(Job(name, cj.train_job, (spec,), deps=(tok_job,) if first else (), cost=run_cost[nm]))
            if score:
                deps = (name, "classifier", *(("fid-reference",) if not c.no_fid else ())) if first else (name,)
                jobs.append(Job(f"score:{nm}:{seed}", cj.score_job, (spec, Result(name), dep("classifier")), deps=deps, cost=1.0))
        if score:  # per order, once its seeds are scored: the pooled classifier FD and the FD's bootstrap
            for nm in dict.fromkeys(r[0] for r in runs):
                mine = [r for r in runs if r[0] == nm]
                scores = tuple(f"score:{nm}:{r[1]}" for r in mine)
                jobs.append(Job(f"paired:{nm}", cj.order_stats_job, (common, [str(r[4]) for r in mine], [Result(j) for j in scores],
                                                                     c.regime.evaluation.boot_reps), deps=scores, cost=1.0))  # fmt: skip
        done = run_phase(jobs, label)
        if first:
            pre_done.update({j.name: done[j.name] for j in pre})
            announce(pre_done)
        return done

    # 2. the learning rates: one for all (config.lr), the LR sweep, or the regime's rate per order
    sweep: dict[str, Any] = {}
    sweep_timings: dict[str, Any] = {}
    lr_by_order: dict[str, float] = {}
    for nm in names:
        rate, where = c.regime.lr_for(nm)
        lr_by_order[nm] = c.lr or rate
        if c.lr is None and not c.tune_lr and where == "default":
            message(f"note: regime {c.regime.name} has no learning rate for {nm}: it trains at the regime's default "
                    f"{rate:g}; --tune-lr finds its own (or --set lr.orders.{nm}=RATE)")  # fmt: skip
    if c.tune_lr:
        lr_list = c.lrs
        tune_budget = {k: (type(v)(v * c.tune_fraction) if k != "steps" else max(1, round(v * c.tune_fraction))) for k, v in budget.items()}
        runs = [(nm, seed_list[0], lr_, tune_budget, out / "tune" / f"{nm}-lr{lr_:g}", 0) for nm in names for lr_ in lr_list]
        got = run_jobs_for(runs, "LR sweep", score=False)
        for nm in names:
            scores = []
            for lr_ in lr_list:
                res = got[f"train:{nm}:{seed_list[0]}:{lr_:g}"]
                scores.append({"lr": lr_, "heldout_loss": res["result"]["heldout_loss"], "steps": res["result"]["steps"]})
                sweep_timings[f"{nm}-lr{lr_:g}"] = res["timings"]
                message(f"LR sweep {nm}: lr {lr_:g} -> held-out loss {scores[-1]['heldout_loss']:.4f}"
                        f"{' (finished run found, reused)' if res['reused'] else ''}")  # fmt: skip
            best = min(scores, key=lambda r: r["heldout_loss"])
            sweep[nm] = {"tried": scores, "best_lr": best["lr"], "budget": tune_budget}
            lr_by_order[nm] = best["lr"]

    # 3. the main runs, saved and scored at `points` fractions of the budget
    runs = [(nm, seed, lr_by_order[nm], budget, out / nm / f"seed{seed}", n_points) for nm in names for seed in seed_list]
    got = run_jobs_for(runs, "tokenizers, classifier, FID references, then training and scoring every order and seed"
                       if not pre_done else "training and scoring every order and seed", score=True)  # fmt: skip
    clf_info, floor = pre_done["classifier"], pre_done.get("fid-reference")
    tokenizers = {k: {kk: vv for kk, vv in pre_done[f"tokenizer:{k}"].items() if kk != "reused"}
                  for k in dict.fromkeys(order_tok.values())}  # fmt: skip
    results: dict[str, list[dict]] = {}
    timings: dict[str, list[dict]] = {}
    for nm, seed, lr_, _, run_dir, _ in runs:
        tr, sc = got[f"train:{nm}:{seed}:{lr_:g}"], got[f"score:{nm}:{seed}"]
        if tr["reused"]:
            message(f"{nm} seed {seed}: finished run found in {run_dir}, reusing it")
        res = {k: v for k, v in tr["result"].items() if k != "saved_points"}
        res["points"] = sc["points"]
        tim = {"train_seconds": tr["timings"]["train_seconds"], "branch_seconds": tr["timings"].get("branch_seconds", 0.0),
               "points": [{**a, **b} for a, b in zip(tr["timings"]["points"], sc["timings"])]}  # fmt: skip
        for p in sc["points"]:
            ca = p["class_acc"]
            fid = f" · FID {p['fid']:.1f}" if "fid" in p else ""
            message(f"  {nm} seed {seed} step {p['step']}: held-out loss {p['heldout_loss']:.4f} · class acc "
                    f"{100 * ca['acc']:.1f}% [{100 * ca['lo']:.1f}, {100 * ca['hi']:.1f}]{fid}")  # fmt: skip
        results.setdefault(nm, []).append(res)
        timings.setdefault(nm, []).append(tim)

    # 4. the paired statistics at the last point: per order (two-level and samples-only intervals,
    #    per-class accuracy, classifier FD against the floor) and per pair of orders
    from genorder.experiments import compare_paired as cp

    t_stats = time.perf_counter()
    last: dict[str, list[tuple[Path, int]]] = {nm: [] for nm in names}  # (run dir, last step) per seed
    for nm, _, _, _, run_dir, _ in runs:
        last[nm].append((run_dir, results[nm][len(last[nm])]["points"][-1]["step"]))
    labels_N, correct, _ = cp.load_correct(names, last)
    paired = cp.final_statistics(names, labels_N, correct, {nm: got[f"paired:{nm}"] for nm in names}, pre_done["classifier-floor"],
                                 num_classes=train_ds.num_classes)  # fmt: skip
    for nm in names:
        o = paired["orders"][nm]
        ca, fd = o["class_acc"], o["classifier_fd"]
        message(f"{nm}: class acc {100 * ca['seeds']['estimate']:.1f}% [seeds x samples {100 * ca['seeds']['lo']:.1f}, "
                f"{100 * ca['seeds']['hi']:.1f}; samples only {100 * ca['samples']['lo']:.1f}, {100 * ca['samples']['hi']:.1f}; "
                f"{ca['dominant']} dominate] · classifier FD {fd['fd']:.3f} at n = {fd['n']} "
                f"(floor {paired['classifier_fd_floor']['fd']:.3f})")  # fmt: skip
    stats_seconds = time.perf_counter() - t_stats

    # 5. sampling speed (seed 0 of each order; load-dependent)
    for nm in names:
        r = load_run(out / nm / f"seed{seed_list[0]}", dev)
        labels = class_balanced_labels(r.model.num_classes, 2 * r.model.num_classes)
        t0 = time.perf_counter()
        generate_images(r, labels, make_sampler(sections, **sampler_opts), seed=0, batch_size=len(labels))
        timings[nm][0]["sample_ms_per_image"] = 1000 * (time.perf_counter() - t0) / len(labels)
        results[nm][0]["gen_steps"] = r.order.num_steps(r.order.layout(r.tokenizer))

    return CompareResult(
        config=c, rows=summarise(names, results, floor, paired), runs=results, paired=paired, floor=floor, tokenizers=tokenizers,
        classifier=clf_info, lr=lr_by_order, lr_sweep=sweep or None, heldout_images=held, device=dev.type, test_split=split or None,
        threads=threads_now, timings=timings, sweep_timings=sweep_timings, stats_seconds=stats_seconds,
        total_seconds=time.perf_counter() - t_start,
    )  # fmt: skip


def summarise(names: list[str], results: dict[str, list[dict]], floor: dict | None, paired: dict | None = None) -> list[dict]:
    """One row per order: the final point averaged over seeds, the plateau test, the goals, and
    (with `paired`, `compare_paired.final_statistics`) the class accuracy's two-level and
    samples-only intervals, the per-class accuracy and the classifier-feature FD.

    The plateau test runs on the order's held-out loss curve, the mean over seeds at each point (the
    line the bands of heldout_loss.png are drawn around); each seed's own value is kept beside it."""
    from genorder.heldout import plateau

    rows = []
    for nm in names:
        runs = results[nm]
        finals = [r["points"][-1] for r in runs]
        flat = [plateau([(p["images"], p["heldout_loss"]) for p in r["points"]]) for r in runs]
        curve = [(pts[0]["images"], sum(p["heldout_loss"] for p in pts) / len(pts)) for pts in zip(*(r["points"] for r in runs))]
        order_flat = plateau(curve)
        acc = _band([p["class_acc"]["acc"] for p in finals])
        row = {
            "order": nm, "params": runs[0]["params"], "gen_steps": runs[0].get("gen_steps"), "lr": runs[0]["lr"],
            "steps": runs[0]["steps"], "images": runs[0]["images"], "train_flops": runs[0]["train_flops"],
            "heldout_loss": _band([p["heldout_loss"] for p in finals])[0],
            "heldout_loss_per_seed": [p["heldout_loss"] for p in finals],
            "last_20pct_improvement": order_flat["improvement"],
            "last_20pct_improvement_per_seed": [f["improvement"] for f in flat],
            "class_acc": acc[0], "class_acc_per_seed": [p["class_acc"] for p in finals],
        }  # fmt: skip
        if paired is not None:
            o = paired["orders"][nm]
            row.update(class_acc_interval=o["class_acc"], per_class_acc=o["per_class_acc"], classifier_fd=o["classifier_fd"])
        row["flattened"] = row["last_20pct_improvement"] is not None and row["last_20pct_improvement"] < 0.02
        row["goal_class_acc_70"] = acc[0] is not None and acc[0] >= 0.70
        if "fid" in finals[0]:
            row.update(fid=_band([p["fid"] for p in finals])[0], fid_per_seed=[p["fid"] for p in finals],
                       kid_mean=_band([p["kid_mean"] for p in finals])[0],
                       precision=_band([p["precision"] for p in finals])[0], recall=_band([p["recall"] for p in finals])[0])  # fmt: skip
            if floor:
                row["fid_over_floor"] = row["fid"] / floor["fid_floor"]
                row["goal_fid_3x_floor"] = row["fid_over_floor"] <= 3.0
        rows.append(row)
    return rows


def _curves_png(names, results, timings, floor, path: Path, depth: int, dataset: str, n: int) -> Path:
    from genorder.plot import band_panels

    def bands(metric, xkey: str, timed: bool) -> dict:
        series = {}
        for nm in names:
            runs, tims = results[nm], timings[nm]
            k = min(len(r["points"]) for r in runs)
            pts = []
            for i in range(k):
                if timed:
                    x = sum(t["points"][i]["train_seconds"] for t in tims) / len(tims)
                else:
                    x = runs[0]["points"][i][xkey] / 1e12
                m, lo, hi = _band([metric(r["points"][i]) for r in runs])
                if m is not None:
                    pts.append((x, m, lo, hi))
            series[nm] = pts
        return series

    acc = lambda p: 100 * p["class_acc"]["acc"]  # noqa: E731
    panels = [
        {"title": "class accuracy vs training compute", "xlabel": "training TFLOP", "ylabel": "class acc %", "series": bands(acc, "train_flops", False)},
        {"title": "class accuracy vs wall-clock (load-dependent)", "xlabel": "training seconds", "ylabel": "class acc %", "series": bands(acc, "", True)},
    ]  # fmt: skip
    if "fid" in results[names[0]][0]["points"][-1]:
        fid = lambda p: p.get("fid")  # noqa: E731
        hline = (floor["fid_floor"], f"real vs real at n={n}") if floor else None
        panels += [
            {"title": "FID vs training compute", "xlabel": "training TFLOP", "ylabel": "FID", "series": bands(fid, "train_flops", False), "hline": hline},
            {"title": "FID vs wall-clock (load-dependent)", "xlabel": "training seconds", "ylabel": "FID", "series": bands(fid, "", True), "hline": hline},
        ]  # fmt: skip
    seeds = len(results[names[0]])
    return band_panels(panels, path, f"{dataset}, depth {depth}: mean over {seeds} seeds, band = min..max")
