"""`genorder ablate`: the VAR ablation table (TABLES.md §1.1) trained and scored under one budget.

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
`--no-eval` stops after 3 (a GPU machine without the FID weights); `--eval-only` runs only 4-5 (a CPU
machine with them, on a copy of the GPU run's OUT without the rows' .safetensors files).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import torch
import typer
from rich.table import Table

from genorder.ablation import (
    Preset,
    Row,
    aggregate,
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
    ROWS,
    select_rows,
    time_generation,
    train_options,
)
from genorder.checkpoint import atomic_write, read_meta, save_npz
from genorder.data import SHAPE_CLASSES, class_balanced_labels, render_shapes
from genorder.errors import UserError
from genorder.images import save_grid, to_uint8
from genorder.runs import load_run, write_json
from genorder.trainer import resolve_device
from genorder_cli.app import app, console, guarded
from genorder_cli.cmd_eval import check_extractor, record, score_images
from genorder_cli.cmd_train import train_run
from genorder_cli.compare_jobs import POINTS, PointSaver
from genorder_cli.common import ThreadsOpt, generate_with_bar, make_sampler, set_threads

Opt = typer.Option

# Preset fields that change what is trained or sampled: an OUT made with other values is refused.
FINGERPRINT = ("dataset", "tokenizers", "tokenizer_steps", "tokenizer_batch", "tokenizer_lr", "depth", "deep_depth", "width_per_depth", "budget",
               "train", "backbone", "maskgit_steps", "n_eval", "eval_batch")  # fmt: skip
ROW_FINGERPRINT = ("order", "tokens", "adaln", "qk_norm", "deep", "top_k", "cfg", "order_opts", "preset_steps", "reuses")


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


# -- stage 0/1: data and tokenizers -------------------------------------------------------------


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
                     device: str, lr: float | None = None) -> Path:  # fmt: skip
    """Train the preset's tokenizer once (seed 0) into out_dir/tokenizer; reuse a finished one."""
    stem = out_dir / "tokenizer"
    if _finished(stem) and stem.with_suffix(".safetensors").is_file():
        console.print(f"tokenizer {name}: finished checkpoint found in {out_dir}, reusing it")
        return stem
    from genorder_cli.cmd_tokenizer import train_tokenizer_run

    train_tokenizer_run(name, None, out_dir, {"steps": steps}, device=device, dataset_spec=dataset_spec,
                        tokenizer_opts=options, train_opts={"batch_size": batch, "seed": 0, "lr": lr},
                        fit_dataset=False)  # the preset's size is the ablation's choice: convert the data to it  # fmt: skip
    return stem


# -- the command ----------------------------------------------------------------------------------


def _devices(results: dict, edev: torch.device, scored: bool) -> str:
    """Where the rows were sampled and timed (from their row.json) and where features ran."""
    from genorder.timing import device_name

    used = sorted({v.get("device") for per in results.values() for v in per.values() if v.get("device")})
    text = f"{', '.join(used) or '—'} (training, sampling, timing)"
    return text + (f"; {device_name(edev)} (features)" if scored else "")


def _check_out(out: Path, preset: Preset) -> None:
    """Refuse an OUT that holds an ablation made with other training/sampling settings."""
    path = out / "ablation-config.json"
    want = {k: json.loads(json.dumps(getattr(preset, k))) for k in FINGERPRINT}
    # what each row trains and samples (rows 8 and 9 changed on 2026-11-30: an older OUT is refused)
    want["rows"] = {str(r.id): {k: getattr(r, k) for k in ROW_FINGERPRINT} for r in ROWS}
    have = _read_json(path)
    if have is None:
        write_json(path, {"preset": preset.name, **want})
        return
    diff = [k for k in want if have.get(k) != want[k]]
    if diff:
        raise UserError(f"{out} holds an ablation made with other settings ({', '.join(diff)}); "
                        "choose another --out or the same options")  # fmt: skip


