"""`genorder train`, `genorder sample` and `genorder runs`."""

from __future__ import annotations

import json
import os
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from genorder.data import class_balanced_labels
from genorder.distributed import init_from_env, leave, world
from genorder.errors import UserError
from genorder.images import save_grid
from genorder.runs import list_runs, load_run
from genorder.trainer import resolve_device
from genorder.training_run import RunInterrupted, regime_defaults, train_run  # noqa: F401 - RunInterrupted: its exit code is 130
from genorder_cli.app import app, console, guarded, progress_bar
from genorder.data import set_holdout
from genorder_cli.common import (
    HoldoutOpt,
    ImageSizeOpt,
    ThreadsOpt,
    TokenizerOpt,
    layered,
    make_sampler,
    set_threads,
    with_tokenizer,
)

Opt = typer.Option


TRAIN_SECTIONS = ("order", "backbone", "train", "budget", "sampler", "tokenizer")



def resume_command(argv: list[str]) -> str | None:
    """The command line that resumes the run `argv` started: the same options plus --resume (None
    when this process was not started as `genorder`, e.g. inside a test runner)."""
    if not argv or Path(argv[0]).name not in ("genorder", "main.py", "__main__.py"):
        return None
    args = list(argv[1:])
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["genorder", *args])


@app.command("train")
@guarded
def train(
    order: Annotated[str, Opt(help="generation order, a registered name (see `genorder plugins`)")],
    depth: Annotated[Optional[int], Opt(help="backbone depth d (default: the regime's: 2 at width 32·d on a CPU, 16 at the backbone's 64·d on a GPU)")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH or npz:PATH")] = "fashion-mnist",
    holdout: HoldoutOpt = None,
    tokenizer: TokenizerOpt = None,
    image_size: ImageSizeOpt = None,
    tokenizer_steps: Annotated[Optional[int], Opt(help="steps when a tokenizer has to be trained first (default: the regime's tokenizer.steps, at its tokenizer.lr and batch, as compare trains it)")] = None,
    tokenizer_minutes: Annotated[Optional[float], Opt(help="cap, in minutes, on that tokenizer training")] = None,
    steps: Annotated[Optional[int], Opt(help="budget: optimizer steps (default: the regime's train.steps, when no budget is given)")] = None,
    images: Annotated[Optional[int], Opt(help="budget: training images seen")] = None,
    minutes: Annotated[Optional[float], Opt(help="budget: wall-clock minutes")] = None,
    flops: Annotated[Optional[float], Opt(help="budget: training FLOPs, e.g. 1e15")] = None,
    batch_size: Annotated[Optional[int], Opt(help="images per optimizer step (default: the regime's)")] = None,
    lr: Annotated[Optional[float], Opt(help="peak learning rate (default: the regime's rate for the order, else its lr.default, with a notice)")] = None,
    regime: Annotated[Optional[str], Opt(help="where the defaults (depth, width, batch, budget, schedule, lr per order) come from: cpu, gpu or a regime TOML (default: gpu on a GPU, else cpu); --config/--set and flags win over it")] = None,
    adaln: Annotated[Optional[bool], Opt("--adaln/--no-adaln", help="class-conditioned AdaLN (VAR) or plain LN")] = None,
    qk_norm: Annotated[Optional[bool], Opt("--qk-norm/--no-qk-norm", help="q/k L2-normalised attention")] = None,
    cfg: Annotated[Optional[float], Opt(help="CFG strength for the final sample grid")] = None,
    top_k: Annotated[Optional[int], Opt(help="top-k for the final sample grid")] = None,
    out: Annotated[Optional[Path], Opt(help="run directory (default runs/<order>-d<depth>)")] = None,
    resume: Annotated[bool, Opt(help="continue the run in --out")] = False,
    seed: Annotated[Optional[int], Opt(help="seed of data order, dropout and sampling")] = None,
    device: Annotated[Optional[str], Opt(help="auto, cpu, cuda, cuda:1")] = None,
    threads: ThreadsOpt = None,
    config: Annotated[Optional[Path], Opt(help="TOML with [order] [backbone] [train] [budget] [sampler] [tokenizer] sections")] = None,
    set_: Annotated[Optional[list[str]], Opt("--set", help="override: section.key=value, e.g. tokenizer.vocab_size=512 (repeatable)")] = None,
    checkpoint_every: Annotated[Optional[int], Opt(help="steps between checkpoints (default 200; also on Ctrl-C/SIGTERM and at the end)")] = None,
    parallel: Annotated[Optional[str], Opt(help="under torchrun: ddp (default) or fsdp (sharded, FSDP2; sharded DCP checkpoints)")] = None,
    fsdp_param_dtype: Annotated[Optional[str], Opt(help="fsdp: dtype of the gathered weights, fp32 or bf16")] = None,
    fsdp_reduce_dtype: Annotated[Optional[str], Opt(help="fsdp: dtype of the gradient reductions, fp32 or bf16")] = None,
    activation_checkpointing: Annotated[Optional[bool], Opt("--activation-checkpointing/--no-activation-checkpointing", help="recompute each block's activations in the backward")] = None,
    force: Annotated[bool, Opt(help="run even when a CPU run is estimated at over an hour (the estimate is printed before training)")] = False,
) -> None:
    """Train one order under a budget; writes checkpoints, log.jsonl, samples.png and summary.json.

    Ctrl-C (or SIGTERM) writes a checkpoint and prints the command that resumes the run."""
    set_threads(threads)
    set_holdout(holdout)
    sections = layered(config, set_, allowed=TRAIN_SECTIONS)
    dev = resolve_device(device or sections.get("train", {}).get("device", "auto"))
    defaults = regime_defaults(order, regime, dev.type, sections, depth=depth, batch_size=batch_size, lr=lr)
    budget = {"steps": steps, "images": images, "minutes": minutes, "flops": flops}
    if all(v is None for v in budget.values()) and not sections.get("budget") and not sections.get("train", {}).get("budget"):
        budget["steps"] = defaults.steps
    d = defaults.depth
    out = out or Path("runs") / f"{order}-d{d}"
    if defaults.notice:
        console.print(defaults.notice, highlight=False, markup=False)
    stack = ExitStack()
    try:
        summary = train_run(
            order, out, dataset_spec=dataset, tokenizer_spec=tokenizer,
            tokenizer_steps=tokenizer_steps if tokenizer_steps is not None else defaults.tokenizer_steps,
            tokenizer_minutes=tokenizer_minutes, tokenizer_train_opts=defaults.tokenizer_train, depth=d,
            budget=budget, sections=sections, backbone_opts={"adaln": adaln, "qk_norm": qk_norm, **defaults.backbone_opts},
            train_opts={"batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
                        "checkpoint_every": checkpoint_every, **defaults.train_opts,
                        "parallel": _parallel_opts(sections, parallel, fsdp_param_dtype, fsdp_reduce_dtype,
                                                   activation_checkpointing)},
            sampler_opts={"cfg": cfg, "top_k": top_k}, resume=resume, image_size=image_size,
            resume_hint=resume_command(sys.argv), force=force, **_renderers(stack),
        )
    except BaseException:
        stack.close()
        leave(wait=False)  # torchrun: an error ends this rank at once (the launcher stops the others)
        raise
    stack.close()
    main = world().main
    leave()  # torchrun: every rank waits for rank 0's grid and summary, then the group closes
    if summary.get("sample_grid_error") and main:
        console.print(f"[yellow]note:[/yellow] this run's sample grid failed: {escape(summary['sample_grid_error'])} "
                      f"(once fixed, draw it with `genorder sample --run {escape(str(out))}`)")
    if not main or summary.get("already_complete"):
        return
    s = summary["spent"]
    console.print(
        f"done ({summary['stopped_by']}): {s['steps']} steps, {s['images']:,} images, {s['tokens']:,} tokens, "
        f"{s['flops'] / 1e12:.2f} TFLOP, {s['seconds']:.0f} s · loss {summary['last'].get('loss', float('nan')):.3f} "
        f"· grid {out / 'samples.png'}"
    )


def _parallel_opts(sections: dict, mode, param_dtype, reduce_dtype, checkpointing) -> dict | None:
    """train.parallel from `[train.parallel]` in the config and the CLI options (None: unset)."""
    given = {"mode": mode, "param_dtype": param_dtype, "reduce_dtype": reduce_dtype,
             "activation_checkpointing": checkpointing}  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    base = sections.get("train", {}).get("parallel")
    return {**(base if isinstance(base, dict) else {}), **given}


def _renderers(stack: ExitStack) -> dict:
    """`train_run`'s callbacks drawn with rich: its notes as lines, one bar per stage."""
    bars: dict[str, object] = {}

    def on_progress(stage: str, done: float, total: float | None, info: str) -> None:
        n = None if total is None else int(total)  # a tokenizer trained for images or minutes: no known total
        if stage not in bars:
            for old in list(bars):  # one stage at a time: the previous bar ends where the next begins
                stack.close()
                bars.pop(old)
            bars[stage] = stack.enter_context(progress_bar(stage, total=n))
        bars[stage](int(done), n, info=info)

    return {"on_message": lambda text: console.print(text, highlight=False, markup=False), "on_progress": on_progress}


@app.command("sample")
@guarded
def sample(
    run: Annotated[Path, Opt("--run", "--run-dir", help="run directory written by `genorder train` (under torchrun write --run-dir: torchrun's parser takes --run for its --run-path)")],
    out: Annotated[Optional[Path], Opt(help="PNG path (default RUN/samples-seed<seed>.png)")] = None,
    per_class: Annotated[int, Opt(help="images per class (one row per class)")] = 8,
    cfg: Annotated[Optional[float], Opt(help="CFG strength t_max (0 = off)")] = None,
    cfg_schedule: Annotated[Optional[str], Opt(help="linear (VAR ramp) or constant")] = None,
    top_k: Annotated[Optional[int], Opt(help="top-k (0 = off)")] = None,
    top_p: Annotated[Optional[float], Opt(help="top-p (0 = off)")] = None,
    temperature: Annotated[Optional[float], Opt(help="softmax temperature")] = None,
    more_smooth: Annotated[Optional[bool], Opt("--more-smooth/--no-more-smooth", help="VAR's Gumbel soft codes")] = None,
    seed: Annotated[int, Opt(help="sampling seed")] = 0,
    batch_size: Annotated[int, Opt(help="images per chunk: chunk [s, s+B) is one batch seeded by (seed, s); part of the recipe")] = 50,
    device: Annotated[str, Opt(help="auto, cpu, cuda (under torchrun: each process its own GPU)")] = "auto",
    npz: Annotated[Optional[Path], Opt(help="also save the images as an ADM-format .npz: arr_0 uint8 (N, H, W, 3), arr_1 labels")] = None,
    tokenizer: Annotated[Optional[str], Opt(help="decode with this tokenizer checkpoint or folder instead of the run's copy (same scales and V)")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Write a class-conditional sample grid (one row per class) from a trained run.

    Under torchrun the chunks are split over the processes and rank 0 writes the files; every
    image depends on (seed, its index, --batch-size) only, so any number of processes gives the
    same .npz byte for byte. The grid shows at most 16 images of at most 64 classes."""
    set_threads(threads)
    if per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {per_class}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    for target, flag in ((out, "--out"), (npz, "--npz")):
        if target is not None:
            _check_writable_file(target, flag)
    sampler = make_sampler({}, cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p,
                           temperature=temperature, more_smooth=more_smooth)
    dev = resolve_device(device)
    w = init_from_env(dev.type)
    try:
        if w.size > 1 and dev.type == "cuda":
            dev = torch.device("cuda", w.local_rank)
        path = _sample_files(run, out, per_class, sampler, seed, batch_size, dev, npz, tokenizer, w)
    except BaseException:
        leave(wait=False)
        raise
    leave()
    if w.main:
        console.print(f"wrote {path}" + (f" and {npz}" if npz else ""))


def _sample_files(run, out, per_class, sampler, seed, batch_size, dev, npz, tokenizer, w) -> Path:
    from genorder.adm import write_samples
    from genorder.sampling import gather_to_main, generate_indexed

    r = with_tokenizer(load_run(run, dev), tokenizer, dev)
    k = r.model.num_classes
    labels = class_balanced_labels(k, k * per_class)
    with progress_bar(f"sample {r.order_name}", disable=not w.main) as update:
        idx, mine = generate_indexed(r, labels, sampler, seed=seed, chunk=batch_size, rank=w.rank,
                                     world_size=w.size, progress=lambda d, t: update(d, t))  # fmt: skip
    path = out or run / f"samples-seed{seed}.png"
    images = gather_to_main(idx, mine, len(labels), npz or path, w.rank, w.size)
    if not w.main:
        return path
    if npz:
        write_samples(npz, images.numpy(), labels.numpy())
    show, rows = min(per_class, 16), min(k, 64)  # labels are sorted: class c holds [c·per_class, (c+1)·per_class)
    pick = torch.cat([torch.arange(c * per_class, c * per_class + show) for c in range(rows)])
    save_grid(images[pick].float() / 127.5 - 1, path, nrow=show, scale=2, labels_left=r.class_names[:rows])
    return path


def _check_writable_file(path: Path, flag: str) -> None:
    """A file `path` can be written: its folder exists (or can be made) and is writable."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, so {path} cannot be written")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path} is not writable")


@app.command("runs")
@guarded
def runs(root: Annotated[Path, typer.Argument(help="a run directory or a folder of runs")] = Path("runs")) -> None:
    """Show runs side by side: what each budget bought (images, tokens, steps, FLOPs, wall-clock)."""
    from genorder.checkpoint import read_meta

    paths = list_runs(root)
    if not paths:
        raise UserError(f"no runs under {root}")
    t = Table(title=f"runs in {root}")
    for col in ("run", "order", "depth", "params", "steps", "images", "tokens", "TFLOP", "seconds", "loss", "stopped by"):
        t.add_column(col, justify="right" if col not in ("run", "order", "stopped by") else "left")
    for p in paths:
        m = read_meta(p / "model")
        summ = {}
        if (p / "summary.json").exists():
            try:
                summ = json.loads((p / "summary.json").read_text())
            except (OSError, json.JSONDecodeError):
                summ = {}
        try:
            s = m.get("spent") or {}
            last = summ.get("last") or {}
            t.add_row(p.name, m["order"]["name"], str(m["backbone"]["depth"]), f"{m['params'] / 1e6:.2f}M",
                      str(s.get("steps", "")), f"{s.get('images', 0):,}", f"{s.get('tokens', 0):,}",
                      f"{s.get('flops', 0) / 1e12:.2f}", f"{s.get('seconds', 0):.0f}",
                      f"{last.get('loss', float('nan')):.3f}", str(summ.get("stopped_by", "")))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            t.add_row(p.name, "?", *[""] * 8, "model.json unreadable (edited?)")
    console.print(t)


