"""The VAR ablation table (TABLES.md §1.1) trained and scored under one budget, as library code.

    >>> from genorder.experiments.ablate import AblateConfig, run_ablate
    >>> result = run_ablate(AblateConfig(preset="tiny", seeds="0", out=Path("runs/ablate-tiny")))
    >>> result.rows[0]["fid"]["mean"]

`run_ablate(config, executor, progress)` resolves the config (preset, optional regime, overrides)
into a `genorder.ablation.Preset`, checks everything before the first write, hands its job graph to
an `Executor` (default: this process, one job after another) and returns an `AblateResult`, whose
`write()` writes OUT/ablation.json and OUT/ABLATION.md (`run_ablate` calls it). `progress(text)`
receives one line per event (a row found finished, a row scored, a job done); it runs in the worker
processes too, so it must be a module-level function when the executor has several workers.

Stages, each resumable row by row (a finished stage is never redone):
  1. tokenizers: one single-scale and one multi-scale VQVAE of the preset, trained once, shared by all
     rows and seeds (OUT/tokenizers/<name>/tokenizer);
  2. training: every trained row through `train_run`, options from `genorder.ablation` (skipped when
     OUT/seed<s>/r<i>-<slug>/model.json says "final": true);
  3. sampling, right after a model is trained: n class-balanced samples for each row that uses it,
     with the row's sampler -> samples.npz (uint8), row.json, and the inference-cost measurement
     (timing.json, first seed only). A row whose samples are there needs no weights any more;
  4. scoring: FID/KID/precision/recall (+ bootstrap) of samples.npz -> eval.json (skipped when present
     with the same settings); class accuracy of the same samples against their requested labels, with
     its bootstrap interval (`genorder.classifier`, cached in OUT/classifiers) -> class.json;
  5. OUT/ABLATION.md and OUT/ablation.json: mean and 95% interval over seeds per row, and the reading
     delta by delta (paired by seed, sign against the paper's).
Budgets are steps or images in whole steps, identical for every row, never wall-clock (`check_budget`).
`no_eval` stops after 3 (a GPU machine without the FID weights); `eval_only` runs only 4-5 (a CPU
machine with them, on a copy of the GPU run's OUT without the rows' .safetensors files).

With `regime` (a `genorder.regime` name or TOML path, `regime_set` its overrides) the regime gives
the sizes, budgets and learning rate (`genorder.ablation.apply_regime`); the resolved regime is
written into ablation.json. Without it the preset alone decides, as before regimes existed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from genorder.ablation import (
    ROWS,
    Preset,
    Row,
    aggregate,
    apply_regime,
    budget_steps_images,
    check_budget,
    get_preset,
    parse_seeds,
    plateau_from_log,
    readings,
    render_markdown,
    render_reading,
    row_by_id,
    sampler_options,
    select_rows,
    time_generation,
    train_options,
)
from genorder.checkpoint import atomic_write, read_meta, save_npz
from genorder.data import SHAPE_CLASSES, class_balanced_labels, render_shapes
from genorder.errors import UserError
from genorder.executors import Executor, LocalExecutor
from genorder.experiments import _bridge
from genorder.images import save_grid, to_uint8
from genorder.parallel import Job
from genorder.runs import discard_checkpoints, load_run, run_started, write_json
from genorder.trainer import resolve_device

Progress = Callable[[str], None]

# Preset fields that change what is trained or sampled: an OUT made with other values is refused.
FINGERPRINT = ("dataset", "tokenizers", "tokenizer_steps", "tokenizer_batch", "tokenizer_lr", "depth", "deep_depth", "width_per_depth", "budget",
               "train", "backbone", "maskgit_steps", "n_eval", "eval_batch")  # fmt: skip
ROW_FINGERPRINT = ("order", "tokens", "adaln", "qk_norm", "deep", "top_k", "cfg", "order_opts", "preset_steps", "reuses")
PLATEAU_TAIL = 0.2  # the plateau test: what the last 20% of the compute bought
HELDOUT_N = 500  # test images of the held-out loss (compare's)


def quiet(text: str) -> None:
    """The default progress callback: says nothing."""


class AblateConfig(BaseModel):
    """Everything `genorder ablate` takes (except where its jobs run: that is the executor)."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(None, description="ablation preset; default fmnist, or fmnist-regime with a regime")
    regime: str | None = Field(None, description="a regime (cpu, gpu or a TOML path) for sizes, budgets and lr")
    regime_set: list[str] = Field(default_factory=list, description="regime overrides, key.path=value")
    per_order_lr: bool = Field(False, description="each row at the regime's rate for its order (default: lr.default for all)")
    out: Path = Path("runs/ablate")
    seeds: str | None = Field(None, description="comma-separated seeds (default: the preset's)")
    rows: str = "all"
    device: str = "auto"
    eval_device: str | None = None
    no_eval: bool = False
    eval_only: bool = False
    n: int | None = None
    bootstrap: int | None = None
    extractor: str | None = None
    ref_n: int | None = None
    images: int | None = None
    cache_dir: Path | None = None


