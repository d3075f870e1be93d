"""`genorder train`, `genorder sample` and `genorder runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table

from genorder.budget import Budget
from genorder.config import build_config
from genorder.data import class_balanced_labels, load_dataset
from genorder.distributed import init_from_env, world
from genorder.errors import UserError
from genorder.images import save_grid
from genorder.model import BackboneConfig, build_model, count_params
from genorder.registry import registry
from genorder.runs import copy_checkpoint, list_runs, load_run, run_meta, write_json
from genorder.trainer import Trainer, TrainConfig, resolve_device
from genorder_cli.app import app, console, guarded, progress_bar
from genorder_cli.common import generate_with_bar, layered, make_sampler, resolve_tokenizer

Opt = typer.Option


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
    on_step=None,
    image_size: int | None = None,
) -> dict:
    """Build everything from options, train under the budget, write the run directory. Used by
    `train`, and by `compare`/`ablate` for every row, so all rows go through the same code.
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
    if depth is None and "depth" not in sections.get("backbone", {}) and not (backbone_opts or {}).get("depth"):
        depth = 16 if on_gpu else 4
    order = registry("orders").create(order_name, {**sections.get("order", {}), **(order_opts or {})})
    bb = build_config(BackboneConfig, sections.get("backbone"), {"depth": depth, **(backbone_opts or {})}, section="backbone")
    bud = build_config(Budget, sections.get("budget"), budget or {}, section="budget")
    if all(getattr(bud, k) is None for k in ("steps", "images", "minutes", "flops")):
        raise UserError("budget: give one of --steps, --images, --minutes, --flops")
    tcfg = build_config(TrainConfig, sections.get("train"), {**(train_opts or {}), "budget": bud}, section="train")
    sampler = make_sampler(sections, **(sampler_opts or {}))
    if resume and not (out / "model.json").exists():
        raise UserError(f"--resume: {out} has no checkpoint to resume from")
    if not resume and (out / "model.json").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    ds = load_dataset(dataset_spec, "train", image_size=image_size)
    tokenizer, tok_stem = resolve_tokenizer(
        tokenizer_spec, order, dataset_spec, ds, device, tokenizer_steps, tokenizer_minutes, may_train=w.size == 1
    )
    if tokenizer.channels != ds.channels or tokenizer.image_size != ds.image_size:
        raise UserError(
            f"tokenizer expects {tokenizer.channels}x{tokenizer.image_size}px images, dataset {dataset_spec} has "
            f"{ds.channels}x{ds.image_size}px"
        )
    torch.manual_seed(tcfg.seed)  # the initialisation depends on the seed alone (and is the same on every rank)
    model = build_model(order, tokenizer, bb, ds.num_classes)
    meta = run_meta(order_name, order, bb, model, dataset=dataset_spec, class_names=ds.class_names,
                    tokenizer_source=str(tok_stem), layout=list(order.layout(tokenizer).scales))
    if w.main:
        out.mkdir(parents=True, exist_ok=True)
        copy_checkpoint(tok_stem, out / "tokenizer")
    trainer = Trainer(order, tokenizer, model, ds, tcfg, out, meta)
    if resume:
        trainer.resume()
    if not quiet:
        console.print(
            f"[bold]{order_name}[/bold] d{bb.depth} C={bb.C} · {count_params(model):,} params · "
            f"{trainer.flops_per_sample / 1e9:.2f} GFLOP/img (train) · device {device} · budget {bud.model_dump(exclude_none=True)}"
        )
    if not w.main:  # other torchrun processes: train, then leave the grid and summary to rank 0
        return trainer.fit()
    with progress_bar(f"train {order_name}", total=1000) as update:
        def step_done(f: float, m: dict) -> None:
            update(int(f * 1000), info=f"loss {m['loss']:.3f} acc {m['acc']:.3f}")
            if on_step is not None:
                on_step(trainer, m)

        summary = trainer.fit(progress=step_done)
    # the sample grid every run ends with: one row per class
    from genorder.runs import Run

    run = Run(out, order, order_name, tokenizer, model.eval(), meta)
    labels = class_balanced_labels(ds.num_classes, ds.num_classes * samples_per_class)
    images = generate_with_bar(run, labels, sampler, seed=tcfg.seed, batch_size=64, title="sample grid")
    save_grid(images, out / "samples.png", nrow=samples_per_class, scale=2, labels_left=ds.class_names)
    summary.update({"order": order_name, "params": count_params(model), "depth": bb.depth,
                    "train_flops_per_image": trainer.flops_per_sample, "dataset": dataset_spec,
                    "sampler": sampler.config.model_dump()})
    write_json(out / "summary.json", summary)
    return summary


