"""`genorder compare`: the toolkit's main job, `genorder.experiments.compare` behind a command line.

This file parses options into a `CompareConfig`, calls `run_compare` and renders its progress and the
table with rich; the job graph, training and scoring are library code (genorder/experiments/).
Written to --out: comparison.json, comparison_timings.json, comparison.png, comparison_curves.png,
heldout_loss.png (see `genorder.experiments.compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from genorder.experiments.compare import CompareConfig, Event, run_compare
from genorder.data import set_holdout
from genorder_cli.app import app, console, guarded, parse_csv
from genorder_cli.common import HoldoutOpt

Opt = typer.Option


@app.command("compare")
@guarded
def compare(
    orders: Annotated[Optional[str], Opt(help="comma-separated orders to train and compare (default: the built-in ones; see `genorder plugins`)")] = None,
    regime: Annotated[Optional[str], Opt(help="the sizes, budgets, evaluation sizes and per-order learning rates: cpu, gpu (genorder/regimes/*.toml) or a TOML file of the same shape (default: gpu on a GPU, else cpu)")] = None,
    depth: Annotated[Optional[int], Opt(help="one depth for every order (default: the regime's: 2 on a CPU, at width 32·depth; 16 on a GPU, at the backbone's 64·depth; other widths: --set backbone.width=W)")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH, npz:PATH")] = "fashion-mnist",
    holdout: HoldoutOpt = None,
    steps: Annotated[Optional[int], Opt(help="budget: optimizer steps per order and seed (default 1000 CPU / 5000 GPU)")] = None,
    images: Annotated[Optional[int], Opt(help="budget: images seen per order and seed")] = None,
    flops: Annotated[Optional[float], Opt(help="budget: training FLOPs per order and seed")] = None,
    minutes: Annotated[Optional[float], Opt(help="budget: wall-clock minutes per order and seed (load-dependent: flagged in every table)")] = None,
    batch_size: Annotated[Optional[int], Opt(help="images per step (default 64 CPU / 128 GPU)")] = None,
    lr: Annotated[Optional[float], Opt(help="one peak lr for every order (default: the regime's rate for each order, found by its LR sweep ([lr.orders]); an order it has none for gets the regime's lr.default, with a notice)")] = None,
    tune_lr: Annotated[bool, Opt("--tune-lr", help="sweep --lrs per order first (seed 0, --tune-fraction of the budget), train each at its best held-out loss")] = False,
    lrs: Annotated[Optional[str], Opt(help="learning rates tried by --tune-lr (default: the regime's lr.tune)")] = None,
    tune_fraction: Annotated[float, Opt(help="budget of each --tune-lr run, as a fraction of the main budget")] = 0.5,
    tokenizer: Annotated[Optional[str], Opt(help="tokenizer preset or checkpoint for every order, or MULTI,SINGLE by order kind (default: the presets declared for each kind and the dataset's shape, see `genorder plugins`)")] = None,
    tokenizer_steps: Annotated[Optional[int], Opt(help="steps of each tokenizer trained first (default 300 CPU / 3000 GPU)")] = None,
    tokenizer_minutes: Annotated[Optional[float], Opt(help="cap in minutes on each tokenizer trained first (load-dependent; default none)")] = None,
    image_size: Annotated[Optional[int], Opt(help="train at this image size (the tokenizer must match, e.g. --set tokenizer.image_size=...)")] = None,
    seeds: Annotated[Optional[str], Opt(help="seeds per order, drawn as bands (default 0,1)")] = None,
    points: Annotated[Optional[int], Opt(help="evaluation points along training (default 5: the last 20% of training is then measured exactly)")] = None,
    schedule: Annotated[Optional[str], Opt(help="lr schedule (default: the regime's): wsd (warmup, flat, cool-down over the last 10% of a run, --set train.cooldown=F; every point but the last is the end of its own cool-down branch, so each point is what a run of that length ends with) or lin0 (VAR's decay over the whole run; points are the running weights)")] = None,
    n_eval: Annotated[Optional[int], Opt("--n", help="samples of the paired design per order and seed at every evaluation point but the last (the same labels i mod K and per-sample seeds for every order; default 500 CPU / 1000 GPU)")] = None,
    final_n: Annotated[Optional[int], Opt("--final-n", help="samples of the paired design per order and seed at the last point: class accuracy and, pooled over the seeds, the classifier-feature FD (default 2500 CPU / 5000 GPU)")] = None,
    fid_n: Annotated[Optional[int], Opt("--fid-n", help="samples of the Inception FID and its real-against-real floor (default 100 CPU / 1000 GPU)")] = None,
    ref_n: Annotated[Optional[int], Opt(help="test images of the FID reference (default 500 CPU / 10000 GPU)")] = None,
    extractor: Annotated[str, Opt(help="FID features: genorder-inception-fid, or genorder-tiny-random (smoke tests)")] = "genorder-inception-fid",
    no_fid: Annotated[bool, Opt("--no-fid", help="score class accuracy and held-out loss only")] = False,
    fid_points: Annotated[Optional[str], Opt(help="FID at every evaluation point (all) or at the last one only (last; the CPU default: Inception features of every point would more than double the job's time on a CPU); class accuracy and held-out loss are scored at every point either way")] = None,
    cfg: Annotated[float, Opt(help="CFG strength of every order's samples (0 = off)")] = 1.5,
    top_k: Annotated[int, Opt(help="top-k of every order's samples (0 = off)")] = 0,
    per_class: Annotated[int, Opt(help="samples per class in the grids")] = 6,
    out: Annotated[Path, Opt(help="folder for the runs, the PNGs and the JSON")] = Path("runs/compare"),
    workers: Annotated[Optional[int], Opt(help="worker processes that train and score runs side by side (default: one per CPU core, up to 8, on a CPU; one per GPU, each pinned to its device, on a GPU node); the results do not depend on it, only the wall-clock does")] = None,
    threads: Annotated[Optional[int], Opt(help="CPU threads for torch (default 1 on a CPU: several times faster on shared cores, and the same round-off on every machine); recorded")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    set_: Annotated[Optional[list[str]], Opt("--set", help="override: key.path=value (repeatable). A key the regime file defines sets the regime: every [lr] and [evaluation] key, backbone.depth, backbone.width_per_depth, train.steps, train.batch_size, train.schedule, train.cooldown, train.seeds, train.threads, tokenizer.steps, tokenizer.batch_size, tokenizer.lr, tokenizer.presets.KIND (e.g. lr.orders.ORDER=1e-2). Any other key under [order] [backbone] [train] [sampler] [tokenizer] goes to the component (e.g. backbone.width=96, train.warmup=0.05, tokenizer.vocab_size=256). Flags win over --set, --set over the regime file")] = None,
    fid_cache: Annotated[Optional[Path], Opt(help="FID reference cache (default $GENORDER_FID_CACHE or ~/.cache/genorder/fid)")] = None,
    classifier_cache: Annotated[Optional[Path], Opt(help="class-consistency classifier cache (default: FID_CACHE/classifiers)")] = None,
    force: Annotated[bool, Opt(help="run even when a CPU comparison is estimated at over an hour of training (the estimate is printed first)")] = False,
    estimate: Annotated[bool, Opt("--estimate/--no-estimate", help="time two training steps of each order first and print the estimated duration")] = True,
) -> None:
    """Train ORDERS under one deterministic budget at one depth, score them along training, and write
    comparison.json, comparison_curves.png and comparison.png.

    The work is `genorder.experiments.run_compare`; this command builds its config and renders.
    Ctrl-C stops it after a checkpoint; the same command run again continues every run from there."""
    set_holdout(holdout)
    config = CompareConfig.build(
        regime, set_, orders=parse_csv(orders) if orders is not None else None, depth=depth, steps=steps, images=images,
        flops=flops, minutes=minutes, batch_size=batch_size, lrs=parse_csv(lrs, float) if lrs is not None else None,
        tokenizer_steps=tokenizer_steps, seeds=parse_csv(seeds, int) if seeds is not None else None, points=points,
        schedule=schedule, n=n_eval, final_n=final_n, fid_n=fid_n, ref_n=ref_n, fid_points=fid_points, threads=threads, device=device,
        dataset=dataset, lr=lr, tune_lr=tune_lr, tune_fraction=tune_fraction, tokenizer=parse_csv(tokenizer),
        tokenizer_minutes=tokenizer_minutes, image_size=image_size, extractor=extractor, no_fid=no_fid, cfg=cfg,
        top_k=top_k, per_class=per_class, out=out, workers=workers, fid_cache=fid_cache, classifier_cache=classifier_cache,
        force=force, estimate=estimate,
    )  # fmt: skip
    with _Renderer() as render:
        result = run_compare(config, progress=render)
    _print_table(result.rows, result.timings, config.depth, config.budget, config.dataset, result.device,
                 config.load_dependent, result.floor, config.final_n, config.fid_n)  # fmt: skip
    if result.paired:
        _print_paired(result.rows, result.paired)
    written = result.write()
    console.print(f"wrote {', '.join(str(p) for p in written[:-2])}, {written[-2]} and {written[-1]}")


class _Renderer:
    """The progress callback: one bar per phase of jobs, a dim line per finished job, messages as lines."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=console, transient=True)  # fmt: skip
        self.bar = None

    def __enter__(self):
        self.prog.__enter__()
        return self

    def __exit__(self, *exc):
        return self.prog.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        if event.kind == "phase":
            if self.bar is not None:
                self.prog.remove_task(self.bar)
            self.bar = self.prog.add_task(event.name, total=event.total)
        elif event.kind == "done":
            if self.bar is not None:
                self.prog.advance(self.bar)
            console.print(f"  [dim]done {event.name} ({event.seconds:.0f} s)[/dim]", highlight=False)
        elif event.kind == "message":
            console.print(event.text, highlight=False, markup=False)