@app.command("ablate")
@guarded
def ablate(
    preset: Annotated[str, Opt(help="fmnist (Fashion-MNIST, sized for one H100), fmnist-regime (the CPU regime of `genorder compare`: 1000 steps a row, about 40 CPU minutes per seed), fmnist-plateau (the same, 2500 steps a row, to bring every row to its plateau; about 85 CPU minutes per seed, docs/ABLATION.md §5.0), fmnist-cpu (CPU smoke scale) or tiny (pipeline check)")] = "fmnist",
    out: Annotated[Path, Opt(help="folder for runs, samples, ABLATION.md and ablation.json")] = Path("runs/ablate"),
    seeds: Annotated[Optional[str], Opt(help="comma-separated seeds, each a full set of rows (default: the preset's)")] = None,
    rows: Annotated[str, Opt(help="'all' or row numbers, e.g. 1,2,3 (see docs/ABLATION.md)")] = "all",
    device: Annotated[str, Opt(help="training and sampling device: auto, cpu, cuda")] = "auto",
    eval_device: Annotated[Optional[str], Opt(help="feature-extraction device (default: --device)")] = None,
    no_eval: Annotated[bool, Opt("--no-eval", help="train and sample only (no FID weights needed)")] = False,
    eval_only: Annotated[bool, Opt("--eval-only", help="score existing samples.npz only (no training)")] = False,
    n: Annotated[Optional[int], Opt(help="generated images per row and seed (default: the preset's)")] = None,
    bootstrap: Annotated[Optional[int], Opt(help="bootstrap resamples for the FID interval (default: the preset's)")] = None,
    extractor: Annotated[Optional[str], Opt(help="feature extractor (default: the preset's)")] = None,
    ref_n: Annotated[Optional[int], Opt(help="reference test images (default: the preset's)")] = None,
    images: Annotated[Optional[int], Opt(help="override the budget: training images per row")] = None,
    cache_dir: Annotated[Optional[Path], Opt(help="reference feature cache (default $GENORDER_FID_CACHE or ~/.cache/genorder/fid)")] = None,
    threads: ThreadsOpt = None,
    workers: Annotated[int, Opt(help="processes that train and score rows side by side (one per CPU core is a good choice on a CPU: 1 thread each unless --threads says otherwise); the results do not depend on it. The inference-cost timings of the first seed are measured while other rows train when N > 1")] = 1,
) -> None:
    """Train and score the VAR ablation rows under one budget; write OUT/ABLATION.md and ablation.json."""
    set_threads(threads)
    p = get_preset(preset)
    selected = select_rows(rows)
    seed_list = parse_seeds(seeds or p.seeds)
    if no_eval and eval_only:
        raise UserError("--no-eval and --eval-only exclude each other")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    overrides = {"n_eval": n, "bootstrap": bootstrap, "extractor": extractor, "ref_n": ref_n}
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    if images is not None:
        p = dataclasses.replace(p, budget={"images": images})
    check_budget(p)  # steps or images, whole steps, never wall-clock: every row trains on the same images
    if p.n_eval < 2 or p.bootstrap < 0 or (p.ref_n is not None and p.ref_n < 2) or p.budget.get("images", 1) < 1:
        raise UserError("--n and --ref-n must be >= 2, --bootstrap >= 0, --images >= 1")
    dev = resolve_device(device)
    edev = resolve_device(eval_device) if eval_device else dev
    if "cuda" in (dev.type, edev.type) and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; use --device cpu (or auto)")
    if not no_eval:
        check_extractor(p.extractor)
    train_ids = sorted({r.train_id for r in selected})
    if eval_only:
        _check_eval_only(out, selected, seed_list)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out, p)
    ds_spec = p.dataset or tiny_dataset(out)
    console.print(f"[bold]ablate[/bold] preset {p.name} · rows {', '.join(str(r.id) for r in selected)} · "
                  f"seeds {seed_list} · {ds_spec} · device {dev}")  # fmt: skip

    vocab: dict[str, int] = {}
    tok_stems: dict[str, Path] = {}
    families = sorted({row_by_id(i).tokens for i in train_ids})
    for fam in families:
        name, opts = p.tokenizers[fam]
        stem = out / "tokenizers" / name / "tokenizer"
        if not eval_only:
            stem = ensure_tokenizer(name, opts, ds_spec, stem.parent, p.tokenizer_steps, p.tokenizer_batch, str(dev),
                                    p.tokenizer_lr)  # fmt: skip
        tok_stems[fam] = stem
        vocab[fam] = int(read_meta(stem)["config"]["vocab_size"])

    # one job per trained model (train it, then sample every row that uses it) and one per scored
    # row; with --workers N they run side by side in N processes (the same numbers, less wall-clock)
    from genorder.parallel import Job, run_jobs

    jobs: list[Job] = []
    first_eval: str | None = None  # scored alone first: it fills the reference and classifier caches
    for seed in seed_list:
        sdir = out / f"seed{seed}"
        for tid in train_ids:
            users = [r.id for r in selected if r.train_id == tid]
            tjob = f"row {tid} seed {seed}: train and sample"
            if not eval_only:
                tr = row_by_id(tid)
                cost = (2.0 if tr.tokens == "multi" else 1.0) * (2.5 if tr.deep else 1.0)
                jobs.append(Job(tjob, _train_and_sample, (tid, users, p, seed, sdir, ds_spec, tok_stems, vocab, device,
                                                          dev, seed == seed_list[0]), cost=cost))  # fmt: skip
            if no_eval:
                continue
            for rid in users:
                name = f"row {rid} seed {seed}: score"
                deps = ((tjob,) if not eval_only else ()) + ((first_eval,) if first_eval else ())
                jobs.append(Job(name, _score_row, (rid, p, seed, sdir, ds_spec, edev, cache_dir, out / "classifiers"),
                                deps=deps, cost=0.1))  # fmt: skip
                first_eval = first_eval or name
    wthreads = threads if threads is not None else (1 if workers > 1 else None)
    run_jobs(jobs, workers=workers, threads=wthreads,
             on_event=lambda kind, name, secs: workers > 1 and kind == "done" and console.print(f"  [dim]done {name} ({secs:.0f} s)[/dim]"))  # fmt: skip

    _write_table(out, p, selected, seed_list, ds_spec, edev, rows, no_eval, eval_only)


