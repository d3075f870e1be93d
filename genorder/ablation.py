"""The VAR ablation table (TABLES.md §1.1) under one budget: row definitions, presets, aggregation
over seeds and the markdown/JSON table. `genorder.experiments.ablate` runs the rows (`genorder ablate`).

Every trained row goes through the same `train_run` with the same data, tokenizer family, budget
(images seen), optimizer settings and seed; rows differ only in the options listed in `ROWS`:

| # | row                              | order      | tokens      | AdaLN | qk-norm | depth  | top-k | CFG |
|---|----------------------------------|------------|-------------|-------|---------|--------|-------|-----|
| 1 | AR (raster, plain transformer)   | raster     | single-scale| no    | no      | base   | -     | -   |
| 2 | AR -> VAR (next-scale, plain)    | next-scale | multi-scale | no    | no      | base   | -     | -   |
| 3 | + AdaLN                          | next-scale | multi-scale | yes   | no      | base   | -     | -   |
| 4 | + top-k (row 3's model)          | next-scale | multi-scale | yes   | no      | base   | k     | -   |
| 5 | + CFG (row 3's model)            | next-scale | multi-scale | yes   | no      | base   | k     | 2.0 |
| 6 | + attention norm (retrained)     | next-scale | multi-scale | yes   | yes     | base   | k     | 2.0 |
| 7 | + scale up                       | next-scale | multi-scale | yes   | yes     | deep   | k     | 2.0 |
| 8 | MaskGIT, row 6's recipe         | maskgit    | single-scale| yes   | yes     | base   | k     | 2.0 |
| 9 | raster over multi-scale tokens   | raster     | multi-scale | yes   | yes     | base   | k     | 2.0 |
| 10| raster, row 6's recipe           | raster     | single-scale| yes   | yes     | base   | k     | 2.0 |

top-k: the paper's 600 of V = 4096 codes, scaled to the tokenizer's V (`top_k_for`). CFG: 2.0, the
paper's ablation value, with VAR's linear ramp over steps (t_k = 2.0·k/(K-1), VAR_SPEC §4.3; the
paper does not say which schedule its ablation used). Rows 8-10 are not in the paper. They put the
other orders on row 6's full recipe, so that with the recipe fixed only the order and the tokenizer
change: 10 -> 8 is masked parallel decoding against raster (same tokens), 10 -> 9 the multi-scale
tokenizer alone, 9 -> 6 next-scale against raster on the same tokens, and 1 -> 10 what the recipe does
for raster. (Until 2026-11-30 rows 8 and 9 used the plain backbone of rows 1-2; plain MaskGIT and
plain multi-scale raster were still 2.1-2.9% from flat after 2000 steps, docs/ABLATION.md §3.2.)

Every preset runs 3 seeds by default. `aggregate` gives each metric (FID, class accuracy, ...) as the
mean over seeds with a Student-t 95% interval; `readings` pairs rows by seed for each delta of
`DELTAS` (AR -> VAR, +AdaLN, +top-k, +CFG, +attention norm, +scale-up, and the order and
tokenizer deltas of rows 8-10) and says whether the interval shows the paper's sign, the reverse, or cannot tell.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from genorder.errors import UserError

PAPER_TOP_K, PAPER_V = 600, 4096
PAPER_CFG = 2.0


@dataclass(frozen=True)
class Row:
    id: int
    slug: str
    title: str
    order: str
    tokens: Literal["single", "multi"]  # tokenizer family: single-scale VQ or multi-scale VQ
    adaln: bool = False
    qk_norm: bool = False
    deep: bool = False
    top_k: bool = False
    cfg: bool = False
    order_opts: dict = field(default_factory=dict)
    preset_steps: bool = False  # the order's `steps` option (parallel decoding steps) is the preset's `maskgit_steps`
    reuses: int | None = None  # sampling-only row: the row whose trained model it samples
    changed: str = ""
    paper_fid: float | None = None
    paper_delta: float | None = None
    paper_params: str | None = None
    paper_cost: float | None = None

    @property
    def train_id(self) -> int:
        """The row whose model this row uses (itself unless sampling-only)."""
        return self.reuses or self.id

    @property
    def dirname(self) -> str:
        return f"r{self.id}-{self.slug}"


ROWS: tuple[Row, ...] = (
    Row(1, "raster", "AR (raster, plain transformer)", "raster", "single",
        changed="baseline: raster next-token, single-scale tokens", paper_fid=18.65, paper_delta=0.00,
        paper_params="227M", paper_cost=1.0),
    Row(2, "next-scale", "AR → VAR (next-scale, plain)", "next-scale", "multi",
        changed="order + multi-scale tokenizer", paper_fid=5.22, paper_delta=-13.43, paper_params="207M",
        paper_cost=0.013),
    Row(3, "adaln", "+ AdaLN", "next-scale", "multi", adaln=True,
        changed="AdaLN (retrained)", paper_fid=4.95, paper_delta=-13.70, paper_params="310M", paper_cost=0.016),
    Row(4, "top-k", "+ top-k", "next-scale", "multi", adaln=True, top_k=True, reuses=3,
        changed="top-k sampling (row 3's model)", paper_fid=4.64, paper_delta=-14.01, paper_params="310M",
        paper_cost=0.016),
    Row(5, "cfg", "+ CFG", "next-scale", "multi", adaln=True, top_k=True, cfg=True, reuses=3,
        changed="CFG 2.0 (row 3's model)", paper_fid=3.60, paper_delta=-15.05, paper_params="310M",
        paper_cost=0.022),
    Row(6, "qk-norm", "+ attention norm", "next-scale", "multi", adaln=True, qk_norm=True, top_k=True, cfg=True,
        changed="q/k L2 norm (retrained)", paper_fid=3.30, paper_delta=-15.35, paper_params="310M",
        paper_cost=0.022),
    Row(7, "scale-up", "+ scale up", "next-scale", "multi", adaln=True, qk_norm=True, deep=True, top_k=True,
        cfg=True, changed="deeper and wider (retrained)", paper_fid=1.73, paper_delta=-16.85,
        paper_params="2.0B", paper_cost=0.052),
    # our rows, on row 6's recipe (AdaLN, q/k norm, top-k, CFG, d2): with the full recipe fixed, the
    # order and the tokenizer are the only things that change between rows 6, 8, 9 and 10
    Row(8, "maskgit", "MaskGIT, row 6's recipe", "maskgit", "single", adaln=True, qk_norm=True, top_k=True,
        cfg=True, preset_steps=True, changed="order: masked parallel decoding on single-scale tokens (not in the paper)"),
    Row(9, "raster-ms", "raster over multi-scale tokens, row 6's recipe", "raster", "multi", adaln=True,
        qk_norm=True, top_k=True, cfg=True, order_opts={"multiscale": True},
        changed="raster order on row 6's multi-scale tokens (control; not in the paper)"),
    Row(10, "raster-full", "raster, row 6's recipe", "raster", "single", adaln=True, qk_norm=True, top_k=True,
        cfg=True, changed="row 1 with row 6's recipe (control; not in the paper)"),
)  # fmt: skip

ROW_IDS = tuple(r.id for r in ROWS)


def row_by_id(i: int) -> Row:
    for r in ROWS:
        if r.id == i:
            return r
    raise UserError(f"no ablation row {i}; rows are {', '.join(map(str, ROW_IDS))}")


def select_rows(spec: str) -> list[Row]:
    """"all" or a comma-separated list of row numbers ("1,2,3") -> rows in table order."""
    spec = (spec or "").strip().lower()
    if spec == "all":
        return list(ROWS)
    ids = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) not in ROW_IDS:
            raise UserError(f"--rows: {part!r} is not a row number; use 'all' or numbers from {', '.join(map(str, ROW_IDS))}")
        ids.add(int(part))
    if not ids:
        raise UserError("--rows is empty; use 'all' or e.g. 1,2,3")
    return [r for r in ROWS if r.id in ids]


def parse_seeds(spec: str) -> list[int]:
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            s = int(part)
        except ValueError:
            raise UserError(f"--seeds: {part!r} is not an integer") from None
        if s < 0:
            raise UserError(f"--seeds: seeds must be >= 0, got {s}")
        if s not in out:
            out.append(s)
    if not out:
        raise UserError("--seeds is empty; e.g. --seeds 0,1")
    return out


def top_k_for(vocab: int) -> int:
    """The paper's top-k 600 of V = 4096, scaled to this tokenizer's V (at least 1)."""
    return max(1, round(PAPER_TOP_K * vocab / PAPER_V))


# -- presets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Everything that is the same for every row: data, tokenizers, budget, optimizer, evaluation."""

    name: str
    dataset: str | None  # dataset spec; None: the CLI builds a small 16 px shapes .npz (tiny)
    tokenizers: dict[str, tuple[str, dict]]  # family ("single"/"multi") -> (registry name, options)
    tokenizer_steps: int
    tokenizer_batch: int
    depth: int
    deep_depth: int
    budget: dict  # identical for every trained row, e.g. {"images": 192_000}
    train: dict  # TrainConfig options (batch_size, lr, ...) identical for every row
    backbone: dict = field(default_factory=dict)  # extra BackboneConfig options for every row
    n_eval: int = 1000  # generated images per row and seed for the metrics
    ref_n: int | None = None  # reference images (test split); None: all
    extractor: str = "genorder-inception-fid"
    eval_batch: int = 100  # generation batch for the eval samples
    time_batch: int = 64  # batch of the inference-cost measurement
    time_repeats: int = 5
    maskgit_steps: int = 8
    bootstrap: int = 100
    kid_subsets: int = 100
    samples_per_class: int = 8
    tokenizer_lr: float | None = None  # None: the tokenizer trainer's default
    width_per_depth: int | None = None  # every row's width = this x its depth (None: the backbone's 64·depth)
    seeds: str = "0,1,2"  # at least 3 seeds per row by default: the intervals are over seeds
    note: str = ""
    order_lr: dict = field(default_factory=dict)  # order -> peak lr (a regime's per-order rates); empty: train["lr"]

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["order_lr"]:
            del d["order_lr"]  # one rate for every row: train["lr"]
        return d