def _pct(iv: dict) -> str:
    return f"[{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"


def _print_table(rows, timings, depth, budget, dataset, dev, load_dependent, floor, n, fid_n) -> None:
    flag = " · WALL-CLOCK BUDGET: load-dependent" if load_dependent else ""
    t = Table(title=f"{len(rows)} orders, depth {depth}, budget {budget}{flag}, {dataset}, {dev} (mean over seeds)")
    cols = ["order", "params", "gen steps", "lr", "TFLOP", "held-out loss", "last 20%", "class acc [95%]"]
    if rows and "classifier_fd" in rows[0]:
        cols += ["classifier FD"]
    if rows and "fid" in rows[0]:
        cols += [f"FID (floor {floor['fid_floor']:.1f})" if floor else "FID", "KID×10³", "prec", "recall"]
    cols += ["train s*", "ms/img*"]
    for c in cols:
        t.add_column(c, justify="left" if c == "order" else "right")
    for r in rows:
        imp = r["last_20pct_improvement"]
        seeds = [v for v in r["last_20pct_improvement_per_seed"] if v is not None]
        span = f" ({100 * min(seeds):.1f}–{100 * max(seeds):.1f})" if len(seeds) > 1 else ""
        cells = [r["order"], f"{r['params'] / 1e6:.2f}M", str(r["gen_steps"]), f"{r['lr']:g}", f"{r['train_flops'] / 1e12:.2f}",
                 f"{r['heldout_loss']:.4f}", "—" if imp is None else f"{100 * imp:.1f}%{span}",
                 f"{100 * r['class_acc']:.1f}%" + (f" {_pct(r['class_acc_interval']['seeds'])}" if "class_acc_interval" in r else "")]  # fmt: skip
        if "classifier_fd" in r:
            fd = r["classifier_fd"]
            cells.append(f"{fd['fd']:.3g}" + (f" ({fd['over_floor']:.1f}x)" if fd.get("over_floor") is not None else ""))
        if "fid" in r:
            cells += [f"{r['fid']:.1f}" + (f" ({r['fid_over_floor']:.1f}x)" if "fid_over_floor" in r else ""),
                      f"{1e3 * r['kid_mean']:.1f}", f"{r['precision']:.2f}", f"{r['recall']:.2f}"]  # fmt: skip
        tim = timings[r["order"]]
        cells += [f"{sum(x['train_seconds'] for x in tim) / len(tim):.0f}", f"{tim[0].get('sample_ms_per_image', float('nan')):.1f}"]
        t.add_row(*cells)
    console.print(t)
    console.print(f"class acc: classifier accuracy on the paired design's {n} samples per seed at the last point (the same "
                  f"labels and per-sample seeds for every order) against the requested class, mean over seeds, with "
                  f"its two-level 95% interval (seeds × samples); classifier FD: Fréchet distance in the classifier's "
                  f"penultimate features of the seeds' samples pooled, against the test split (× its real-against-real "
                  f"floor at the same n); FID: Inception, at n = {fid_n}; last 20%: relative improvement of the order's "
                  f"held-out loss curve (mean over seeds) over the last 20% of training, < 2% = flattened (the seeds' "
                  f"own range in brackets); * wall-clock, load-dependent", highlight=False)  # fmt: skip