def _train_and_sample(tid: int, user_ids: list[int], p: Preset, seed: int, sdir: Path, ds_spec: str, tok_stems: dict,
                      vocab: dict, device: str, dev: torch.device, timing: bool) -> None:  # fmt: skip
    """Job: train the model of row `tid` (or find it finished), then sample every row that uses it."""
    _train_row(row_by_id(tid), p, seed, sdir, ds_spec, tok_stems, vocab, device, [row_by_id(i) for i in user_ids], timing)
    runs: dict[Path, Any] = {}
    for rid in user_ids:
        _sample_row(row_by_id(rid), p, seed, sdir, vocab, dev, runs, timing)


def _score_row(rid: int, p: Preset, seed: int, sdir: Path, ds_spec: str, edev: torch.device, cache_dir: Path | None,
               classifiers: Path) -> None:  # fmt: skip
    """Job: FID family (eval.json) and class accuracy (class.json) of one row's samples."""
    _eval_row(row_by_id(rid), p, seed, sdir, ds_spec, edev, cache_dir)
    _class_row(row_by_id(rid), seed, sdir, ds_spec, edev, classifiers)


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


def _sampled(row: Row, p: Preset, seed: int, sdir: Path, vocab: dict, timing: bool) -> bool:
    """Everything stage 3 writes for this row is there (so its model's weights are not needed)."""
    rdir = sdir / row.dirname
    sopts = sampler_options(row, vocab[row.tokens])
    want = {"n": p.n_eval, "seed": seed, "sampler": sopts, "model": row_by_id(row.train_id).dirname}
    have = _samples_meta(rdir / "samples.npz") == want or _eval_ok(_read_json(rdir / "eval.json"), p, seed, sopts)
    return (have and (rdir / "row.json").is_file() and (not timing or (rdir / "timing.json").is_file())
            and (row.reuses is None or (rdir / "samples.png").is_file()))  # fmt: skip


def _train_row(row: Row, p: Preset, seed: int, sdir: Path, ds_spec: str, tok_stems: dict, vocab: dict,
               device: str, users: list[Row], timing: bool) -> None:  # fmt: skip
    rdir = sdir / row.dirname
    if _finished(rdir / "model"):
        if (rdir / "model.safetensors").is_file() or all(_sampled(u, p, seed, sdir, vocab, timing) for u in users):
            console.print(f"row {row.id} seed {seed}: finished model in {rdir}, not retraining")
            _annealed_plateau(rdir, p, ds_spec, device)
            return
        # a copied OUT without weights, and rows still to sample: train the model again
        console.print(f"row {row.id} seed {seed}: {rdir} has no weights and rows left to sample; retraining")
        for name in ("model.json", "optim.json"):
            (rdir / name).unlink(missing_ok=True)
    opts = train_options(row, p, seed, device)
    # train_run builds the model before anything seeds the global RNG: seed it here so a row's
    # initialisation depends on its seed only, not on which rows ran before it in this process
    torch.manual_seed(seed)
    console.print(f"[bold]row {row.id}[/bold] ({row.title}) seed {seed} -> {rdir}")
    wsd = opts["train_opts"].get("schedule") == "wsd"
    train_run(
        opts["order_name"], rdir, dataset_spec=ds_spec, tokenizer_spec=str(tok_stems[row.tokens]), depth=opts["depth"],
        budget=opts["budget"], backbone_opts=opts["backbone_opts"], train_opts=opts["train_opts"],
        order_opts=opts["order_opts"], sampler_opts=sampler_options(row, vocab[row.tokens]),
        resume=(rdir / "model.json").exists(), samples_per_class=p.samples_per_class,
        on_step=PointSaver(rdir, anneal=True, ends=[1 - PLATEAU_TAIL, 1.0]) if wsd else None,
    )  # fmt: skip
    _annealed_plateau(rdir, p, ds_spec, device)


