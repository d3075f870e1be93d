"""`genorder train`, `genorder sample` and `genorder runs`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from genorder.budget import Budget, BudgetTracker, Spent
from genorder.checkpoint import read_meta
from genorder.config import build_config
from genorder.data import class_balanced_labels, load_dataset
from genorder.distributed import init_from_env, leave, world
from genorder.errors import UserError
from genorder.images import save_grid
from genorder.lock import RunLock
from genorder.model import BackboneConfig, build_model, check_trainable_on, count_params
from genorder.registry import registry
from genorder.runs import (
    CHECKPOINTS,
    absolute_dataset_spec,
    clean_run,
    copy_checkpoint,
    enclosing_run,
    identity_diff,
    latest_checkpoint,
    list_runs,
    load_run,
    load_tokenizer,
    run_identity,
    run_meta,
    short_hash,
    tokenizer_hash,
    write_json,
)
from genorder.sample_grid import write_sample_grid
from genorder.trainer import Trainer, TrainConfig, resolve_device
from genorder_cli.app import app, console, guarded, progress_bar
from genorder_cli.common import (
    ImageSizeOpt,
    ThreadsOpt,
    TokenizerOpt,
    generate_with_bar,
    layered,
    make_sampler,
    resolve_tokenizer,
    set_threads,
    with_tokenizer,
)

Opt = typer.Option


TRAIN_SECTIONS = ("order", "backbone", "train", "budget", "sampler", "tokenizer")


def _check_out_dir(out: Path) -> None:
    """`--out` must be a folder, or creatable as one: a clear error before anything is written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is a file, so no folder can be made under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {parent} is not writable")


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While training: the first SIGINT/SIGTERM asks the trainer to checkpoint and stop (a second
    one interrupts at once, which the atomic checkpoints make safe). Yields `should_stop`."""
    hit: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        hit.append(signum)
        for sig, prev in old.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)

    for sig in old:
        signal.signal(sig, handler)
    try:
        yield lambda: bool(hit)
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev)


class RunInterrupted(UserError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; exit 130 (the shell's code)."""

    exit_code = 130


def train_run(
    order_name: str,
    out: Path,
    *,
    dataset_spec: str = "fashion-mnist",
    tokenizer_spec: str | None = None,
    tokenizer_steps: int = 300,
    tokenizer_minutes: float | None = None,
    depth: int | None = None,
    budget: dict | None = None,
    sections: dict | None = None,
    backbone_opts: dict | None = None,
    train_opts: dict | None = None,
    order_opts: dict | None = None,
    sampler_opts: dict | None = None,
    resume: bool = False,
    samples_per_class: int = 8,
    quiet: bool = False,
    image_size: int | None = None,
    resume_hint: str | None = None,
    on_step=None,
) -> dict:
    """Build everything from options, train under the budget, write the run directory. Used by
    `train`, and by `compare`/`ablate` for every row, so all rows go through the same code.

    Everything is validated before the first write: options, dataset, tokenizer and, on `resume`,
    the run's identity (tokenizer hash, order, backbone, train config, dataset hash) against its
    latest verified checkpoint. One process at a time may write `out` (`RunLock`).
    `on_step(trainer, metrics)`, when given, runs after every optimizer step (compare evaluates
    checkpoints along training with it)."""
    sections = sections or {}
    registry("orders").get(order_name)
    device = resolve_device((train_opts or {}).get("device") or sections.get("train", {}).get("device", "auto"))
    on_gpu = device.type == "cuda"
    w = init_from_env(device.type)  # torchrun: join the process group (no-op in one process)
    if w.size > 1 and on_gpu:
        device = torch.device("cuda", w.local_rank)
    quiet = quiet or not w.main
    if depth is None and "depth" not in sections.get("backbone", {}) and (backbone_opts or {}).get("depth") is None:
        depth = 16 if on_gpu else 4
    order = registry("orders").create(order_name, {**sections.get("order", {}), **(order_opts or {})})
    bb = build_config(BackboneConfig, sections.get("backbone"), {"depth": depth, **(backbone_opts or {})}, section="backbone")
    check_trainable_on(bb, device)  # e.g. FlexAttention on a CPU: refused before anything is written
    train_section = dict(sections.get("train", {}))
    nested_budget = train_section.pop("budget", None)
    if nested_budget is not None and not isinstance(nested_budget, dict):
        raise UserError("train.budget must be a table of steps, images, minutes, flops")
    bud = build_config(Budget, sections.get("budget"), nested_budget, budget or {}, section="budget")
    tcfg = build_config(TrainConfig, train_section, {**(train_opts or {}), "budget": bud}, section="train")
    sampler = make_sampler(sections, **(sampler_opts or {}))
    tok_opts = {k: v for k, v in sections.get("tokenizer", {}).items() if k != "name"}
    tokenizer_spec = tokenizer_spec or sections.get("tokenizer", {}).get("name")
    _check_out_dir(out)
    if (inside := enclosing_run(out)) is not None:
        raise UserError(f"--out {out} is inside the run {inside}; choose a folder outside any run")
    lock = RunLock(out)
    if w.main and out.is_dir():
        lock.acquire()  # a second writer stops here, named by PID, before reading or writing anything
    try:
        has_run = (out / "model.json").exists()
        if resume and not has_run:
            raise UserError(f"--resume: {out} has no checkpoint to resume from; start it without --resume")
        if not resume and has_run:
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return _train_locked(
            order_name, order, out, lock, w, device, bb, bud, tcfg, sampler, dataset_spec=dataset_spec,
            tokenizer_spec=tokenizer_spec, tokenizer_steps=tokenizer_steps, tokenizer_minutes=tokenizer_minutes,
            resume=resume, samples_per_class=samples_per_class, quiet=quiet, resume_hint=resume_hint,
            image_size=image_size, tokenizer_options=tok_opts, on_step=on_step,
        )  # fmt: skip
    finally:
        lock.release()


