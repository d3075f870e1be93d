"""`genorder compare`: the toolkit's main job. Train several orders at one depth under one identical,
deterministic budget, score each at several checkpoints along training and print what it bought.

Per order and seed: one run trained with `train_run` (the same code as `genorder train`), its
weights saved at `--points` evenly spaced fractions of the budget; each saved point is then scored
by a `CheckpointProbe`: held-out token loss on a fixed test subset, class accuracy of
class-balanced samples (a classifier trained once on the dataset, cached by content) with a
bootstrap interval, FID / KID / precision-recall against the test split, next to the
real-against-real FID at the same n.

The work is a set of jobs (`compare_jobs`: classifier, FID references, tokenizers, one training job
per order and seed, one scoring job per run) run by `genorder.parallel.run_jobs` on `--workers`
processes of `--threads` threads each: on a 2-core CPU two runs train side by side. Each job
computes the same numbers in any worker, so comparison.json does not depend on --workers.

Written to --out:
  comparison.json          every result (config, tokenizers, classifier, floor, LR sweep, every curve
                           point): a function of the options and the data only, so two runs diff equal
  comparison_timings.json  everything that depends on the machine's load (wall-clock per point, total)
  comparison.png           the sample grids side by side (seed 0)
  comparison_curves.png    class accuracy and FID against training FLOPs and wall-clock, bands over seeds
  heldout_loss.png         held-out loss against training images, every order and seed
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer
from rich.table import Table

from genorder.errors import UserError
from genorder.hashing import config_fingerprint, dataset_fingerprint
from genorder.images import side_by_side
from genorder.plot import band_panels, line_plot
from genorder.registry import builtin_names, registry
from genorder.runs import write_json
from genorder.trainer import resolve_device
from genorder_cli.app import app, console, guarded, parse_csv
from genorder_cli.cmd_eval import classifier_cache_dir
from genorder_cli.common import layered, make_sampler

Opt = typer.Option

# The CPU regime (issue 9, docs/RESULTS.md §0): 8x8 tokens from f=4 tokenizers, d2 backbones of
# width 64 (0.2M parameters), 1000 steps of 64 images under the wsd schedule, so that every order's
# held-out loss has flattened by the end (the last 20% of the compute buys < 2%), within 15 minutes
# on a 2-core machine. Peak learning rates per order come from `genorder compare --tune-lr`
# (docs/RESULTS.md §0.3, LR sweep).
# The tokenizers are the presets each tokenizer declares itself the default for (order kind, the
# dataset's channels and size: `Tokenizer.default_for`), unless --tokenizer names others; the
# orders are the built-in ones (those the genorder distribution registers) unless --orders names others.
CPU = {"depth": 2, "width_per_depth": 32, "steps": 1000, "cooldown": 0.1, "batch_size": 64, "tokenizer_steps": 300, "tokenizer_batch": 32,
       "tokenizer_lr": 2e-3, "seeds": "0,1", "points": 5, "n_eval": 100, "ref_n": 500, "heldout_n": 500, "fid_points": "last"}  # fmt: skip
CPU_LR = 8e-3  # the CPU default; an order may declare its own best (`Order.cpu_lr`; docs/RESULTS.md §0.3, LR sweep)
GPU = {"depth": 16, "width_per_depth": None, "steps": 5000, "cooldown": 0.1, "batch_size": 128, "tokenizer_steps": 3000, "tokenizer_batch": 32,
       "tokenizer_lr": 3e-4, "seeds": "0,1", "points": 5, "n_eval": 1000, "ref_n": 10000, "heldout_n": 1000, "fid_points": "all"}  # fmt: skip
GPU_LR = 4e-4
TUNE_LRS = "2e-3,4e-3,8e-3"


def _tokenizer_for(order, specs: list[str]) -> str | None:
    """--tokenizer: one spec for every order, or MULTI,SINGLE (by the order's tokenizer kind); None:
    the preset declared for the order's kind and the dataset's shape."""
    if not specs:
        return None
    if len(specs) == 1:
        return specs[0]
    return specs[0] if order.tokenizer_kind == "multi-scale" else specs[1]


def _tokens_per_image(spec: str | None, order, ds, tok_opts: dict) -> float:
    """Tokens per image of the tokenizer `spec` (or the order's default preset) would give: a
    scheduling estimate only (the longest runs start first); 100 when it cannot be told yet (the
    tokenizer job then reports the problem)."""
    from genorder_cli.common import is_checkpoint_spec, tokenizer_stem

    try:
        if spec and is_checkpoint_spec(spec):
            from genorder.runs import load_tokenizer

            scales = load_tokenizer(tokenizer_stem(spec), torch.device("cpu"))[0].scales
        else:
            from genorder.tokenizer_training import configure_for_dataset

            name, opts = configure_for_dataset(spec, order.tokenizer_kind, ds.channels, ds.image_size, dict(tok_opts))
            scales = registry("tokenizers").create(name, opts).scales
    except Exception:  # noqa: BLE001 - an estimate; the tokenizer job raises the real error
        return 100.0
    return float(sum(s * s for s in scales))


def _band(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, None
    return sum(vals) / len(vals), min(vals), max(vals)


@app.command("compare")
@guarded
def compare(
    orders: Annotated[Optional[str], Opt(help="comma-separated orders to train and compare (default: the built-in ones; see `genorder plugins`)")] = None,
    depth: Annotated[Optional[int], Opt(help="one depth for every order (default 2 on a CPU, at width 32·depth; 16 on a GPU, at the backbone's 64·depth; other widths: --set backbone.width=W)")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH, npz:PATH")] = "fashion-mnist",
    steps: Annotated[Optional[int], Opt(help="budget: optimizer steps per order and seed (default 1000 CPU / 5000 GPU)")] = None,
    images: Annotated[Optional[int], Opt(help="budget: images seen per order and seed")] = None,
    flops: Annotated[Optional[float], Opt(help="budget: training FLOPs per order and seed")] = None,
    minutes: Annotated[Optional[float], Opt(help="budget: wall-clock minutes per order and seed (load-dependent: flagged in every table)")] = None,
    batch_size: Annotated[Optional[int], Opt(help="images per step (default 64 CPU / 128 GPU)")] = None,
    lr: Annotated[Optional[float], Opt(help="one peak lr for every order (default on a CPU: the rate each order declares as best in the CPU regime's LR sweep, else 8e-3; on a GPU 4e-4)")] = None,
    tune_lr: Annotated[bool, Opt("--tune-lr", help="sweep --lrs per order first (seed 0, --tune-fraction of the budget), train each at its best held-out loss")] = False,
    lrs: Annotated[str, Opt(help="learning rates tried by --tune-lr")] = TUNE_LRS,
    tune_fraction: Annotated[float, Opt(help="budget of each --tune-lr run, as a fraction of the main budget")] = 0.5,
    tokenizer: Annotated[Optional[str], Opt(help="tokenizer preset or checkpoint for every order, or MULTI,SINGLE by order kind (default: the presets declared for each kind and the dataset's shape, see `genorder plugins`)")] = None,
    tokenizer_steps: Annotated[Optional[int], Opt(help="steps of each tokenizer trained first (default 300 CPU / 3000 GPU)")] = None,
    tokenizer_minutes: Annotated[Optional[float], Opt(help="cap in minutes on each tokenizer trained first (load-dependent; default none)")] = None,
    image_size: Annotated[Optional[int], Opt(help="train at this image size (the tokenizer must match, e.g. --set tokenizer.image_size=...)")] = None,
    seeds: Annotated[Optional[str], Opt(help="seeds per order, drawn as bands (default 0,1)")] = None,
    points: Annotated[Optional[int], Opt(help="evaluation points along training (default 5: the last 20% of training is then measured exactly)")] = None,
    schedule: Annotated[str, Opt(help="lr schedule: wsd (warmup, flat, cool-down over the last 10% of a run, --set train.cooldown=F; every point but the last is the end of its own cool-down branch, so each point is what a run of that length ends with) or lin0 (VAR's decay over the whole run; points are the running weights)")] = "wsd",
    n_eval: Annotated[Optional[int], Opt("--n", help="samples per evaluation point (class-balanced)")] = None,
    ref_n: Annotated[Optional[int], Opt(help="test images of the FID reference (default 500 CPU / 10000 GPU)")] = None,
    extractor: Annotated[str, Opt(help="FID features: genorder-inception-fid, or genorder-tiny-random (smoke tests)")] = "genorder-inception-fid",
    no_fid: Annotated[bool, Opt("--no-fid", help="score class accuracy and held-out loss only")] = False,
    fid_points: Annotated[Optional[str], Opt(help="FID at every evaluation point (all) or at the last one only (last; the CPU default: Inception features of every point would more than double the job's time on a CPU); class accuracy and held-out loss are scored at every point either way")] = None,
    cfg: Annotated[float, Opt(help="CFG strength of every order's samples (0 = off)")] = 1.5,
    top_k: Annotated[int, Opt(help="top-k of every order's samples (0 = off)")] = 0,
    per_class: Annotated[int, Opt(help="samples per class in the grids")] = 6,
    out: Annotated[Path, Opt(help="folder for the runs, the PNGs and the JSON")] = Path("runs/compare"),
    workers: Annotated[Optional[int], Opt(help="worker processes that train and score runs side by side (default: one per CPU core, up to 8, on a CPU; 1 on a GPU); the results do not depend on it, only the wall-clock does")] = None,
    threads: Annotated[Optional[int], Opt(help="CPU threads for torch (default 1 on a CPU: several times faster on shared cores, and the same round-off on every machine); recorded")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    set_: Annotated[Optional[list[str]], Opt("--set", help="override: section.key=value for [order] [backbone] [train] [sampler] [tokenizer] (repeatable)")] = None,
    fid_cache: Annotated[Optional[Path], Opt(help="FID reference cache (default $GENORDER_FID_CACHE or ~/.cache/genorder/fid)")] = None,
    classifier_cache: Annotated[Optional[Path], Opt(help="class-consistency classifier cache (default: FID_CACHE/classifiers)")] = None,
) -> None:
    """Train ORDERS under one deterministic budget at one depth, score them along training, and write
    comparison.json, comparison_curves.png and comparison.png."""
    t_start = time.perf_counter()
    names = parse_csv(orders) if orders is not None else builtin_names("orders")
    if not names:
        raise UserError("--orders is empty")
    for n in names:
        registry("orders").get(n)
    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    threads = threads if threads is not None else (None if gpu else 1)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    D = GPU if gpu else CPU
    sections = layered(None, set_)
    unknown = set(sections) - {"order", "backbone", "train", "sampler", "tokenizer"}
    if unknown:
        raise UserError(f"--set: unknown section(s) {sorted(unknown)}; use order, backbone, train, sampler, tokenizer")
    tok_opts = dict(sections.pop("tokenizer", {}))
    depth = depth or D["depth"]
    if D["width_per_depth"] and "width" not in sections.get("backbone", {}):
        sections.setdefault("backbone", {})["width"] = D["width_per_depth"] * depth  # the regime's width
    budget = {k: v for k, v in {"steps": steps, "images": images, "flops": flops, "minutes": minutes}.items() if v is not None}
    budget = budget or {"steps": D["steps"]}
    load_dependent = "minutes" in budget or tokenizer_minutes is not None
    batch_size = batch_size or D["batch_size"]
    seed_list = parse_csv(seeds or D["seeds"], int)
    n_points = points or D["points"]
    n = n_eval or D["n_eval"]
    ref = ref_n or D["ref_n"]
    fid_points = fid_points or D["fid_points"]
    if schedule not in ("wsd", "lin0"):
        raise UserError(f"--schedule must be wsd or lin0, got {schedule!r}")
    # wsd: the cool-down is the last 10% of a run (--set train.cooldown=F to change it); every point
    # but the last is its own branch, which costs cooldown x (points - 1) / 2 of the training
    cooldown = float(sections.get("train", {}).get("cooldown", D["cooldown"]))
    if fid_points not in ("all", "last"):
        raise UserError(f"--fid-points must be all or last, got {fid_points!r}")
    if not seed_list or n_points < 1 or n < 2 or ref < 2 or not 0 < tune_fraction <= 1:
        raise UserError("need at least one seed, --points >= 1, --n >= 2, --ref-n >= 2 and 0 < --tune-fraction <= 1")
    tok_steps = tokenizer_steps or D["tokenizer_steps"]
    tok_train = {"lr": D["tokenizer_lr"], "batch_size": D["tokenizer_batch"]}
    sampler_opts = {"cfg": cfg, "top_k": top_k}
    make_sampler(sections, **sampler_opts)  # validates the sampler options before anything runs
    n_workers = workers if workers is not None else (1 if gpu else max(1, min(os.cpu_count() or 1, 8)))
    if n_workers < 1:
        raise UserError(f"--workers must be at least 1, got {n_workers}")

    from genorder.data import load_dataset

    train_ds = load_dataset(dataset, "train", image_size=image_size)
    test_ds = load_dataset(dataset, "test", image_size=train_ds.image_size, channels=train_ds.channels)
    held = min(D["heldout_n"], len(test_ds) // 2) if len(test_ds) >= 4 else len(test_ds)
    # held-out loss: reported on test[:held], the LR sweep's on test[-held:] (disjoint when possible)
    console.print(
        f"[bold]compare[/bold] {', '.join(names)} · depth {depth} · budget {budget} per order and seed"
        f"{' (wall-clock: load-dependent)' if load_dependent else ''} · seeds {seed_list} · {n_points} points · "
        f"device {dev} · {n_workers} worker process{'es' if n_workers > 1 else ''} × {torch.get_num_threads()} threads"
    )

    # 1. the jobs: classifier, FID references and tokenizers first, then one training job per order
    #    and seed, then one scoring job per run; spread over `workers` processes of `threads`
    #    threads each (results do not depend on the number of workers)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from genorder.classifier import ClassifierConfig, cache_key
    from genorder.parallel import Job, Result, run_jobs
    from genorder_cli import compare_jobs as cj

    if not no_fid:
        from genorder import metrics

        metrics.require_torch_fidelity()
    clf_root = str(classifier_cache or classifier_cache_dir(fid_cache))
    dev_s = str(dev)
    order_opts = sections.get("order", {})
    order_objs = {nm: registry("orders").create(nm, order_opts) for nm in names}
    tok_specs = parse_csv(tokenizer)
    order_tok: dict[str, str] = {}
    run_cost: dict[str, float] = {}  # tokens per image of each order's tokenizer: the longest runs start first
    # costs order the ready jobs (highest first): the tokenizers unblock training, the classifier is
    # the longest, the FID references are needed only by the scoring at the end
    pre: list = [Job("classifier", cj.classifier_job, (dataset, dev_s, clf_root), cost=150.0)]
    if not no_fid:
        pre.append(Job("fid-reference", cj.fid_reference_job, (dataset, n, ref, extractor, dev_s, str(fid_cache) if fid_cache else None), cost=100.0))
    for nm in names:
        spec = _tokenizer_for(order_objs[nm], tok_specs)
        tok_key = spec or f"default {order_objs[nm].tokenizer_kind}"
        if f"tokenizer:{tok_key}" not in {j.name for j in pre}:
            pre.append(Job(f"tokenizer:{tok_key}", cj.tokenizer_job, (spec, nm, order_opts, dataset, image_size, dev_s, tok_steps,
                                                                      tokenizer_minutes, tok_train, tok_opts), cost=200.0))  # fmt: skip
        order_tok[nm] = tok_key
        run_cost[nm] = _tokens_per_image(spec, order_objs[nm], train_ds, tok_opts)
    clf_hash = config_fingerprint({"train": dataset_fingerprint(train_ds), "test": dataset_fingerprint(test_ds)})
    base_key = {"dataset": dataset_fingerprint(train_ds), "depth": depth, "batch_size": batch_size, "sections": sections, "schedule": schedule,
                "cooldown": cooldown, "sampler": sampler_opts, "threads": torch.get_num_threads(), "image_size": image_size}  # fmt: skip
    score_key = {"n": n, "extractor": None if no_fid else extractor, "fid_points": fid_points, "ref_n": ref,
                 "classifier": cache_key(clf_hash, ClassifierConfig()), "heldout_n": held}  # fmt: skip
    common = {"dataset": dataset, "depth": depth, "batch_size": batch_size, "sections": sections, "sampler_opts": sampler_opts, "schedule": schedule, "cooldown": cooldown,
              "per_class": per_class, "image_size": image_size, "device": dev_s, "heldout_n": held, "n": n, "ref_n": ref,
              "extractor": None if no_fid else extractor, "fid_points": fid_points, "score_key": score_key,
              "fid_cache": str(fid_cache) if fid_cache else None, "classifier_cache": clf_root}  # fmt: skip

    def run_phase(jobs: list, label: str) -> dict:
        """Run jobs on the workers behind one progress bar; each finished job gets a line."""
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as prog:  # fmt: skip
            bar = prog.add_task(f"{label} ({n_workers} worker{'s' if n_workers > 1 else ''} × {threads or 'all'} threads)", total=len(jobs))

            def on_event(kind: str, name: str, seconds: float) -> None:
                if kind == "done":
                    prog.advance(bar)
                    console.print(f"  [dim]done {name} ({seconds:.0f} s)[/dim]", highlight=False)

            return run_jobs(jobs, workers=n_workers, threads=threads, on_event=on_event)

    pre_done: dict[str, Any] = {}  # results of the jobs in `pre`, once they have run

    def announce(done: dict) -> None:
        """Print what the first jobs found or built: the classifier, the floor, each tokenizer."""
        clf = done["classifier"]
        console.print(f"classifier {clf['path']} ({'cached' if clf['reused'] else 'trained'}): "
                      f"{100 * clf['test_accuracy']:.1f}% on the test split")  # fmt: skip
        if done.get("fid-reference"):
            fl = done["fid-reference"]
            console.print(f"FID floor (real train vs real test) at n = {n}: {fl['fid_floor']:.2f} (reference: {fl['ref_n']} test images)")
        for tok_key in dict.fromkeys(order_tok.values()):
            t = done[f"tokenizer:{tok_key}"]
            psnr = "?" if t["psnr"] is None else f"{t['psnr']:.2f}"
            console.print(f"{'using the cached' if t['reused'] else 'trained the'} tokenizer [bold]{t['stem']}[/bold] for {tok_key} "
                          f"({t['steps']} steps, test PSNR {psnr} dB)")  # fmt: skip

    def run_jobs_for(runs: list[tuple[str, int, float, dict, Path, int]], label: str, score: bool) -> dict:
        """runs: (order, seed, lr, budget, run dir, points). One training job each, after its
        tokenizer (cost: the tokenizer's tokens per image, so the longest start first) and, with
        `score`, one scoring job after it, the classifier and the FID references. The first call
        also runs the jobs of `pre` in the same pool: training starts as soon as its tokenizer is
        ready, while the classifier and the references are still being built."""
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
                deps = (name, "classifier", *(("fid-reference",) if not no_fid else ())) if first else (name,)
                jobs.append(Job(f"score:{nm}:{seed}", cj.score_job, (spec, Result(name), dep("classifier")), deps=deps, cost=1.0))
        done = run_phase(jobs, label)
        if first:
            pre_done.update({j.name: done[j.name] for j in pre})
            announce(pre_done)
        return done

    # 2. the LR sweep
    sweep: dict[str, Any] = {}
    sweep_timings: dict[str, Any] = {}
    lr_by_order = {nm: lr or (GPU_LR if gpu else (order_objs[nm].cpu_lr or CPU_LR)) for nm in names}
    if tune_lr:
        lr_list = parse_csv(lrs, float)
        if len(lr_list) < 1 or any(v <= 0 for v in lr_list):
            raise UserError("--lrs needs positive learning rates")
        tune_budget = {k: (type(v)(v * tune_fraction) if k != "steps" else max(1, round(v * tune_fraction))) for k, v in budget.items()}
        runs = [(nm, seed_list[0], lr_, tune_budget, out / "tune" / f"{nm}-lr{lr_:g}", 0) for nm in names for lr_ in lr_list]
        got = run_jobs_for(runs, "LR sweep", score=False)
        for nm in names:
            scores = []
            for lr_ in lr_list:
                res = got[f"train:{nm}:{seed_list[0]}:{lr_:g}"]
                scores.append({"lr": lr_, "heldout_loss": res["result"]["heldout_loss"], "steps": res["result"]["steps"]})
                sweep_timings[f"{nm}-lr{lr_:g}"] = res["timings"]
                console.print(f"LR sweep {nm}: lr {lr_:g} -> held-out loss {scores[-1]['heldout_loss']:.4f}"
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
            console.print(f"{nm} seed {seed}: finished run found in {run_dir}, reusing it")
        res = {k: v for k, v in tr["result"].items() if k != "saved_points"}
        res["points"] = sc["points"]
        tim = {"train_seconds": tr["timings"]["train_seconds"], "branch_seconds": tr["timings"].get("branch_seconds", 0.0),
               "points": [{**a, **b} for a, b in zip(tr["timings"]["points"], sc["timings"])]}  # fmt: skip
        for p in sc["points"]:
            c = p["class_acc"]
            fid = f" · FID {p['fid']:.1f}" if "fid" in p else ""
            console.print(f"  {nm} seed {seed} step {p['step']}: held-out loss {p['heldout_loss']:.4f} · class acc "
                          f"{100 * c['acc']:.1f}% [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]{fid}", highlight=False)  # fmt: skip
        results.setdefault(nm, []).append(res)
        timings.setdefault(nm, []).append(tim)

    # 5. sampling speed (seed 0 of each order; load-dependent)
    from genorder.data import class_balanced_labels
    from genorder.runs import load_run
    from genorder.sampling import generate_images

    for nm in names:
        r = load_run(out / nm / f"seed{seed_list[0]}", dev)
        labels = class_balanced_labels(r.model.num_classes, 2 * r.model.num_classes)
        t0 = time.perf_counter()
        generate_images(r, labels, make_sampler(sections, **sampler_opts), seed=0, batch_size=len(labels))
        timings[nm][0]["sample_ms_per_image"] = 1000 * (time.perf_counter() - t0) / len(labels)
        results[nm][0]["gen_steps"] = r.order.num_steps(r.order.layout(r.tokenizer))

    rows = _summarise(names, results, floor)
    _print_table(rows, timings, depth, budget, dataset, dev, load_dependent, floor, n)
    png = side_by_side([str(out / nm / f"seed{seed_list[0]}" / "samples.png") for nm in names], names, out / "comparison.png")
    curves = _curves_png(names, results, timings, floor, out / "comparison_curves.png", depth, dataset, n)
    loss_png = line_plot(
        {f"{nm} s{r['seed']}": [(p["images"], p["heldout_loss"]) for p in r["points"]] for nm in names for r in results[nm]},
        out / "heldout_loss.png", f"held-out token loss ({held} test images), depth {depth}, {dataset}",
        "training images seen", "cross-entropy per token",
    )  # fmt: skip
    doc = {
        "orders": names, "dataset": dataset, "depth": depth, "budget": budget, "load_dependent_budget": load_dependent,
        "batch_size": batch_size, "lr": lr_by_order, "schedule": schedule, "cooldown": cooldown if schedule == "wsd" else None, "seeds": seed_list, "points": n_points, "device": dev.type,
        "threads": torch.get_num_threads(), "sampler": sampler_opts, "sections": sections, "image_size": image_size,
        "evaluation": {"n": n, "class_balanced": True, "ref_n": ref, "extractor": None if no_fid else extractor,
                       "fid_points": None if no_fid else fid_points,
                       "heldout_images": held, "heldout_split": "test[:heldout_images]"},
        "classifier": {"test_accuracy": clf_info["test_accuracy"], "dataset_hash": clf_info["dataset_hash"]},
        "fid_floor": floor,
        "tokenizers": tokenizers,
        "tokenizer_budget": {"steps": tok_steps, "minutes": tokenizer_minutes, **tok_train},
        "lr_sweep": sweep or None,
        "rows": rows,
        "runs": results,
    }  # fmt: skip
    write_json(out / "comparison.json", doc)
    write_json(out / "comparison_timings.json", {
        "note": "wall-clock seconds: they depend on the machine and its load, so they live apart from comparison.json",
        "total_seconds": time.perf_counter() - t_start, "runs": timings, "lr_sweep": sweep_timings,
        "classifier_reused": clf_info["reused"], "classifier_path": clf_info["path"],  # where it is cached: machine-specific
    })  # fmt: skip
    console.print(f"wrote {png}, {curves}, {loss_png}, {out / 'comparison.json'} and {out / 'comparison_timings.json'}")


def _summarise(names: list[str], results: dict[str, list[dict]], floor: dict | None) -> list[dict]:
    """One row per order: the final point averaged over seeds, the plateau test, the goals.

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


def _print_table(rows, timings, depth, budget, dataset, dev, load_dependent, floor, n) -> None:
    flag = " · WALL-CLOCK BUDGET: load-dependent" if load_dependent else ""
    t = Table(title=f"{len(rows)} orders, depth {depth}, budget {budget}{flag}, {dataset}, {dev} (mean over seeds)")
    cols = ["order", "params", "gen steps", "lr", "TFLOP", "held-out loss", "last 20%", "class acc [95%]"]
    if rows and "fid" in rows[0]:
        cols += [f"FID (floor {floor['fid_floor']:.1f})" if floor else "FID", "KID×10³", "prec", "recall"]
    cols += ["train s*", "ms/img*"]
    for c in cols:
        t.add_column(c, justify="left" if c == "order" else "right")
    for r in rows:
        per = r["class_acc_per_seed"]
        lo, hi = min(c["lo"] for c in per), max(c["hi"] for c in per)
        imp = r["last_20pct_improvement"]
        seeds = [v for v in r["last_20pct_improvement_per_seed"] if v is not None]
        span = f" ({100 * min(seeds):.1f}–{100 * max(seeds):.1f})" if len(seeds) > 1 else ""
        cells = [r["order"], f"{r['params'] / 1e6:.2f}M", str(r["gen_steps"]), f"{r['lr']:g}", f"{r['train_flops'] / 1e12:.2f}",
                 f"{r['heldout_loss']:.4f}", "—" if imp is None else f"{100 * imp:.1f}%{span}",
                 f"{100 * r['class_acc']:.1f}% [{100 * lo:.0f}, {100 * hi:.0f}]"]  # fmt: skip
        if "fid" in r:
            cells += [f"{r['fid']:.1f}" + (f" ({r['fid_over_floor']:.1f}x)" if "fid_over_floor" in r else ""),
                      f"{1e3 * r['kid_mean']:.1f}", f"{r['precision']:.2f}", f"{r['recall']:.2f}"]  # fmt: skip
        tim = timings[r["order"]]
        cells += [f"{sum(x['train_seconds'] for x in tim) / len(tim):.0f}", f"{tim[0].get('sample_ms_per_image', float('nan')):.1f}"]
        t.add_row(*cells)
    console.print(t)
    console.print(f"class acc: classifier accuracy on {n} class-balanced samples against the requested class, 95% bootstrap "
                  f"range over seeds; last 20%: relative improvement of the order's held-out loss curve (mean over "
                  f"seeds) over the last 20% of training, < 2% = flattened (the seeds' own range in brackets); "
                  f"* wall-clock, load-dependent", highlight=False)  # fmt: skip


def _curves_png(names, results, timings, floor, path: Path, depth: int, dataset: str, n: int) -> Path:
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