PLATEAU_TAIL = 0.2  # the plateau test: what the last 20% of the compute bought
HELDOUT_N = 500  # test images of the held-out loss (compare's)


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
    pts = sorted((rdir / POINTS).glob("step-*.safetensors"))
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


def _eval_ok(rec: dict | None, p: Preset, seed: int, sampler: dict) -> bool:
    if not rec:
        return False
    boot = rec.get("metrics", {}).get("fid_bootstrap") or {}
    return (rec.get("n") == p.n_eval and rec.get("seed") == seed and rec.get("feature_extractor") == p.extractor
            and rec.get("sampler") == sampler and (boot.get("reps") or 0) == p.bootstrap
            and (rec.get("reference") or {}).get("requested_n") == p.ref_n)  # fmt: skip


def _sample_row(row: Row, p: Preset, seed: int, sdir: Path, vocab: dict, dev: torch.device, runs: dict,
                timing: bool) -> None:  # fmt: skip
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
    sampler = make_sampler({}, **sopts)
    rdir.mkdir(parents=True, exist_ok=True)
    if not have_samples:
        labels = class_balanced_labels(run.model.num_classes, p.n_eval)
        imgs = generate_with_bar(run, labels, sampler, seed=seed, batch_size=p.eval_batch,
                                 title=f"row {row.id} seed {seed}: {p.n_eval} samples")  # fmt: skip
        save_npz(rdir / "samples.npz", compressed=True, images=to_uint8(imgs).numpy(), labels=labels.numpy(),
                  meta=np.array(json.dumps(want)))  # fmt: skip
    if row.reuses is not None and not (rdir / "samples.png").is_file():
        k = run.model.num_classes
        grid_labels = class_balanced_labels(k, k * p.samples_per_class)
        grid = generate_with_bar(run, grid_labels, sampler, seed=seed, batch_size=64, title="sample grid")
        save_grid(grid, rdir / "samples.png", nrow=p.samples_per_class, scale=2, labels_left=run.class_names)
    if need_timing:
        with console.status(f"row {row.id}: timing generation at batch {p.time_batch}"):
            t = time_generation(run, sampler, p.time_batch, p.time_repeats, seed=seed)
        write_json(rdir / "timing.json", t)
    from genorder.timing import device_name

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


def _eval_row(row: Row, p: Preset, seed: int, sdir: Path, ds_spec: str, edev: torch.device, cache_dir: Path | None) -> None:
    rdir = sdir / row.dirname
    info = _read_json(rdir / "row.json") or {}
    sopts = info.get("sampler")
    if _eval_ok(_read_json(rdir / "eval.json"), p, seed, sopts):
        console.print(f"row {row.id} seed {seed}: eval.json is up to date, not re-scoring")
        return
    with np.load(rdir / "samples.npz", allow_pickle=False) as z:
        images = torch.from_numpy(z["images"])
    # class accuracy is scored once per row by `_class_row` (class.json), not again here
    m = score_images(images, ds_spec, extractor=p.extractor, device=edev, bootstrap=p.bootstrap, seed=seed,
                     ref_n=p.ref_n, kid_subsets=p.kid_subsets, cache_dir=cache_dir,
                     title=f"row {row.id} seed {seed}: features")  # fmt: skip
    m["reference"]["requested_n"] = p.ref_n
    rec = record("samples", m, run=info.get("model_dir"), row=row.id, order=row.order, dataset=ds_spec, n=p.n_eval,
                 seed=seed, sampler=sopts, device=str(edev), scoring_seconds=m["seconds"])  # fmt: skip
    write_json(rdir / "eval.json", rec)
    console.print(f"row {row.id} seed {seed}: FID {rec['metrics']['fid']:.3f}")


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