def _print_paired(rows, paired) -> None:
    """The intervals, the per-class accuracy and the pairwise tables and the lines that say how to read them."""
    t = Table(title="at the last point: both scopes of every interval (95%)")
    for c in ("order", "class acc", "seeds×samples", "samples only", "dominates", "classifier FD (pooled n)", "floor",
              "cFD prec", "cFD recall", "cFD per seed", "seeds×samples", "samples only", "dominates"):  # fmt: skip
        t.add_column(c, justify="left" if c == "order" else "right")
    floor = paired["classifier_fd_floor"]
    for r in rows:
        if "class_acc_interval" not in r:
            continue
        ci, fd = r["class_acc_interval"], r["classifier_fd"]
        ps = fd["per_seed"]

        def f3(iv: dict) -> str:
            return f"[{iv['lo']:.3g}, {iv['hi']:.3g}]"

        t.add_row(r["order"], f"{100 * ci['seeds']['estimate']:.1f}%", _pct(ci["seeds"]), _pct(ci["samples"]), ci["dominant"],
                  f"{fd['fd']:.3g} (n {fd['n']})", f"{floor['fd']:.3g}", f"{fd['precision']:.2f}" if "precision" in fd else "—",
                  f"{fd['recall']:.2f}" if "recall" in fd else "—", f"{ps['seeds']['estimate']:.3g} (n {ps['n']})",
                  f3(ps["seeds"]), f3(ps["samples"]), ps["dominant"])  # fmt: skip
    console.print(t)
    per = [r for r in rows if r.get("per_class_acc")]
    if per:
        k = len(per[0]["per_class_acc"])
        t = Table(title="per-class accuracy at the last point (%, mean over seeds)")
        t.add_column("order", justify="left")
        for c in range(k):
            t.add_column(str(c), justify="right")
        for r in per:
            t.add_row(r["order"], *("—" if c is None else f"{100 * c['acc']:.0f}" for c in r["per_class_acc"]))
        console.print(t)
    pairs = paired.get("pairwise", [])
    if not pairs:
        return
    t = Table(title=f"pairwise at the last point: A − B, paired on seed and sample ({paired['seeds']} seeds × "
                    f"{paired['n_per_seed']} samples)")  # fmt: skip
    for c in ("A − B", "metric", "A − B [95% seeds×samples]", "verdict for A", "MDD", "[95% samples]",
              "verdict | these models"):  # fmt: skip
        t.add_column(c, justify="left" if c in ("A − B", "metric", "verdict for A", "verdict | these models") else "right")
    for p in pairs:
        for metric, label, scale, fmt in (("class_acc", "class acc (pts)", 100.0, "{:+.1f}"),
                                          ("classifier_fd", "classifier FD", 1.0, "{:+.3g}")):  # fmt: skip
            a, b = p[metric]["seeds"], p[metric]["samples"]
            d, e = a["diff"], b["diff"]
            t.add_row(f"{p['a']} − {p['b']}", label,
                      f"{fmt.format(scale * d['estimate'])} [{fmt.format(scale * d['lo'])}, {fmt.format(scale * d['hi'])}]",
                      a["verdict"], f"{scale * a['mdd']:.3g}",
                      f"[{fmt.format(scale * e['lo'])}, {fmt.format(scale * e['hi'])}]", b["verdict"])  # fmt: skip
    console.print(t)
    console.print(f"verdict scope: {paired['note']}. MDD: the smallest true difference this design detects with 80% "
                  f"power at the 5% level, (t(df, 0.975) + t(df, 0.8)) × SE of the difference; classifier FD: lower "
                  f"is better, at the per-seed n.", highlight=False)  # fmt: skip