def _train_locked(order_name, order, out: Path, lock: RunLock, w, device, bb, bud, tcfg, sampler, *, dataset_spec,
                  tokenizer_spec, tokenizer_steps, tokenizer_minutes, resume, samples_per_class, quiet,
                  resume_hint, image_size=None, tokenizer_options=None, on_step=None) -> dict:  # fmt: skip
    ds = load_dataset(dataset_spec, "train", image_size=image_size)
    given_spec, dataset_spec = dataset_spec, absolute_dataset_spec(dataset_spec)  # runs record the absolute one
    found = None
    if resume:
        found = latest_checkpoint(out)
        if found is None:
            raise UserError(f"--resume: {out} has model.json but no checkpoint set (checkpoints/step-N); it cannot be resumed")
        recorded = read_meta(found[0] / "model")
        ident = recorded.get("identity")
        if not (isinstance(ident, dict) and isinstance(ident.get("tokenizer"), dict) and isinstance(recorded.get("spent"), dict)):
            raise UserError(f"--resume: {found[0]}/model.json records no usable run identity; it cannot be checked, so it is not resumed")
        tokenizer, tok_name = load_tokenizer(out / "tokenizer", device)
        tok_stem = out / "tokenizer"
        if tokenizer_hash(tokenizer) != ident["tokenizer"].get("hash"):
            raise UserError(
                f"--resume: {out}/tokenizer.safetensors is not the tokenizer the run was trained with "
                "(its content hash differs from model.json's); restore the run's copy"
            )
        if tokenizer_spec is not None:
            given, _ = resolve_tokenizer(tokenizer_spec, order, given_spec, ds, device, tokenizer_steps,
                                         tokenizer_minutes, may_train=False)  # fmt: skip
            if tokenizer_hash(given) != tokenizer_hash(tokenizer):
                raise UserError(
                    f"--resume: --tokenizer {tokenizer_spec} is not the tokenizer {out} was trained with "
                    f"(hash {short_hash(tokenizer_hash(given))}, the run's {short_hash(tokenizer_hash(tokenizer))}); "
                    "the run is left as it was"
                )
    else:
        tokenizer, tok_stem = resolve_tokenizer(
            tokenizer_spec, order, given_spec, ds, device, tokenizer_steps, tokenizer_minutes, may_train=w.size == 1,
            options=tokenizer_options,
        )
        tok_name = read_meta(tok_stem).get("name", "?")
    if tokenizer.channels != ds.channels or tokenizer.image_size != ds.image_size:
        raise UserError(
            f"tokenizer expects {tokenizer.channels}x{tokenizer.image_size}px images, dataset {dataset_spec} has "
            f"{ds.channels}x{ds.image_size}px; pass --image-size {tokenizer.image_size} to resize the dataset"
        )
    identity = run_identity(order_name, order, bb, tcfg, tok_name, tokenizer, dataset_spec, ds)
    if found is not None:
        recorded = read_meta(found[0] / "model")
        diff = identity_diff(recorded["identity"], identity)
        if diff:
            raise UserError("\n".join([f"--resume: {out} was trained with other settings; the run is left as it was:", *diff]))
        try:
            spent = Spent(**recorded["spent"])
        except TypeError:
            raise UserError(f"--resume: {found[0]}/model.json has a malformed `spent` record") from None
        finished = BudgetTracker(bud, spent).exhausted()
        if finished is not None and (out / "summary.json").is_file():
            if not quiet:
                console.print(f"{out}: already complete ({finished} budget spent: {spent.steps} steps); nothing to do")
            summary = json.loads((out / "summary.json").read_text())
            return {**summary, "already_complete": True}
        # budget spent but no summary: the last run was stopped after its final checkpoint, while
        # drawing the grid; finish that part below without training
    else:
        finished = None
    torch.manual_seed(tcfg.seed)  # the initialisation depends on the seed alone (and is the same on every rank)
    try:
        model = build_model(order, tokenizer, bb, ds.num_classes)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"cannot build the model: {err}") from None
    meta = run_meta(order_name, order, bb, model, dataset=dataset_spec, class_names=ds.class_names,
                    image_size=ds.image_size, tokenizer_source=str(tok_stem),
                    layout=list(order.layout(tokenizer).scales), identity=identity)
    if w.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--out {out}: cannot create the run directory: {err.strerror}") from None
        lock.acquire()
        clean_run(out)
        if not resume:  # a fresh run: nothing stale (a log or checkpoints of a run killed before its first save)
            for stale in ("log.jsonl", "summary.json", "samples.png"):
                (out / stale).unlink(missing_ok=True)
            if (out / CHECKPOINTS).is_dir():
                shutil.rmtree(out / CHECKPOINTS)
            copy_checkpoint(tok_stem, out / "tokenizer")
    trainer = Trainer(order, tokenizer, model, ds, tcfg, out, meta)
    if resume:
        trainer.resume()
    if not quiet:
        console.print(
            f"[bold]{order_name}[/bold] d{bb.depth} C={bb.C} · {count_params(model):,} params · "
            f"{trainer.flops_per_sample / 1e9:.2f} GFLOP/img (train) · device {device} · budget {bud.model_dump(exclude_none=True)}"
            + (f" · resumed at step {trainer.tracker.spent.steps}" if resume else "")
        )
    if finished is not None:
        if not w.main:
            return {"stopped_by": finished, "spent": trainer.tracker.spent.as_dict(), "last": {}}
        summary = {"stopped_by": finished, "spent": trainer.tracker.spent.as_dict(), "last": _last_log_record(out)}
    else:
        with _stop_on_signals() as should_stop:
            if not w.main:  # other torchrun processes: train, then leave the grid and summary to rank 0
                return trainer.fit(should_stop=should_stop)
            with progress_bar(f"train {order_name}", total=1000, disable=quiet) as update:
                def step_done(f: float, m: dict) -> None:
                    update(int(f * 1000), info=f"loss {m['loss']:.3f} acc {m['acc']:.3f}")
                    if on_step is not None:
                        on_step(trainer, m)

                summary = trainer.fit(progress=step_done, should_stop=should_stop)
    if summary["stopped_by"] == "interrupted":
        how = f"resume with: {resume_hint}" if resume_hint else "rerun the same command to resume"
        raise RunInterrupted(
            f"interrupted at step {trainer.tracker.spent.steps}: checkpoint saved in {out}; {how}"
        )
    # the sample grid every run ends with: one row per class
    from genorder.runs import Run

    run = Run(out, order, order_name, tokenizer, model.eval(), meta)
    grid_error = None
    if samples_per_class > 0:  # 0: no grid (library callers that sample elsewhere)
        with progress_bar("sample grid", disable=quiet) as update:
            grid_error = write_sample_grid(run, ds.class_names, sampler, tcfg.seed, samples_per_class,
                                           out / "samples.png", progress=lambda d, t: update(d, t))  # fmt: skip
    summary.update({"order": order_name, "params": count_params(model), "depth": bb.depth,
                    "train_flops_per_image": trainer.flops_per_sample, "dataset": dataset_spec,
                    "sampler": sampler.config.model_dump(), **({"sample_grid_error": grid_error} if grid_error else {})})
    write_json(out / "summary.json", summary)
    if grid_error:  # the run is complete and saved (a --resume finds it so); the grid is what failed
        raise UserError(f"{grid_error}; the trained run is saved in {out} (summary.json), without samples.png")
    return summary