def _class_row(row: Row, seed: int, sdir: Path, ds_spec: str, edev: torch.device, cache_root: Path) -> None:
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
    console.print(f"row {row.id} seed {seed}: class accuracy {100 * res['acc']:.1f}% "
                  f"[{100 * res['lo']:.1f}, {100 * res['hi']:.1f}]")  # fmt: skip


def _write_table(out: Path, p: Preset, selected: list[Row], seeds: list[int], ds_spec: str, edev: torch.device,
                 rows_spec: str, no_eval: bool, eval_only: bool) -> None:  # fmt: skip
    results: dict[int, dict[int, dict]] = {}
    for row in ROWS:  # every row that is there: the readings compare rows that may not be selected
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
    cmd = f"genorder ablate --preset {p.name} --out {out} --seeds {','.join(map(str, seeds))} --rows {rows_spec}"
    pending = []
    if any(r["fid"]["mean"] is None for r in table):
        pending.append("some rows have no FID yet (run with --eval-only where the FID weights are installed)")
    if not no_eval and any(r["class_acc"]["mean"] is None for r in table):
        pending.append("some rows have no class accuracy yet (it needs genorder.classifier; re-run with --eval-only)")
    steps, images = budget_steps_images(p)
    clf_acc = next((v["class"]["classifier"].get("test_accuracy") for per in results.values() for v in per.values()
                    if v.get("class") and v["class"].get("classifier")), None)  # fmt: skip
    trained = {(r["train_steps"], r["train_images"]) for r in table if r["train_steps"] is not None}
    if len(trained) > 1:
        pending.append(f"rows trained with different budgets: {sorted(trained)}")
    header = {
        "preset": p.name, "command": cmd + (" --no-eval" if no_eval else "") + (" --eval-only" if eval_only else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "device": _devices(results, edev, not no_eval), "seeds": seeds, "dataset": ds_spec, "tokenizers": tok,
        "budget": f"{p.budget} = {steps} steps, {images:,} images, the same for every trained row", "train": p.train,
        "evaluation": f"{p.n_eval} class-balanced samples per row and seed vs {p.ref_n or 'all'} test images, "
                      f"extractor {p.extractor}, bootstrap {p.bootstrap}, KID subsets {p.kid_subsets}"
                      + (f"; class accuracy by a classifier with {100 * clf_acc:.1f}% test accuracy on real images"
                         if clf_acc is not None else ""),
        "note": p.note, "pending": "; ".join(pending) or None,
        "reading": render_reading(readings(results, seeds)),
    }  # fmt: skip
    write_json(out / "ablation.json", {"header": header, "preset": p.describe(), "rows": table,
                                       "readings": readings(results, seeds),
                                       "per_seed": {str(k): v for k, v in results.items()}})  # fmt: skip
    md = render_markdown(table, header, out)
    atomic_write(out / "ABLATION.md", lambda tmp: tmp.write_text(md))
    t = Table(title=f"ablation ({p.name}), seeds {seeds}")
    for col in ("#", "row", "params", "cost", "FID", "class acc", "Δ FID", "paper FID", "paper Δ"):
        t.add_column(col, justify="left" if col == "row" else "right")
    for r in table:
        fid, d = r["fid"], r["delta_fid"]
        t.add_row(str(r["row"]), r["title"], "—" if r["params"] is None else f"{r['params'] / 1e6:.2f}M",
                  "—" if r["cost"] is None else f"{r['cost']:.3f}",
                  "—" if fid["mean"] is None else f"{fid['mean']:.2f}" + (f" ± {fid['std']:.2f}" if fid["std"] else ""),
                  "—" if r["class_acc"]["mean"] is None else f"{100 * r['class_acc']['mean']:.1f}%",
                  "—" if d["mean"] is None else f"{d['mean']:+.2f}",
                  "—" if r["paper_fid"] is None else f"{r['paper_fid']:.2f}",
                  "—" if r["paper_delta"] is None else f"{r['paper_delta']:+.2f}")  # fmt: skip
    console.print(t)
    console.print(f"wrote {out / 'ABLATION.md'} and {out / 'ablation.json'}")
