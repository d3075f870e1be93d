"""`genorder compare`: the toolkit's main job. Train several orders at the same depth under one
identical budget, then print what each budget bought and write their sample grids side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table

from genorder.checkpoint import read_meta
from genorder.data import class_balanced_labels
from genorder.errors import UserError
from genorder.images import side_by_side
from genorder.plot import line_plot
from genorder.registry import registry
from genorder.runs import load_run, write_json
from genorder.sampling import generate_images
from genorder.trainer import resolve_device
from genorder_cli.app import app, console, guarded, parse_csv
from genorder_cli.cmd_train import train_run
from genorder_cli.common import make_sampler

Opt = typer.Option


def _loss_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(images seen, loss) from a run's log.jsonl."""
    pts = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec and "images" in rec:
            pts.append((float(rec["images"]), float(rec["loss"])))
    return pts


def _finished(run_dir: Path) -> bool:
    return (run_dir / "model.json").exists() and read_meta(run_dir / "model").get("final", False)


@app.command("compare")
@guarded
def compare(
    orders: Annotated[str, Opt(help="comma-separated orders to train and compare")] = "next-scale,raster,maskgit",
    depth: Annotated[Optional[int], Opt(help="one depth for every order (default 16 on a GPU, 2 on a CPU)")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH, npz:PATH")] = "fashion-mnist",
    steps: Annotated[Optional[int], Opt(help="budget: optimizer steps (per order)")] = None,
    images: Annotated[Optional[int], Opt(help="budget: images seen (per order)")] = None,
    minutes: Annotated[Optional[float], Opt(help="budget: wall-clock minutes (per order)")] = None,
    flops: Annotated[Optional[float], Opt(help="budget: training FLOPs (per order)")] = None,
    batch_size: Annotated[Optional[int], Opt(help="images per step (default 32 on a CPU, 128 on a GPU)")] = None,
    lr: Annotated[Optional[float], Opt(help="peak learning rate (default 1e-3 on a CPU, 4e-4 on a GPU: short-budget values)")] = None,
    tokenizer_steps: Annotated[Optional[int], Opt(help="steps for each tokenizer trained first (default 400 CPU / 3000 GPU)")] = None,
    tokenizer_minutes: Annotated[Optional[float], Opt(help="cap in minutes on each tokenizer trained first (default 2 on a CPU, none on a GPU)")] = None,
    cfg: Annotated[float, Opt(help="CFG strength used for every order's samples (0 = off)")] = 0.0,
    top_k: Annotated[int, Opt(help="top-k used for every order's samples (0 = off)")] = 0,
    per_class: Annotated[int, Opt(help="samples per class in the grids")] = 6,
    out: Annotated[Path, Opt(help="folder for the runs, the comparison PNG and JSON")] = Path("runs/compare"),
    seed: Annotated[int, Opt(help="seed shared by every order")] = 0,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Train ORDERS under one budget at one depth; print the comparison and write comparison.png."""
    names = parse_csv(orders)
    if not names:
        raise UserError("--orders is empty")
    for n in names:
        registry("orders").get(n)
    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    depth = depth or (16 if gpu else 2)
    budget = {"steps": steps, "images": images, "minutes": minutes, "flops": flops}
    if all(v is None for v in budget.values()):
        budget = {"minutes": 5.0} if gpu else {"images": 6400}
    # Short-budget defaults: VAR's lr rule (1e-4 per 256 images) is tuned for hundreds of epochs and
    # barely moves a small model in a few hundred steps; these runs use a higher peak lr instead.
    batch_size = batch_size or (128 if gpu else 32)
    lr = lr or (4e-4 if gpu else 1e-3)
    tok_steps = tokenizer_steps or (3000 if gpu else 400)
    tok_minutes = tokenizer_minutes if tokenizer_minutes is not None else (None if gpu else 2.0)
    sampler_opts = {"cfg": cfg, "top_k": top_k}
    console.print(f"[bold]compare[/bold] {', '.join(names)} · depth {depth} · budget {budget} per order · device {dev}")
    rows = []
    for name in names:
        run_dir = out / name
        if _finished(run_dir):
            console.print(f"{name}: finished run found in {run_dir}, reusing it")
        else:
            train_run(
                name, run_dir, dataset_spec=dataset, tokenizer_steps=tok_steps, tokenizer_minutes=tok_minutes, depth=depth, budget=budget,
                train_opts={"batch_size": batch_size, "lr": lr, "seed": seed, "device": device},
                sampler_opts=sampler_opts, resume=(run_dir / "model.json").exists(), samples_per_class=per_class,
            )
        r = load_run(run_dir, dev)
        sampler = make_sampler({}, **sampler_opts)
        labels = class_balanced_labels(r.model.num_classes, 2 * r.model.num_classes)
        generate_images(r, labels[:2], sampler, seed=seed)  # warm-up
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate_images(r, labels, sampler, seed=seed, batch_size=len(labels))
        if gpu:
            torch.cuda.synchronize()
        per_img = (time.perf_counter() - t0) / len(labels)
        meta = read_meta(run_dir / "model")
        summ = json.loads((run_dir / "summary.json").read_text())
        s = meta["spent"]
        rows.append({
            "order": name, "params": meta["params"], "gen_steps": r.order.num_steps(r.order.layout(r.tokenizer)),
            "steps": s["steps"], "images": s["images"], "tokens": s["tokens"], "train_flops": s["flops"],
            "train_seconds": s["seconds"], "final_loss": summ["last"].get("loss"),
            "sample_ms_per_image": 1000 * per_img, "sample_batch": len(labels), "grid": str(run_dir / "samples.png"),
        })
    t = Table(title=f"{len(rows)} orders, depth {depth}, one budget ({budget}), {dataset}, {dev}")
    for col in ("order", "params", "gen steps", "opt steps", "images", "tokens", "TFLOP", "train s", "loss", "ms/img sample"):
        t.add_column(col, justify="left" if col == "order" else "right")
    for r_ in rows:
        t.add_row(r_["order"], f"{r_['params'] / 1e6:.2f}M", str(r_["gen_steps"]), str(r_["steps"]),
                  f"{r_['images']:,}", f"{r_['tokens']:,}", f"{r_['train_flops'] / 1e12:.2f}",
                  f"{r_['train_seconds']:.0f}", f"{r_['final_loss']:.3f}", f"{r_['sample_ms_per_image']:.1f}")
    console.print(t)
    png = side_by_side([r_["grid"] for r_ in rows], [r_["order"] for r_ in rows], out / "comparison.png")
    curves = line_plot(
        {r_["order"]: _loss_curve(out / r_["order"]) for r_ in rows}, out / "loss_curves.png",
        f"training loss (cross-entropy per token), depth {depth}, {dataset}", "training images seen", "loss",
    )  # fmt: skip
    write_json(out / "comparison.json", {"depth": depth, "budget": budget, "batch_size": batch_size, "lr": lr,
                                         "dataset": dataset, "device": str(dev),
                                         "sampler": sampler_opts, "rows": rows})
    console.print(f"wrote {png}, {curves} and {out / 'comparison.json'}")