PRESETS: dict[str, Preset] = {
    # Whole pipeline on a CPU in seconds: the numbers mean nothing about quality.
    "tiny": Preset(
        name="tiny",
        dataset=None,
        tokenizers={"multi": ("msvq-tiny", {"channels": 3}), "single": ("vq-tiny", {"channels": 3})},
        tokenizer_steps=20,
        tokenizer_batch=16,
        depth=1,
        deep_depth=2,
        budget={"images": 96},
        train={"batch_size": 16, "lr": 1e-3, "log_every": 5},
        backbone={"drop_path": 0.0},
        n_eval=32,
        ref_n=256,
        extractor="genorder-tiny-random",
        eval_batch=32,
        time_batch=8,
        time_repeats=3,
        maskgit_steps=4,
        bootstrap=20,
        kid_subsets=10,
        samples_per_class=4,
        note="pipeline check only: 16 px shapes, depth 1-2, 6 optimizer steps, a random-feature 'FID'",
    ),
    # Sized for one H100: see docs/ABLATION.md for the budget estimate.
    "fmnist": Preset(
        name="fmnist",
        dataset="fashion-mnist",
        tokenizers={"multi": ("msvq-fmnist", {}), "single": ("vq-fmnist", {})},
        tokenizer_steps=3000,
        tokenizer_batch=64,
        depth=6,
        deep_depth=10,
        budget={"images": 102_400},
        train={"batch_size": 128, "lr": 6e-4, "log_every": 50, "checkpoint_every": 200},
        n_eval=1000,
        ref_n=10_000,
        eval_batch=250,
        time_batch=64,
        time_repeats=5,
        maskgit_steps=8,
        bootstrap=100,
        kid_subsets=100,
        samples_per_class=8,
        note="Fashion-MNIST 32 px, d6 (d10 for row 7), 800 steps of 128 images (1.7 epochs) per row",
    ),
    # The fmnist pipeline at a size a 2-core CPU trains in about half an hour: a smoke-scale check of
    # the real data, tokenizers and Inception FID, not a reproduction (150 steps per row).
    "fmnist-cpu": Preset(
        name="fmnist-cpu",
        dataset="fashion-mnist",
        tokenizers={"multi": ("msvq-fmnist", {}), "single": ("vq-fmnist", {})},
        tokenizer_steps=300,
        tokenizer_batch=32,
        depth=2,
        deep_depth=3,
        budget={"images": 4_800},
        train={"batch_size": 32, "lr": 1e-3, "log_every": 10},
        n_eval=200,
        ref_n=1_000,
        eval_batch=100,
        time_batch=16,
        time_repeats=3,
        maskgit_steps=8,
        bootstrap=50,
        kid_subsets=50,
        samples_per_class=8,
        note="CPU smoke scale: d2 (d3 for row 7), 150 steps of 32 images per row, 300-step tokenizers, "
        "200 samples per row; far too small to say anything about the paper's deltas",
    ),
    # The regime of `genorder compare` on a CPU (issue 9): the same f=4 tokenizers giving 8x8 tokens
    # at 32 px (`msvq-fmnist-cpu` with 6 scales, `vq-fmnist-cpu`), trained as compare trains them
    # (300 steps of 32 at lr 2e-3), d2 backbones of width 64 (d3 at width 96 for row 7), compare's
    # 1000 steps of 64 images under the wsd schedule (cool-down over the last 10%) at one lr (8e-3)
    # for every row. Every row also
    # trains the cool-down branch of a run of 80% the length, so the table says whether the last 20%
    # of the compute still bought anything (< 2%: flat). Run with --workers 2 on 2 cores.
    "fmnist-regime": Preset(
        name="fmnist-regime",
        dataset="fashion-mnist",
        tokenizers={
            "multi": ("msvq-fmnist-cpu", {}),
            "single": ("vq-fmnist-cpu", {}),
        },
        tokenizer_steps=300,
        tokenizer_batch=32,
        tokenizer_lr=2e-3,
        depth=2,
        deep_depth=3,
        width_per_depth=32,
        budget={"steps": 1000},
        train={"batch_size": 64, "lr": 8e-3, "log_every": 10, "schedule": "wsd", "cooldown": 0.1},
        n_eval=300,
        ref_n=1_000,
        eval_batch=100,
        time_batch=16,
        time_repeats=3,
        maskgit_steps=8,
        bootstrap=100,
        kid_subsets=50,
        samples_per_class=8,
        note="CPU regime of `genorder compare`: 8x8 tokens at 32 px, d2 width 64 (d3 width 96 for row 7), "
        "1000 steps of 64 images per row under wsd at lr 8e-3, the 80% run as a cool-down branch, 3 seeds",
    ),
}