@dataclass(frozen=True)
class Resolved:
    """A config checked and turned into what the stages need."""

    preset: Preset
    regime: dict[str, Any] | None
    rows: list[Row]
    seeds: list[int]
    dev: torch.device
    edev: torch.device


def resolve(config: AblateConfig) -> Resolved:
    """The preset (with the regime and overrides applied), rows, seeds and devices; every problem is a
    `UserError` raised before anything is written."""
    regime = None
    if config.regime is not None:
        from genorder.regime import load_regime

        regime = load_regime(config.regime, config.regime_set)
    elif config.regime_set:
        raise UserError("--set needs --regime (the keys are a regime's)")
    if config.per_order_lr and regime is None:
        raise UserError("--per-order-lr needs --regime (the rates are a regime's)")
    p = get_preset(config.preset or ("fmnist-regime" if regime is not None else "fmnist"))
    if regime is not None:
        p = apply_regime(p, regime, config.per_order_lr)
    selected = select_rows(config.rows)
    seeds = parse_seeds(config.seeds or p.seeds)
    if config.no_eval and config.eval_only:
        raise UserError("--no-eval and --eval-only exclude each other")
    overrides = {"n_eval": config.n, "bootstrap": config.bootstrap, "extractor": config.extractor, "ref_n": config.ref_n}
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    if config.images is not None:
        p = dataclasses.replace(p, budget={"images": config.images})
    check_budget(p)  # steps or images, whole steps, never wall-clock: every row trains on the same images
    if p.n_eval < 2 or p.bootstrap < 0 or (p.ref_n is not None and p.ref_n < 2) or p.budget.get("images", 1) < 1:
        raise UserError("--n and --ref-n must be >= 2, --bootstrap >= 0, --images >= 1")
    dev = resolve_device(config.device)
    edev = resolve_device(config.eval_device) if config.eval_device else dev
    if "cuda" in (dev.type, edev.type) and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; use --device cpu (or auto)")
    if not config.no_eval:
        _bridge.check_extractor(p.extractor)
    if config.eval_only:
        _check_eval_only(config.out, selected, seeds)
    return Resolved(p, regime.resolved() if regime is not None else None, selected, seeds, dev, edev)


@dataclass
class AblateResult:
    """The table of one ablation: per-row aggregates, the reading delta by delta and every row and
    seed's records. `write()` writes OUT/ablation.json and OUT/ABLATION.md."""

    out: Path
    preset: Preset
    regime: dict[str, Any] | None
    header: dict[str, Any]
    rows: list[dict[str, Any]]
    readings: list[dict[str, Any]]
    per_seed: dict[int, dict[int, dict]]

    def data(self) -> dict[str, Any]:
        data = {"header": self.header, "preset": self.preset.describe(), "rows": self.rows, "readings": self.readings,
                "per_seed": {str(k): v for k, v in self.per_seed.items()}}  # fmt: skip
        if self.regime is not None:
            data["regime"] = self.regime
        return data

    def write(self, out: Path | None = None) -> None:
        out = out or self.out
        write_json(out / "ablation.json", self.data())
        md = render_markdown(self.rows, self.header, out)
        atomic_write(out / "ABLATION.md", lambda tmp: tmp.write_text(md))