def _last_log_record(out: Path) -> dict:
    last: dict = {}
    if (out / "log.jsonl").is_file():
        for line in (out / "log.jsonl").read_text(errors="replace").splitlines():
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
    return last


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
    depth: Annotated[Optional[int], Opt(help="backbone depth d (width 64·d, d heads); default 16 on a GPU, 4 on a CPU")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH or npz:PATH")] = "fashion-mnist",
    tokenizer: TokenizerOpt = None,
    image_size: ImageSizeOpt = None,
    tokenizer_steps: Annotated[int, Opt(help="steps when a tokenizer has to be trained first")] = 300,
    tokenizer_minutes: Annotated[Optional[float], Opt(help="cap, in minutes, on that tokenizer training")] = None,
    steps: Annotated[Optional[int], Opt(help="budget: optimizer steps")] = None,
    images: Annotated[Optional[int], Opt(help="budget: training images seen")] = None,
    minutes: Annotated[Optional[float], Opt(help="budget: wall-clock minutes")] = None,
    flops: Annotated[Optional[float], Opt(help="budget: training FLOPs, e.g. 1e15")] = None,
    batch_size: Annotated[Optional[int], Opt(help="images per optimizer step (default 64)")] = None,
    lr: Annotated[Optional[float], Opt(help="peak learning rate (default 1e-4·batch/256)")] = None,
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
) -> None:
    """Train one order under a budget; writes checkpoints, log.jsonl, samples.png and summary.json.

    Ctrl-C (or SIGTERM) writes a checkpoint and prints the command that resumes the run."""
    set_threads(threads)
    sections = layered(config, set_, allowed=TRAIN_SECTIONS)
    budget = {"steps": steps, "images": images, "minutes": minutes, "flops": flops}
    if all(v is None for v in budget.values()) and not sections.get("budget") and not sections.get("train", {}).get("budget"):
        budget["steps"] = 300
    d = depth if depth is not None else sections.get("backbone", {}).get("depth")
    dev = resolve_device(device or sections.get("train", {}).get("device", "auto"))
    shown_depth = d if d is not None else (16 if dev.type == "cuda" else 4)
    out = out or Path("runs") / f"{order}-d{shown_depth}"
    try:
        summary = train_run(
            order, out, dataset_spec=dataset, tokenizer_spec=tokenizer, tokenizer_steps=tokenizer_steps,
            tokenizer_minutes=tokenizer_minutes, depth=d,
            budget=budget, sections=sections, backbone_opts={"adaln": adaln, "qk_norm": qk_norm},
            train_opts={"batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
                        "checkpoint_every": checkpoint_every},
            sampler_opts={"cfg": cfg, "top_k": top_k}, resume=resume, image_size=image_size,
            resume_hint=resume_command(sys.argv),
        )
    except BaseException:
        leave(wait=False)  # torchrun: an error ends this rank at once (the launcher stops the others)
        raise
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