# compare's CPU regime trained 2.5 times as long: 2500 steps of 64 images (about 2.7 epochs) per row,
# so that every row reaches its plateau (the 2000-step run, a cool-down branch, against the 2500-step
# run: under 2%). At 1000 steps the rows with AdaLN were flat and the plain ones 2.1-3.1% from it; at
# 2000 steps every row but the d3 row 7 (2.07%, at its best lr of 4e-3 / 8e-3 / 1.6e-2), whose
# 3000-step run was 1.58% (docs/ABLATION.md §3.2, §5.1).
PRESETS["fmnist-plateau"] = replace(
    PRESETS["fmnist-regime"],
    name="fmnist-plateau",
    budget={"steps": 2500},
    note="fmnist-regime trained to the plateau: 8x8 tokens at 32 px, d2 width 64 (d3 width 96 for row 7), "
    "2500 steps of 64 images per row under wsd at lr 8e-3, the 80% run as a cool-down branch, 3 seeds",
)


def apply_regime(preset: Preset, regime: Any, per_order_lr: bool = False) -> Preset:
    """`preset` trained in `regime` (a `genorder.regime.Regime`): the regime gives the backbone size
    (row 7 stays as many layers deeper as the preset makes it), the step budget, batch, schedule,
    cool-down, the tokenizers' budget (and presets, where it names them) and the peak learning rate,
    `lr.default` for every row (one optimizer for the whole table) or, with `per_order_lr`, the rate
    the regime records for each row's order. The preset keeps its data, evaluation sizes and seeds.

    `apply_regime(get_preset("fmnist-regime"), load_regime("cpu"))` trains exactly what the preset
    trains: that preset is the CPU regime written out (tests/test_ablate.py)."""
    depth = regime.backbone.depth
    tokenizers = dict(preset.tokenizers)
    for kind, name in regime.tokenizer.presets.items():
        fam = kind.split("-")[0]  # "multi-scale" -> "multi"
        if fam not in tokenizers:
            raise UserError(f"regime {regime.name}: tokenizer.presets names {kind!r}; the ablation has multi-scale and single-scale")
        tokenizers[fam] = (name, {})
    train = {**preset.train, "batch_size": regime.train.batch_size, "lr": regime.lr.default,
             "schedule": regime.train.schedule, "cooldown": regime.train.cooldown}  # fmt: skip
    order_lr = {r.order: regime.lr_for(r.order)[0] for r in ROWS} if per_order_lr else {}
    return replace(
        preset, tokenizers=tokenizers, tokenizer_steps=regime.tokenizer.steps, tokenizer_batch=regime.tokenizer.batch_size,
        tokenizer_lr=regime.tokenizer.lr, depth=depth, deep_depth=depth + (preset.deep_depth - preset.depth),
        width_per_depth=regime.backbone.width_per_depth or None, budget={"steps": regime.train.steps}, train=train,
        order_lr=order_lr,
    )  # fmt: skip