def run_ablate(config: AblateConfig, executor: Executor | None = None, progress: Progress | None = None) -> AblateResult:
    """Train, sample and score the selected rows for every seed, resuming row by row; write and return the table."""
    say = progress or quiet
    r = resolve(config)
    p, out = r.preset, config.out
    executor = executor or LocalExecutor(1)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out, p)
    ds_spec = p.dataset or tiny_dataset(out)
    regime = f" · regime {config.regime}" if config.regime else ""
    say(f"ablate preset {p.name}{regime} · rows {', '.join(str(row.id) for row in r.rows)} · seeds {r.seeds} · "
        f"{ds_spec} · device {r.dev}")  # fmt: skip

    train_ids = sorted({row.train_id for row in r.rows})
    vocab: dict[str, int] = {}
    tok_stems: dict[str, Path] = {}
    for fam in sorted({row_by_id(i).tokens for i in train_ids}):
        name, opts = p.tokenizers[fam]
        stem = out / "tokenizers" / name / "tokenizer"
        if not config.eval_only:
            stem = ensure_tokenizer(name, opts, ds_spec, stem.parent, p.tokenizer_steps, p.tokenizer_batch, str(r.dev),
                                    p.tokenizer_lr, say)  # fmt: skip
        tok_stems[fam] = stem
        vocab[fam] = int(read_meta(stem)["config"]["vocab_size"])

    # one job per trained model (train it, then sample every row that uses it) and one per scored
    # row; with several workers they run side by side (the same numbers, less wall-clock)
    jobs: list[Job] = []
    first_eval: str | None = None  # scored alone first: it fills the reference and classifier caches
    for seed in r.seeds:
        sdir = out / f"seed{seed}"
        for tid in train_ids:
            users = [row.id for row in r.rows if row.train_id == tid]
            tjob = f"row {tid} seed {seed}: train and sample"
            if not config.eval_only:
                tr = row_by_id(tid)
                cost = (2.0 if tr.tokens == "multi" else 1.0) * (2.5 if tr.deep else 1.0)
                jobs.append(Job(tjob, train_and_sample_job, (tid, users, p, seed, sdir, ds_spec, tok_stems, vocab,
                                                             config.device, r.dev, seed == r.seeds[0], say), cost=cost))  # fmt: skip
            if config.no_eval:
                continue
            for rid in users:
                name = f"row {rid} seed {seed}: score"
                deps = ((tjob,) if not config.eval_only else ()) + ((first_eval,) if first_eval else ())
                jobs.append(Job(name, score_job, (rid, p, seed, sdir, ds_spec, r.edev, config.cache_dir,
                                                  out / "classifiers", say), deps=deps, cost=0.1))  # fmt: skip
                first_eval = first_eval or name
    several = executor.workers > 1
    executor.run(jobs, on_event=lambda kind, name, secs: several and kind == "done" and say(f"done {name} ({secs:.0f} s)"))

    result = collect(out, p, r.rows, r.seeds, ds_spec, r.edev, config, r.regime)
    result.write()
    return result


# -- stage 0/1: data and tokenizers -------------------------------------------------------------


