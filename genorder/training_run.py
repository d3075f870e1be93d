"""One training run from options: what `genorder train` does, and what `compare`, `ablate` and
`scale` do for every run, so every row goes through the same code.

`train_run` validates everything before the first write, trains under the budget and writes the run
directory (checkpoints, log.jsonl, TensorBoard events when tensorboard is installed, samples.png,
summary.json). It prints nothing: `on_message(text)` gets its one-line notes and
`on_progress(stage, done, total, info)` its progress ("train": thousandths of the budget; "sample
grid": images), so a CLI can draw bars and a notebook can ignore them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from genorder.budget import Budget, BudgetTracker, Spent
from genorder.checkpoint import read_meta
from genorder.config import build_config
from genorder.data import load_dataset
from genorder.distributed import init_from_env
from genorder.errors import UserError
from genorder.estimate import budget_steps, estimate_and_check
from genorder.lock import RunLock
from genorder.model import BackboneConfig, build_model, check_trainable_on, count_params
from genorder.registry import registry
from genorder.sample_grid import write_sample_grid
from genorder.outdir import RUN, check_out
from genorder.runs import (
    absolute_dataset_spec,
    clean_run,
    copy_checkpoint,
    enclosing_run,
    identity_diff,
    latest_checkpoint,
    load_tokenizer,
    reset_run,
    run_identity,
    run_meta,
    run_started,
    short_hash,
    sync_published,
    tokenizer_hash,
    write_json,
)
from genorder.sampler import Sampler
from genorder.trainer import TrainConfig, Trainer, resolve_device

OnMessage = Callable[[str], None]
OnProgress = Callable[[str, float, float, str], None]  # (stage, done, total, info)


def make_sampler(sections: dict, **cli) -> Sampler:
    """The sampler of `[sampler]` (its `name`, default "standard") with `cli` options on top."""
    opts = dict(sections.get("sampler", {}))
    name = opts.pop("name", "standard")
    cfg = build_config(registry("samplers").config_class(name), opts, cli, section="sampler")
    return registry("samplers").get(name)(cfg)


def tokenizer_stem(spec: str | Path) -> Path:
    """A tokenizer checkpoint named by a file (.safetensors/.json), its stem, or a folder holding
    `tokenizer.safetensors` (a `train-tokenizer` output or a run folder) -> the checkpoint stem."""
    p = Path(spec)
    if p.is_dir():
        if not (p / "tokenizer.safetensors").is_file():
            raise UserError(f"{p} holds no tokenizer.safetensors (expected a run or tokenizer folder)")
        return p / "tokenizer"
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def is_checkpoint_spec(spec: str) -> bool:
    p = Path(spec)
    return p.exists() or Path(spec + ".safetensors").exists() or p.suffix in (".json", ".safetensors")


def _resolve_tokenizer(*args, **kwargs):
    # tokenizer presets are trained (or found in the content-keyed cache) by genorder.tokenizer_run,
    # imported lazily: it imports this module
    from genorder.tokenizer_run import resolve_tokenizer

    return resolve_tokenizer(*args, **kwargs)


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
    tokenizer_train_opts: dict | None = None,
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
    force: bool = False,
    on_message: OnMessage | None = None,
    on_progress: OnProgress | None = None,
) -> dict:
    """Build everything from options, train under the budget, write the run directory. Used by
    `train`, and by `compare`/`ablate` for every row, so all rows go through the same code.

    Everything is validated before the first write: options, dataset, tokenizer and, on `resume`,
    the run's identity (tokenizer hash, order, backbone, train config, dataset hash) against its
    latest verified checkpoint. One process at a time may write `out` (`RunLock`).
    `on_step(trainer, metrics)`, when given, runs after every optimizer step (compare evaluates
    checkpoints along training with it). `on_message` / `on_progress`: see the module's doc (neither
    is called with `quiet`)."""
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
    check_out(out, RUN)  # an existing --out that is not a run of ours: refused, nothing written
    lock = RunLock(out)
    if w.main and out.is_dir():
        lock.acquire()  # a second writer stops here, named by PID, before reading or writing anything
    try:
        has_run = run_started(out)  # model.json, or a committed set (killed while publishing it)
        if resume and not has_run:
            raise UserError(f"--resume: {out} has no checkpoint to resume from; start it without --resume")
        if not resume and has_run:
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return _train_locked(
            order_name, order, out, lock, w, device, bb, bud, tcfg, sampler, dataset_spec=dataset_spec,
            tokenizer_spec=tokenizer_spec, tokenizer_steps=tokenizer_steps, tokenizer_minutes=tokenizer_minutes,
            tokenizer_train_opts=tokenizer_train_opts, resume=resume, samples_per_class=samples_per_class, quiet=quiet, resume_hint=resume_hint,
            image_size=image_size, tokenizer_options=tok_opts, on_step=on_step, force=force,
            say=(lambda text: None) if quiet or on_message is None else on_message,
            progress=(lambda *a: None) if quiet or on_progress is None else on_progress,
        )  # fmt: skip
    finally:
        lock.release()


def _train_locked(order_name, order, out: Path, lock: RunLock, w, device, bb, bud, tcfg, sampler, *, dataset_spec,
                  tokenizer_spec, tokenizer_steps, tokenizer_minutes, resume, samples_per_class, quiet,
                  resume_hint, image_size=None, tokenizer_options=None, on_step=None, force=False, say, progress,
                  tokenizer_train_opts=None) -> dict:  # fmt: skip
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
            given, _ = _resolve_tokenizer(tokenizer_spec, order, given_spec, ds, device, tokenizer_steps,
                                         tokenizer_minutes, may_train=False, train_opts=tokenizer_train_opts)  # fmt: skip
            if tokenizer_hash(given) != tokenizer_hash(tokenizer):
                raise UserError(
                    f"--resume: --tokenizer {tokenizer_spec} is not the tokenizer {out} was trained with "
                    f"(hash {short_hash(tokenizer_hash(given))}, the run's {short_hash(tokenizer_hash(tokenizer))}); "
                    "the run is left as it was"
                )
    else:
        tokenizer, tok_stem = _resolve_tokenizer(
            tokenizer_spec, order, given_spec, ds, device, tokenizer_steps, tokenizer_minutes, may_train=w.size == 1,
            options=tokenizer_options, train_opts=tokenizer_train_opts, quiet=quiet, on_message=say, on_progress=progress,
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
        if w.main:
            sync_published(out, *found)  # model.* of a writer killed while publishing its set
        try:
            spent = Spent(**recorded["spent"])
        except TypeError:
            raise UserError(f"--resume: {found[0]}/model.json has a malformed `spent` record") from None
        finished = BudgetTracker(bud, spent).exhausted()
        if finished is not None and (out / "summary.json").is_file():
            if not quiet:
                say(f"{out}: already complete ({finished} budget spent: {spent.steps} steps); nothing to do")
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
    # before any write: the estimated duration, and a CPU run over an hour needs force (--force)
    # (one process only: a Trainer wraps the model for DDP/FSDP, which may happen once per model)
    if not (quiet or resume) and w.size == 1:
        estimate_and_check(Trainer(order, tokenizer, model, ds, tcfg, out, meta), force, say)
    if w.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--out {out}: cannot create the run directory: {err.strerror}") from None
        lock.acquire()
        clean_run(out)
        if not resume:  # a fresh run: nothing stale (a log or checkpoints of a run killed before its first save)
            reset_run(out)
            copy_checkpoint(tok_stem, out / "tokenizer")
    trainer = Trainer(order, tokenizer, model, ds, tcfg, out, meta)
    if resume:
        trainer.resume()
    if not quiet:
        say(
            f"{order_name} d{bb.depth} C={bb.C} · {count_params(model):,} params · "
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
            total_steps = budget_steps(bud, tcfg.batch_size, trainer.flops_per_sample * tcfg.batch_size)[0]

            def step_done(f: float, m: dict) -> None:  # counts steps (thousandths of a minutes-only budget)
                done, total = (m["step"], total_steps) if total_steps else (int(f * 1000), 1000)
                progress(f"train {order_name}", done, total, f"loss {m['loss']:.3f} acc {m['acc']:.3f}")
                if on_step is not None:
                    on_step(trainer, m)

            summary = trainer.fit(progress=step_done, should_stop=should_stop)
    if summary["stopped_by"] == "interrupted":
        how = f"resume with: {resume_hint}" if resume_hint else "rerun the same command to resume"
        raise RunInterrupted(
            f"interrupted at step {trainer.tracker.spent.steps}: checkpoint saved in {out}; {how}"
        )
    # the sample grid every run ends with: one row per class
    from genorder.runs import Run, load_run

    if trainer.sharded and w.size > 1:  # FSDP: rank 0 samples from the consolidated weights the last save published
        model = load_run(out, device).model
    run = Run(out, order, order_name, tokenizer, model.eval(), meta)
    grid_error = None
    if samples_per_class > 0:  # 0: no grid (library callers that sample elsewhere)
        grid_error = write_sample_grid(run, ds.class_names, sampler, tcfg.seed, samples_per_class, out / "samples.png",
                                       progress=lambda d, t: progress("sample grid", d, t, ""))  # fmt: skip
    summary.update({"order": order_name, "params": count_params(model), "depth": bb.depth,
                    "train_flops_per_image": trainer.flops_per_sample, "dataset": dataset_spec, "dataset_split": ds.split_info,
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



@dataclass(frozen=True)
class TrainDefaults:
    """What a regime gives `genorder train` where neither a flag nor --config/--set does."""

    depth: int
    steps: int
    backbone_opts: dict
    train_opts: dict
    notice: str | None  # a one-line note when the order's rate is the regime's default
    tokenizer_steps: int = 300  # a tokenizer trained first: the regime's budget, lr and batch
    tokenizer_train: dict | None = None  # (the same as compare's, so both share the cached tokenizer)


def regime_defaults(order: str, regime: str | Path | None, device_type: str, sections: dict, *,
                    depth: int | None = None, batch_size: int | None = None, lr: float | None = None) -> TrainDefaults:  # fmt: skip
    """`genorder train`'s defaults from `regime` (default: gpu on a GPU, else cpu): depth, width,
    batch, step budget, schedule and the order's peak lr (`Regime.lr_for`). A value the caller
    gives (the flags `depth`/`batch_size`/`lr`, or the same key in `sections`) is left alone."""
    from genorder.regime import default_regime_name, load_regime

    reg = load_regime(regime or default_regime_name(device_type))
    bb, tr = sections.get("backbone", {}), sections.get("train", {})
    d = depth if depth is not None else bb.get("depth", reg.backbone.depth)
    backbone_opts = {}
    if "width" not in bb and reg.width(d):
        backbone_opts["width"] = reg.width(d)
    train_opts: dict = {}
    if batch_size is None and "batch_size" not in tr:
        train_opts["batch_size"] = reg.train.batch_size
    for key in ("schedule", "cooldown"):
        if key not in tr:
            train_opts[key] = getattr(reg.train, key)
    notice = None
    if lr is None and "lr" not in tr and "base_lr" not in tr:
        rate, where = reg.lr_for(order)
        train_opts["lr"] = rate
        if where == "default":
            notice = (f"note: regime {reg.name} has no learning rate for {order}: it trains at the regime's default "
                      f"{rate:g}; `genorder compare --orders {order} --tune-lr` finds its own (or pass --lr)")  # fmt: skip
    return TrainDefaults(depth=d, steps=reg.train.steps, backbone_opts=backbone_opts, train_opts=train_opts, notice=notice,
                         tokenizer_steps=reg.tokenizer.steps,
                         tokenizer_train={"lr": reg.tokenizer.lr, "batch_size": reg.tokenizer.batch_size})  # fmt: skip