@app.command("train")
@guarded
def train(
    order: Annotated[str, Opt(help="generation order: next-scale, raster, maskgit (see `genorder plugins`)")] = "next-scale",
    depth: Annotated[Optional[int], Opt(help="backbone depth d (width 64·d, d heads); default 16 on a GPU, 4 on a CPU")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH or npz:PATH")] = "fashion-mnist",
    tokenizer: Annotated[Optional[str], Opt(help="tokenizer checkpoint, or a preset to train first (default: by order)")] = None,
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
    config: Annotated[Optional[Path], Opt(help="TOML with [order] [backbone] [train] [budget] [sampler] sections")] = None,
    set_: Annotated[Optional[list[str]], Opt("--set", help="override: section.key=value (repeatable)")] = None,
) -> None:
    """Train one order under a budget; writes checkpoints, log.jsonl, samples.png and summary.json."""
    sections = layered(config, set_)
    budget = {"steps": steps, "images": images, "minutes": minutes, "flops": flops}
    if all(v is None for v in budget.values()) and not sections.get("budget"):
        budget["steps"] = 300
    d = depth or sections.get("backbone", {}).get("depth")
    dev = resolve_device(device or sections.get("train", {}).get("device", "auto"))
    shown_depth = d or (16 if dev.type == "cuda" else 4)
    out = out or Path("runs") / f"{order}-d{shown_depth}"
    summary = train_run(
        order, out, dataset_spec=dataset, tokenizer_spec=tokenizer, tokenizer_steps=tokenizer_steps,
        tokenizer_minutes=tokenizer_minutes, depth=d,
        budget=budget, sections=sections, backbone_opts={"adaln": adaln, "qk_norm": qk_norm},
        train_opts={"batch_size": batch_size, "lr": lr, "seed": seed, "device": device},
        sampler_opts={"cfg": cfg, "top_k": top_k}, resume=resume,
    )
    if not world().main:
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
) -> None:
    """Write a class-conditional sample grid (one row per class) from a trained run."""
    sampler = make_sampler({}, cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p,
                           temperature=temperature, more_smooth=more_smooth)
    r = load_run(run, resolve_device(device))
    labels = class_balanced_labels(r.model.num_classes, r.model.num_classes * per_class)
    images = generate_with_bar(r, labels, sampler, seed=seed, batch_size=64, title=f"sample {r.order_name}")
    path = out or run / f"samples-seed{seed}.png"
    save_grid(images, path, nrow=per_class, scale=2, labels_left=r.class_names)
    if npz:
        import numpy as np

        from genorder.images import to_uint8

        np.savez_compressed(npz, images=to_uint8(images).numpy(), labels=labels.numpy())
    console.print(f"wrote {path}")


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
        s = m.get("spent", {})
        summ = {}
        if (p / "summary.json").exists():
            import json

            summ = json.loads((p / "summary.json").read_text())
        t.add_row(p.name, m["order"]["name"], str(m["backbone"]["depth"]), f"{m['params'] / 1e6:.2f}M",
                  str(s.get("steps", "")), f"{s.get('images', 0):,}", f"{s.get('tokens', 0):,}",
                  f"{s.get('flops', 0) / 1e12:.2f}", f"{s.get('seconds', 0):.0f}",
                  f"{summ.get('last', {}).get('loss', float('nan')):.3f}", str(summ.get("stopped_by", "")))
    console.print(t)