@app.command("sample")
@guarded
def sample(
    run: Annotated[Path, Opt(help="run directory written by `genorder train`")],
    out: Annotated[Optional[Path], Opt(help="PNG path (default RUN/samples-seed<seed>.png)")] = None,
    per_class: Annotated[int, Opt(help="images per class (one row per class)")] = 8,
    cfg: Annotated[Optional[float], Opt(help="CFG strength t_max (0 = off)")] = None,
    cfg_schedule: Annotated[Optional[str], Opt(help="linear (VAR ramp) or constant")] = None,
    top_k: Annotated[Optional[int], Opt(help="top-k (0 = off)")] = None,
    top_p: Annotated[Optional[float], Opt(help="top-p (0 = off)")] = None,
    temperature: Annotated[Optional[float], Opt(help="softmax temperature")] = None,
    more_smooth: Annotated[Optional[bool], Opt("--more-smooth/--no-more-smooth", help="VAR's Gumbel soft codes")] = None,
    seed: Annotated[int, Opt(help="sampling seed")] = 0,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    npz: Annotated[Optional[Path], Opt(help="also save the images as uint8 .npz (for FID elsewhere)")] = None,
    tokenizer: Annotated[Optional[str], Opt(help="decode with this tokenizer checkpoint or folder instead of the run's copy (same scales and V)")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Write a class-conditional sample grid (one row per class) from a trained run."""
    set_threads(threads)
    if per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {per_class}")
    for target, flag in ((out, "--out"), (npz, "--npz")):
        if target is not None:
            _check_writable_file(target, flag)
    sampler = make_sampler({}, cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p,
                           temperature=temperature, more_smooth=more_smooth)
    r = with_tokenizer(load_run(run, resolve_device(device)), tokenizer, resolve_device(device))
    labels = class_balanced_labels(r.model.num_classes, r.model.num_classes * per_class)
    images = generate_with_bar(r, labels, sampler, seed=seed, batch_size=64, title=f"sample {r.order_name}")
    path = out or run / f"samples-seed{seed}.png"
    save_grid(images, path, nrow=per_class, scale=2, labels_left=r.class_names)
    if npz:
        import numpy as np

        from genorder.images import to_uint8

        from genorder.checkpoint import save_npz

        save_npz(npz, compressed=True, images=to_uint8(images).numpy(), labels=labels.numpy())
    console.print(f"wrote {path}")


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