def _finished(stem: Path) -> bool:
    return stem.with_suffix(".json").is_file() and bool(read_meta(stem).get("final", False))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _samples_meta(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


def tiny_dataset(out: Path, size: int = 16, n_train: int = 1024, n_test: int = 256) -> str:
    """The tiny preset's data: generated shapes at 16 px as OUT/data/shapes16.npz; returns its spec."""
    path = out / "data" / f"shapes{size}.npz"
    if not path.is_file():
        train, train_lab = render_shapes(n_train, size, seed=1234)
        test, test_lab = render_shapes(n_test, size, seed=5678)
        save_npz(path, compressed=True, images=train.numpy(), labels=train_lab.numpy(), test_images=test.numpy(),
                  test_labels=test_lab.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip
    return f"npz:{path.resolve()}"


def ensure_tokenizer(name: str, options: dict, dataset_spec: str, out_dir: Path, steps: int, batch: int,
                     device: str, lr: float | None = None, progress: Progress = quiet) -> Path:  # fmt: skip
    """Train the preset's tokenizer once (seed 0) into out_dir/tokenizer; reuse a finished one."""
    stem = out_dir / "tokenizer"
    if _finished(stem) and stem.with_suffix(".safetensors").is_file():
        progress(f"tokenizer {name}: finished checkpoint found in {out_dir}, reusing it")
        return stem
    _bridge.train_tokenizer_run(name, None, out_dir, {"steps": steps}, device=device, dataset_spec=dataset_spec,
                                tokenizer_opts=options, train_opts={"batch_size": batch, "seed": 0, "lr": lr},
                                fit_dataset=False, on_message=progress)  # the preset's size is the ablation's choice: convert the data to it  # fmt: skip
    return stem


def _check_out(out: Path, preset: Preset) -> None:
    """Refuse an OUT that holds an ablation made with other training/sampling settings."""
    path = out / "ablation-config.json"
    want = {k: json.loads(json.dumps(getattr(preset, k))) for k in FINGERPRINT}
    if preset.order_lr:  # per-order rates (a regime's); absent otherwise, so older OUTs still match
        want["order_lr"] = dict(preset.order_lr)
    # what each row trains and samples (rows 8 and 9 changed on 2026-11-30: an older OUT is refused)
    want["rows"] = {str(r.id): {k: getattr(r, k) for k in ROW_FINGERPRINT} for r in ROWS}
    have = _read_json(path)
    if have is None:
        write_json(path, {"preset": preset.name, **want})
        return
    diff = [k for k in want if have.get(k) != want[k]] + [k for k in ("order_lr",) if k in have and k not in want]
    if diff:
        raise UserError(f"{out} holds an ablation made with other settings ({', '.join(diff)}); "
                        "choose another --out or the same options")  # fmt: skip


def _check_eval_only(out: Path, selected: list[Row], seeds: list[int]) -> None:
    missing = []
    for seed in seeds:
        for row in selected:
            d = out / f"seed{seed}" / row.dirname
            if _samples_meta(d / "samples.npz") is None and _read_json(d / "eval.json") is None:
                missing.append(str(d / "samples.npz"))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"--eval-only: no samples to score: {', '.join(missing[:3])}{more}; "
                        "run `genorder ablate` without --eval-only (or with --no-eval on a GPU) first")  # fmt: skip


# -- jobs -----------------------------------------------------------------------------------------


def train_and_sample_job(tid: int, user_ids: list[int], p: Preset, seed: int, sdir: Path, ds_spec: str, tok_stems: dict,
                         vocab: dict, device: str, dev: torch.device, timing: bool, progress: Progress = quiet) -> None:  # fmt: skip
    """Job: train the model of row `tid` (or find it finished), then sample every row that uses it."""
    _train_row(row_by_id(tid), p, seed, sdir, ds_spec, tok_stems, vocab, device, [row_by_id(i) for i in user_ids], timing,
               progress)  # fmt: skip
    runs: dict[Path, Any] = {}
    for rid in user_ids:
        _sample_row(row_by_id(rid), p, seed, sdir, vocab, dev, runs, timing, progress)


def score_job(rid: int, p: Preset, seed: int, sdir: Path, ds_spec: str, edev: torch.device, cache_dir: Path | None,
              classifiers: Path, progress: Progress = quiet) -> None:  # fmt: skip
    """Job: FID family (eval.json) and class accuracy (class.json) of one row's samples."""
    _eval_row(row_by_id(rid), p, seed, sdir, ds_spec, edev, cache_dir, progress)
    _class_row(row_by_id(rid), seed, sdir, ds_spec, edev, classifiers, progress)


# -- stage 2: training ------------------------------------------------------------------------------


def _sampled(row: Row, p: Preset, seed: int, sdir: Path, vocab: dict, timing: bool) -> bool:
    """Everything stage 3 writes for this row is there (so its model's weights are not needed)."""
    rdir = sdir / row.dirname
    sopts = sampler_options(row, vocab[row.tokens])
    want = {"n": p.n_eval, "seed": seed, "sampler": sopts, "model": row_by_id(row.train_id).dirname}
    have = _samples_meta(rdir / "samples.npz") == want or _eval_ok(_read_json(rdir / "eval.json"), p, seed, sopts)
    return (have and (rdir / "row.json").is_file() and (not timing or (rdir / "timing.json").is_file())
            and (row.reuses is None or (rdir / "samples.png").is_file()))  # fmt: skip


def _train_row(row: Row, p: Preset, seed: int, sdir: Path, ds_spec: str, tok_stems: dict, vocab: dict,
               device: str, users: list[Row], timing: bool, progress: Progress) -> None:  # fmt: skip
    rdir = sdir / row.dirname
    if _finished(rdir / "model"):
        if (rdir / "model.safetensors").is_file() or all(_sampled(u, p, seed, sdir, vocab, timing) for u in users):
            progress(f"row {row.id} seed {seed}: finished model in {rdir}, not retraining")
            _annealed_plateau(rdir, p, ds_spec, device)
            return
        # a copied OUT without weights, and rows still to sample: train the model again
        progress(f"row {row.id} seed {seed}: {rdir} has no weights and rows left to sample; retraining")
        for name in ("model.json", "optim.json"):
            (rdir / name).unlink(missing_ok=True)
        discard_checkpoints(rdir)  # retrained from scratch: its old sets would make train_run refuse
    opts = train_options(row, p, seed, device)
    # train_run builds the model before anything seeds the global RNG: seed it here so a row's
    # initialisation depends on its seed only, not on which rows ran before it in this process
    torch.manual_seed(seed)
    progress(f"row {row.id} ({row.title}) seed {seed} -> {rdir}")
    wsd = opts["train_opts"].get("schedule") == "wsd"
    _bridge.train_run(
        opts["order_name"], rdir, dataset_spec=ds_spec, tokenizer_spec=str(tok_stems[row.tokens]), depth=opts["depth"],
        budget=opts["budget"], backbone_opts=opts["backbone_opts"], train_opts=opts["train_opts"],
        order_opts=opts["order_opts"], sampler_opts=sampler_options(row, vocab[row.tokens]),
        resume=run_started(rdir), samples_per_class=p.samples_per_class,
        on_step=_bridge.point_saver(rdir, anneal=True, ends=[1 - PLATEAU_TAIL, 1.0]) if wsd else None,
    )  # fmt: skip
    _annealed_plateau(rdir, p, ds_spec, device)


def _annealed_plateau(rdir: Path, p: Preset, ds_spec: str, device: str | None) -> None:
    """plateau.json of a wsd row: held-out loss (the first 500 test images) of the run of 80% the
    length (its cool-down branch, saved under points/) and of the full run, and the relative
    improvement between them (flat below 2%). Nothing for other schedules or when a point is missing."""
    from genorder.checkpoint import load_checkpoint
    from genorder.data import load_dataset
    from genorder.heldout import heldout_loss, plateau
    from genorder.subsets import subset_of

    if p.train.get("schedule") != "wsd" or (rdir / "plateau.json").is_file():
        return
    pts = sorted((rdir / _bridge.points_folder()).glob("step-*.safetensors"))
    if len(pts) < 2:
        return
    r = load_run(rdir, resolve_device(device or "auto"))
    train = load_dataset(ds_spec, "train")
    test = load_dataset(ds_spec, "test", image_size=train.image_size, channels=train.channels)
    rows = []
    for f in pts:
        state, meta = load_checkpoint(f.with_suffix(""))
        r.model.load_state_dict(state)
        loss = heldout_loss(r.order, r.tokenizer, r.model, *subset_of(test, HELDOUT_N))  # seeded, class-balanced
        rows.append({"step": meta["step"], "images": meta["images"], "heldout_loss": loss})
    pl = plateau([(q["images"], q["heldout_loss"]) for q in rows], tail=PLATEAU_TAIL)
    write_json(rdir / "plateau.json", {"kind": "held-out loss of annealed runs (wsd cool-down branches)",
                                       "points": rows, **pl, "flat": pl["improvement"] is not None and pl["improvement"] < 0.02})  # fmt: skip


# -- stage 3: sampling ------------------------------------------------------------------------------


def _eval_ok(rec: dict | None, p: Preset, seed: int, sampler: dict) -> bool:
    if not rec:
        return False
    boot = rec.get("metrics", {}).get("fid_bootstrap") or {}
    return (rec.get("n") == p.n_eval and rec.get("seed") == seed and rec.get("feature_extractor") == p.extractor
            and rec.get("sampler") == sampler and (boot.get("reps") or 0) == p.bootstrap
            and (rec.get("reference") or {}).get("requested_n") == p.ref_n)  # fmt: skip


def _generate(run, labels: torch.Tensor, sampler, seed: int, batch_size: int) -> torch.Tensor:
    from genorder.sampling import generate_images

    return generate_images(run, labels, sampler, seed=seed, batch_size=batch_size)


def _sample_row(row: Row, p: Preset, seed: int, sdir: Path, vocab: dict, dev: torch.device, runs: dict,
                timing: bool, progress: Progress) -> None:  # fmt: skip
    from genorder.timing import device_name

    rdir = sdir / row.dirname
    mdir = sdir / row_by_id(row.train_id).dirname
    sopts = sampler_options(row, vocab[row.tokens])
    want = {"n": p.n_eval, "seed": seed, "sampler": sopts, "model": mdir.name}
    have_samples = _samples_meta(rdir / "samples.npz") == want
    need_timing = timing and _read_json(rdir / "timing.json") is None
    if _sampled(row, p, seed, sdir, vocab, timing):
        return
    if mdir not in runs:
        runs.clear()
        runs[mdir] = load_run(mdir, dev)
    run = runs[mdir]
    sampler = _bridge.make_sampler(**sopts)
    rdir.mkdir(parents=True, exist_ok=True)
    if not have_samples:
        progress(f"row {row.id} seed {seed}: {p.n_eval} samples")
        labels = class_balanced_labels(run.model.num_classes, p.n_eval)
        imgs = _generate(run, labels, sampler, seed, p.eval_batch)
        save_npz(rdir / "samples.npz", compressed=True, images=to_uint8(imgs).numpy(), labels=labels.numpy(),
                  meta=np.array(json.dumps(want)))  # fmt: skip
    if row.reuses is not None and not (rdir / "samples.png").is_file():
        k = run.model.num_classes
        grid = _generate(run, class_balanced_labels(k, k * p.samples_per_class), sampler, seed, 64)
        save_grid(grid, rdir / "samples.png", nrow=p.samples_per_class, scale=2, labels_left=run.class_names)
    if need_timing:
        progress(f"row {row.id}: timing generation at batch {p.time_batch}")
        write_json(rdir / "timing.json", time_generation(run, sampler, p.time_batch, p.time_repeats, seed=seed))
    meta = read_meta(mdir / "model")
    info = {
        "row": row.id, "seed": seed, "model_dir": str(mdir), "params": meta["params"],
        "depth": meta["backbone"]["depth"], "adaln": meta["backbone"]["adaln"], "qk_norm": meta["backbone"]["qk_norm"],
        "gen_steps": run.order.num_steps(run.order.layout(run.tokenizer)), "train_steps": meta["spent"]["steps"],
        "train_images": meta["spent"]["images"], "train_flops": meta["spent"]["flops"],
        "train_seconds": meta["spent"]["seconds"], "sampler": sopts, "samples_png": str(rdir / "samples.png"),
        "device": device_name(dev),
    }  # fmt: skip
    write_json(rdir / "row.json", info)


# -- stage 4: scoring -------------------------------------------------------------------------------


def _eval_row(row: Row, p: Preset, seed: int, sdir: Path, ds_spec: str, edev: torch.device, cache_dir: Path | None,
              progress: Progress) -> None:  # fmt: skip
    rdir = sdir / row.dirname
    info = _read_json(rdir / "row.json") or {}
    sopts = info.get("sampler")
    if _eval_ok(_read_json(rdir / "eval.json"), p, seed, sopts):
        progress(f"row {row.id} seed {seed}: eval.json is up to date, not re-scoring")
        return
    with np.load(rdir / "samples.npz", allow_pickle=False) as z:
        images = torch.from_numpy(z["images"])
    # class accuracy is scored once per row by `_class_row` (class.json), not again here
    m = _bridge.score_images(images, ds_spec, extractor=p.extractor, device=edev, bootstrap=p.bootstrap, seed=seed,
                             ref_n=p.ref_n, kid_subsets=p.kid_subsets, cache_dir=cache_dir,
                             title=f"row {row.id} seed {seed}: features")  # fmt: skip
    m["reference"]["requested_n"] = p.ref_n
    rec = _bridge.eval_record("samples", m, run=info.get("model_dir"), row=row.id, order=row.order, dataset=ds_spec,
                              n=p.n_eval, seed=seed, sampler=sopts, device=str(edev), scoring_seconds=m["seconds"])  # fmt: skip
    write_json(rdir / "eval.json", rec)
    progress(f"row {row.id} seed {seed}: FID {rec['metrics']['fid']:.3f}")


def class_scores(images_u8: torch.Tensor, labels: torch.Tensor, ds_spec: str, device: torch.device,
                 cache_root: Path, seed: int) -> dict | None:  # fmt: skip
    """Class consistency of uint8 samples against their requested labels (`genorder.classifier`,
    trained once per dataset content and cached under `cache_root`), or None where that module is
    not installed yet. The one place `ablate` calls the classifier."""
    try:
        from genorder.classifier import class_accuracy, load_or_train_classifier
    except ImportError:
        return None
    from genorder.data import to_float

    clf, info = load_or_train_classifier(ds_spec, device=str(device), cache_root=cache_root)
    res = class_accuracy(clf, to_float(images_u8).to(device), labels.to(device), seed=seed)
    return {**res, "classifier": {k: info.get(k) for k in ("test_accuracy", "path", "dataset_hash")}}


def _class_row(row: Row, seed: int, sdir: Path, ds_spec: str, edev: torch.device, cache_root: Path,
               progress: Progress) -> None:  # fmt: skip
    """class.json: the class accuracy of the row's samples.npz with its bootstrap interval."""
    rdir = sdir / row.dirname
    have = _read_json(rdir / "class.json")
    meta = _samples_meta(rdir / "samples.npz")
    if have is not None and (meta is None or have.get("samples") == meta):
        return
    if meta is None:
        return  # a copy without samples: nothing to score (its FID came from eval.json)
    with np.load(rdir / "samples.npz", allow_pickle=False) as z:
        images, labels = torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
    res = class_scores(images, labels, ds_spec, edev, cache_root, seed)
    if res is None:
        return
    write_json(rdir / "class.json", {**res, "samples": meta, "row": row.id, "seed": seed})
    progress(f"row {row.id} seed {seed}: class accuracy {100 * res['acc']:.1f}% "
             f"[{100 * res['lo']:.1f}, {100 * res['hi']:.1f}]")  # fmt: skip


# -- stage 5: the table -----------------------------------------------------------------------------


def _devices(results: dict, edev: torch.device, scored: bool) -> str:
    """Where the rows were sampled and timed (from their row.json) and where features ran."""
    from genorder.timing import device_name

    used = sorted({v.get("device") for per in results.values() for v in per.values() if v.get("device")})
    text = f"{', '.join(used) or '—'} (training, sampling, timing)"
    return text + (f"; {device_name(edev)} (features)" if scored else "")


def command_line(config: AblateConfig, p: Preset, seeds: list[int]) -> str:
    """The `genorder ablate` command that gives this table."""
    cmd = f"genorder ablate --preset {config.preset or p.name} --out {config.out} --seeds {','.join(map(str, seeds))} --rows {config.rows}"
    if config.regime:
        cmd += f" --regime {config.regime}" + "".join(f" --set {s}" for s in config.regime_set)
        cmd += " --per-order-lr" if config.per_order_lr else ""
    return cmd + (" --no-eval" if config.no_eval else "") + (" --eval-only" if config.eval_only else "")


def collect(out: Path, p: Preset, selected: list[Row], seeds: list[int], ds_spec: str, edev: torch.device,
            config: AblateConfig, regime: dict[str, Any] | None = None) -> AblateResult:  # fmt: skip
    """The table from every row's files under OUT (rows not selected this time included: the
    readings compare rows that may not be selected)."""
    results: dict[int, dict[int, dict]] = {}
    for row in ROWS:
        for seed in seeds:
            d = out / f"seed{seed}" / row.dirname
            info = _read_json(d / "row.json")
            if info is None:
                continue
            info["samples_png"] = str(d / "samples.png")  # this OUT's copy (OUT may have been moved)
            tdir = out / f"seed{seed}" / row_by_id(row.train_id).dirname
            results.setdefault(row.id, {})[seed] = {**info, "eval": _read_json(d / "eval.json"),
                                                    "class": _read_json(d / "class.json"),
                                                    "timing": _read_json(d / "timing.json"),
                                                    "plateau": _read_json(tdir / "plateau.json") or plateau_from_log(tdir / "log.jsonl")}  # fmt: skip
    table = aggregate(selected, results, seeds)
    tok = ", ".join(f"{fam}: {name} {opts or ''}".strip() for fam, (name, opts) in p.tokenizers.items())
    pending = []
    if any(r["fid"]["mean"] is None for r in table):
        pending.append("some rows have no FID yet (run with --eval-only where the FID weights are installed)")
    if not config.no_eval and any(r["class_acc"]["mean"] is None for r in table):
        pending.append("some rows have no class accuracy yet (it needs genorder.classifier; re-run with --eval-only)")
    steps, images = budget_steps_images(p)
    clf_acc = next((v["class"]["classifier"].get("test_accuracy") for per in results.values() for v in per.values()
                    if v.get("class") and v["class"].get("classifier")), None)  # fmt: skip
    trained = {(r["train_steps"], r["train_images"]) for r in table if r["train_steps"] is not None}
    if len(trained) > 1:
        pending.append(f"rows trained with different budgets: {sorted(trained)}")
    reading = readings(results, seeds)
    header = {
        "preset": p.name, "command": command_line(config, p, seeds),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "device": _devices(results, edev, not config.no_eval),
        "seeds": seeds, "dataset": ds_spec, "tokenizers": tok,
        "budget": f"{p.budget} = {steps} steps, {images:,} images, the same for every trained row", "train": p.train,
        "evaluation": f"{p.n_eval} class-balanced samples per row and seed vs {p.ref_n or 'all'} test images, "
                      f"extractor {p.extractor}, bootstrap {p.bootstrap}, KID subsets {p.kid_subsets}"
                      + (f"; class accuracy by a classifier with {100 * clf_acc:.1f}% test accuracy on real images"
                         if clf_acc is not None else ""),
        "note": p.note, "pending": "; ".join(pending) or None,
        "reading": render_reading(reading),
    }  # fmt: skip
    if regime is not None:
        header["regime"] = f"{config.regime}" + (f" with {', '.join(config.regime_set)}" if config.regime_set else "")
        if p.order_lr:
            header["train"] = {**p.train, "lr": {k: v for k, v in sorted(p.order_lr.items())}}
    return AblateResult(out, p, regime, header, table, reading, results)