def check_budget(preset: Preset) -> None:
    """Deterministic and identical for every row: steps or images, never wall-clock; an image budget
    must be whole steps of the batch, so every row runs the same steps on the same images."""
    b = preset.budget
    if b.get("minutes") is not None:
        raise UserError(f"ablation preset {preset.name}: a wall-clock budget is load-dependent; use steps or images")
    if not (b.get("steps") or b.get("images")):
        raise UserError(f"ablation preset {preset.name}: the budget needs steps or images, got {b}")
    batch = preset.train.get("batch_size", 64)
    if b.get("images") and b["images"] % batch:
        raise UserError(f"--images {b['images']} is not a whole number of steps of {batch} images")


def budget_steps_images(preset: Preset) -> tuple[int, int]:
    """(steps, images) every trained row gets."""
    batch = preset.train.get("batch_size", 64)
    b = preset.budget
    steps = b.get("steps") or b["images"] // batch
    images = b.get("images") or steps * batch
    return min(steps, images // batch), min(images, steps * batch)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown ablation preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def train_options(row: Row, preset: Preset, seed: int, device: str | None = None) -> dict[str, Any]:
    """Keyword arguments of `train_run` for a trained row (without the tokenizer and paths).

    Only `order_name`, `order_opts`, `backbone_opts` (adaln, qk_norm) and `depth` differ between rows."""
    if row.reuses is not None:
        raise ValueError(f"row {row.id} is sampling-only; train row {row.reuses} instead")
    order_opts = dict(row.order_opts)
    if row.preset_steps:
        order_opts["steps"] = preset.maskgit_steps
    depth = preset.deep_depth if row.deep else preset.depth
    width = {"width": preset.width_per_depth * depth} if preset.width_per_depth else {}
    return {
        "order_name": row.order,
        "depth": depth,
        "budget": dict(preset.budget),
        "backbone_opts": {**preset.backbone, **width, "adaln": row.adaln, "qk_norm": row.qk_norm},
        "train_opts": {**preset.train, **({"lr": preset.order_lr[row.order]} if row.order in preset.order_lr else {}),
                       "seed": seed, "device": device},
        "order_opts": order_opts,
    }


def sampler_options(row: Row, vocab: int) -> dict[str, Any]:
    """StandardSampler options of a row: top-k and CFG on or off, nothing else."""
    return {
        "top_k": top_k_for(vocab) if row.top_k else 0,
        "cfg": PAPER_CFG if row.cfg else 0.0,
        "cfg_schedule": "linear",
        "top_p": 0.0,
        "temperature": 1.0,
    }


# -- inference cost -------------------------------------------------------------------------------


def time_generation(run, sampler, batch: int, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Seconds per image of `generate_images` (all generation steps, then the decode to pixels) at a
    fixed batch: the median of `repeats` timed calls after 2 warm-up calls (`genorder.timing.time_fn`,
    the same helper `genorder bench` uses; CUDA events on a GPU)."""
    from genorder.data import class_balanced_labels
    from genorder.sampling import generate_images
    from genorder.timing import time_fn

    device = next(run.model.parameters()).device
    labels = class_balanced_labels(run.model.num_classes, batch)
    t = time_fn(lambda: generate_images(run, labels, sampler, seed=seed, batch_size=batch), device, warmup=2, repeats=repeats)
    return {"batch": batch, "repeats": repeats, "seconds_per_batch": t.median_s, "seconds_per_image": t.median_s / batch,
            "all_s": list(t.all_s), "clock": t.clock, "device": str(device),
            "method": "genorder.timing.time_fn: median, 2 warm-up calls", "includes_decode": True}  # fmt: skip


# -- aggregation and the table --------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


METRIC_KEYS = ("fid", "kid_mean", "precision", "recall")


def mean_ci(values: list[float]) -> dict[str, Any]:
    """{"mean", "std", "ci95", "n"}: the mean over seeds with a Student-t 95% interval (n >= 2)."""
    from genorder.scaling import t975

    vals = [v for v in values if v is not None and math.isfinite(v)]
    m, sd = mean_std(vals)
    ci = None
    if len(vals) >= 2 and sd is not None:
        half = t975(len(vals) - 1) * sd / math.sqrt(len(vals))
        ci = [m - half, m + half]
    return {"mean": m, "std": sd, "ci95": ci, "n": len(vals)}


def plateau_from_log(path: Path, window: float = 0.1, tol: float = 0.02) -> dict[str, Any] | None:
    """Has the training loss flattened? Compares the mean logged loss over the last `window` of the
    steps with the mean over the window before the last 20%: improvement = (before - last) / before,
    flattened when below `tol` (issue 9's criterion, on the training loss the trainer logs)."""
    import json

    if not path.is_file():
        return None
    logs = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in rec and "loss" in rec:
            logs.append((rec["step"], rec["loss"]))
    if not logs:
        return None
    total = max(st for st, _ in logs)
    before = [lo for st, lo in logs if 0.8 - window < st / total <= 0.8]
    last = [lo for st, lo in logs if st / total > 1 - window]
    if not before:  # coarse logs: the last logged loss at or before 80% of the steps
        before = [lo for st, lo in logs if st / total <= 0.8][-1:]
    if not before or not last:
        return None
    b, e = statistics.fmean(before), statistics.fmean(last)
    imp = (b - e) / b if b else 0.0
    return {"improvement": imp, "flat": imp < tol, "loss_before": b, "loss_last": e, "steps": total}


def aggregate(rows: list[Row], results: dict[int, dict[int, dict]], seeds: list[int]) -> list[dict[str, Any]]:
    """Per row: mean ± std and a 95% interval over seeds of each metric and of the class accuracy,
    Δ FID against row 1 paired by seed, the bootstrap interval (single seed), params, steps, the
    relative inference cost and how many seeds' training loss had flattened.

    `results[row_id][seed]` holds {"eval": eval.json or None, "class": class.json or None,
    "timing": ..., "plateau": ..., ...}."""
    base = results.get(1, {})
    base_time = next((v["timing"]["seconds_per_image"] for v in base.values() if v.get("timing")), None)
    out = []
    for row in rows:
        per_seed = results.get(row.id, {})
        evals = {s: (per_seed.get(s) or {}).get("eval") for s in seeds}
        classes = {s: (per_seed.get(s) or {}).get("class") for s in seeds}
        metrics = {}
        for key in METRIC_KEYS:
            metrics[key] = mean_ci([e["metrics"].get(key) for e in evals.values() if e])
        acc = mean_ci([c["acc"] for c in classes.values() if c])
        deltas = []
        for s, e in evals.items():
            b = (base.get(s) or {}).get("eval")
            if e and b and e["metrics"].get("fid") is not None and b["metrics"].get("fid") is not None:
                deltas.append(e["metrics"]["fid"] - b["metrics"]["fid"])
        boot = [e["metrics"].get("fid_bootstrap") for e in evals.values() if e and e["metrics"].get("fid_bootstrap")]
        one_acc = [c for c in classes.values() if c]
        info = next((v for v in per_seed.values() if v), {})
        timing = next((v["timing"] for v in per_seed.values() if v and v.get("timing")), None)
        cost = timing["seconds_per_image"] / base_time if timing and base_time else None
        plats = [v["plateau"] for v in per_seed.values() if v and v.get("plateau")]
        flat = [q["flat"] for q in plats]
        worst = max((q["improvement"] for q in plats if q.get("improvement") is not None), default=None)
        curve = None  # the row's held-out loss curve: the mean over seeds at each point (wsd presets)
        if plats and all(len(q.get("points") or []) == 2 for q in plats):
            a, b = (statistics.fmean(q["points"][i]["heldout_loss"] for q in plats) for i in (0, 1))
            curve = (a - b) / a
        out.append({
            "row": row.id, "title": row.title, "order": row.order, "changed": row.changed,
            "params": info.get("params"), "depth": info.get("depth"), "gen_steps": info.get("gen_steps"),
            "train_steps": info.get("train_steps"), "train_images": info.get("train_images"),
            "sampler": info.get("sampler"), "ms_per_image": timing["seconds_per_image"] * 1e3 if timing else None,
            "cost": cost, "seeds_evaluated": sum(1 for e in evals.values() if e),
            **metrics, "class_acc": acc,
            "class_acc_ci95_one_seed": [one_acc[0]["lo"], one_acc[0]["hi"]] if len(one_acc) == 1 else None,
            "delta_fid": mean_ci(deltas),
            "fid_ci95": boot[0]["ci95"] if len(boot) == 1 else None,
            "plateau_seeds": [sum(flat), len(flat)] if flat else None,
            "plateau_worst": worst,
            "plateau_curve": curve,
            "plateau_kind": plats[0].get("kind", "training loss") if plats else None,
            "paper_fid": row.paper_fid, "paper_delta": row.paper_delta, "paper_params": row.paper_params,
            "paper_cost": row.paper_cost, "samples": info.get("samples_png"),
        })  # fmt: skip
    return out


# -- the reading, delta by delta ------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    name: str
    base: int  # row the change starts from
    row: int  # row with the change
    paper_fid_delta: float | None  # the paper's FID change (None: not in the paper)
    what: str


DELTAS: tuple[Delta, ...] = (
    Delta("AR → VAR", 1, 2, 5.22 - 18.65, "order and multi-scale tokenizer together"),
    Delta("+ AdaLN", 2, 3, 4.95 - 5.22, "class-conditioned AdaLN"),
    Delta("+ top-k", 3, 4, 4.64 - 4.95, "top-k sampling, same model"),
    Delta("+ CFG", 4, 5, 3.60 - 4.64, "classifier-free guidance, same model"),
    Delta("+ attention norm", 5, 6, 3.30 - 3.60, "q/k L2 norm"),
    Delta("+ scale-up", 6, 7, 1.73 - 3.30, "deeper and wider"),
    Delta("the recipe on raster", 1, 10, None, "row 6's AdaLN, q/k norm, top-k and CFG on the AR baseline"),
    Delta("MaskGIT against raster", 10, 8, None, "the order alone: masked parallel decoding, same tokens and recipe"),
    Delta("raster over multi-scale tokens", 10, 9, None, "the tokenizer alone, same order and recipe"),
    Delta("next-scale against raster on multi-scale tokens", 9, 6, None, "the order alone, same tokens and recipe"),
)


def _verdict(ci: list[float] | None, better_sign: int, paper_sign: int | None) -> str:
    """What the interval of a delta says: better / worse / inconclusive, and against the paper."""
    if ci is None:
        return "no interval (fewer than 2 seeds)"
    if ci[0] <= 0 <= ci[1]:
        return "inconclusive (the interval contains 0)"
    sign = 1 if ci[0] > 0 else -1
    direction = "better" if sign == better_sign else "worse"
    if paper_sign is None:
        return direction
    return f"{direction}: the paper's sign {'reproduces' if sign == paper_sign else 'is reversed'}"


def readings(results: dict[int, dict[int, dict]], seeds: list[int]) -> list[dict[str, Any]]:
    """For each delta of `DELTAS`: the per-seed paired differences of FID and of class accuracy,
    their mean with a 95% t interval over seeds, and the verdict against the paper's sign."""
    out = []
    for d in DELTAS:
        a, b = results.get(d.base, {}), results.get(d.row, {})
        fid, acc = [], []
        for s in seeds:
            ea, eb = (a.get(s) or {}).get("eval"), (b.get(s) or {}).get("eval")
            if ea and eb and ea["metrics"].get("fid") is not None and eb["metrics"].get("fid") is not None:
                fid.append(eb["metrics"]["fid"] - ea["metrics"]["fid"])
            ca, cb = (a.get(s) or {}).get("class"), (b.get(s) or {}).get("class")
            if ca and cb:
                acc.append(cb["acc"] - ca["acc"])
        f, c = mean_ci(fid), mean_ci(acc)
        paper_sign = None if d.paper_fid_delta is None else (1 if d.paper_fid_delta > 0 else -1)
        out.append({
            "name": d.name, "base": d.base, "row": d.row, "what": d.what, "paper_fid_delta": d.paper_fid_delta,
            "fid": f, "fid_verdict": _verdict(f["ci95"], -1, paper_sign) if f["n"] else "not scored",
            # the paper reports FID only; a lower FID and a higher accuracy are both "better"
            "acc": c, "acc_verdict": _verdict(c["ci95"], 1, None if paper_sign is None else -paper_sign) if c["n"] else "not scored",
        })  # fmt: skip
    return out


def render_reading(items: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one bullet per delta, FID then class accuracy, with intervals and verdicts."""

    def ci(m: dict, scale: float = 1.0, unit: str = "") -> str:
        if m["mean"] is None:
            return "—"
        text = f"{m['mean'] * scale:+.2f}{unit}"
        if m["ci95"]:
            text += f" [{m['ci95'][0] * scale:+.2f}, {m['ci95'][1] * scale:+.2f}]"
        return text + f" (n={m['n']})"

    lines = [("Δ = row − base, paired by seed; 95% t interval over seeds. FID: lower is better; class accuracy "
              "in points: higher is better."), ""]  # fmt: skip
    for it in items:
        paper = "" if it["paper_fid_delta"] is None else f"; paper: FID {it['paper_fid_delta']:+.2f}"
        fid = f"FID {ci(it['fid'])} — {it['fid_verdict']}" if it["fid"]["n"] else "FID not scored"
        acc = (f"class accuracy {ci(it['acc'], 100, ' pts')} — {it['acc_verdict']}" if it["acc"]["n"]
               else "class accuracy not scored")  # fmt: skip
        lines.append(f"- **{it['name']}** (row {it['base']} → {it['row']}, {it['what']}{paper}): {fid}; {acc}.")
    return lines


def _pm(m: dict | None, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    if not m or m.get("mean") is None:
        return "—"
    s = fmt.format(m["mean"] * scale)
    if m.get("std") is not None:
        s += " ± " + fmt.replace("+", "").format(m["std"] * scale)
    return s


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else fmt.format(x)


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _flat_legend(table: list[dict[str, Any]]) -> str:
    if any((r.get("plateau_kind") or "").startswith("held-out") for r in table):
        return ("Flat: seeds whose held-out loss (500 test images) improved by < 2% from the run of 80% the "
                "length (its wsd cool-down branch) to the full run; curve: the same improvement on the row's "
                "curve (the mean over seeds at both points); and the largest improvement of a seed.")
    return "Flat: seeds whose training loss improved by < 2% over the last 20% of steps, with the largest improvement."


def render_markdown(table: list[dict[str, Any]], header: dict[str, Any], out_dir: Path) -> str:
    """ABLATION.md: what was run, the table beside the paper's numbers, links to sample grids."""
    lines = [f"# Ablation: {header['preset']} preset", ""]
    lines.append(f"- command: `{header['command']}`")
    lines.append(f"- date: {header['date']} · device: {header['device']} · seeds: {header['seeds']}")
    lines.append(f"- data: {header['dataset']} · tokenizers: {header['tokenizers']}")
    if header.get("regime"):
        lines.append(f"- regime: {header['regime']} (its resolved settings are in ablation.json)")
    lines.append(f"- budget per trained row: {header['budget']} · optimizer: {header['train']}")
    lines.append(f"- evaluation: {header['evaluation']}")
    if header.get("note"):
        lines.append(f"- note: {header['note']}")
    if header.get("pending"):
        lines.append(f"- **pending**: {header['pending']}")
    lines += ["", "KID ×10³. ± is the std over seeds and [lo, hi] the 95% t interval over seeds; with one seed, "
              "FID shows the bootstrap 95% interval over the generated set and class accuracy its bootstrap "
              "interval. Class acc: the classifier's prediction against the requested class (genorder.classifier). "
              + _flat_legend(table) + " Cost: time per image "
              "(tokens + decode) relative to row 1, measured once per row at a fixed batch. Δ FID is against "
              "row 1, paired by seed.", ""]  # fmt: skip
    cols = ["#", "row", "params", "gen steps", "train steps", "cost", "FID", "class acc %", "KID×10³", "precision",
            "recall", "Δ FID", "flat", "paper FID", "paper Δ", "samples"]  # fmt: skip
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in table:
        fid = _pm(r["fid"])
        if r["fid"].get("ci95"):
            lo, hi = r["fid"]["ci95"]
            fid += f" [{lo:.2f}, {hi:.2f}]"
        elif r.get("fid_ci95") and r["fid"].get("std") is None and r["fid"].get("mean") is not None:
            lo, hi = r["fid_ci95"]
            fid += f" [{lo:.2f}, {hi:.2f}]"
        acc = _pm(r.get("class_acc"), "{:.1f}", 100)
        ci = (r.get("class_acc") or {}).get("ci95") or r.get("class_acc_ci95_one_seed")
        if ci and acc != "—":
            acc += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        flat = "—" if not r.get("plateau_seeds") else f"{r['plateau_seeds'][0]}/{r['plateau_seeds'][1]}"
        if r.get("plateau_curve") is not None:
            flat += f"; curve {100 * r['plateau_curve']:.1f}%"
        if r.get("plateau_worst") is not None:
            flat += f" (seeds ≤ {100 * r['plateau_worst']:.1f}%)"
        link = "—"
        if r.get("samples"):
            rel = Path(r["samples"])
            try:
                rel = rel.relative_to(out_dir)
            except ValueError:
                pass
            link = f"[png]({rel.as_posix()})"
        lines.append("| " + " | ".join([
            str(r["row"]), r["title"], _params(r["params"]), _num(r["gen_steps"], "{}"), _num(r["train_steps"], "{}"),
            _num(r["cost"], "{:.3f}"), fid, acc, _pm(r["kid_mean"], scale=1e3), _pm(r["precision"], "{:.3f}"),
            _pm(r["recall"], "{:.3f}"), _pm(r["delta_fid"], "{:+.2f}"), flat, _num(r["paper_fid"], "{:.2f}"),
            _num(r["paper_delta"], "{:+.2f}"), link,
        ]) + " |")  # fmt: skip
    lines += ["", "Rows: " + "; ".join(f"{r['row']}: {r['changed']}" for r in table), ""]
    if header.get("reading"):
        lines += ["", "## Reading, delta by delta", "", *header["reading"], ""]
    return "\n".join(lines)
