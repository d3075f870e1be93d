"""`genorder train-tokenizer` and `genorder reconstruct`."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer
from rich.table import Table

from genorder.data import load_dataset
from genorder.errors import UserError
from genorder.regime import tokenizer_regime
from genorder.registry import registry
from genorder.tokenizer_run import (  # noqa: F401 - the library's, re-exported
    DEFAULT_BUDGET,
    DEFAULT_DATASET,
    DEFAULT_KIND,
    _dataset_spec,
    split_line,
    train_tokenizer_run,
)
from genorder_cli.app import app, console, guarded
from genorder.data import set_holdout
from genorder_cli.common import HoldoutOpt, ImageSizeOpt, ThreadsOpt, layered, set_threads, stage_renderers, tokenizer_stem

Opt = typer.Option


def sections_from(config: Path | None, overrides: list[str] | None) -> dict[str, dict[str, Any]]:
    """TOML sections ([tokenizer] [train] [budget] [data]), then `--set section.key=value` on top."""
    base = layered(config, overrides)
    unknown = set(base) - {"tokenizer", "train", "budget", "data"}
    if unknown:
        raise UserError(f"unknown config section(s) {sorted(unknown)}; use [tokenizer], [train], [budget], [data]")
    return base


def metrics_table(m: dict[str, Any], title: str) -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row(f"PSNR, all {len(m['scales'])} scales ({m['eval_split']}, {m['eval_images']} images)", f"{m['psnr']:.2f} dB")
    t.add_row(f"PSNR from the first k scales ({m['psnr_per_k_images']} images)",
              " ".join(f"{v:.1f}" for v in m["psnr_per_k"]))  # fmt: skip
    t.add_row("codes used per scale, % of V", " ".join(f"{v:.1f}" for v in m["usage_pct"]))
    t.add_row("codes used per scale, % of possible", " ".join(f"{v:.0f}" for v in m["usage_of_possible_pct"]))
    if "codes_restarted" in m:
        t.add_row("dead codes restarted", str(m["codes_restarted"]))
    if "colour" in m:
        c = m["colour"]
        t.add_row("per-channel mean, original -> reconstruction",
                  "  ".join(f"{a:+.2f}->{b:+.2f}" for a, b in zip(c["mean_original"], c["mean_reconstruction"])))
        t.add_row("per-channel correlation with the original", " ".join(f"{v:.3f}" for v in c["correlation"]))
    t.add_row("steps / images / seconds", f"{m['steps']} / {m['images']:,} / {m['seconds']:.0f}")
    t.add_row("stopped by", str(m["stopped_by"]) + (" (load-dependent)" if m["stopped_by"] == "minutes" else ""))
    return t


TRAIN_HELP = (
    "Train any registered trainable tokenizer (genorder.TrainableTokenizer) on a dataset.\n\n"
    "With no --tokenizer, the multi-scale preset declared for the dataset's channels and size; the "
    "tokenizer takes the dataset's channels and size unless --set tokenizer.* says otherwise, and the "
    "images are converted only on --image-size / --channels. Writes OUT/tokenizer.safetensors + .json "
    "(the checkpoint other commands take), log.jsonl, reconstructions.png (images spread over the "
    "classes: the original, then the reconstruction from the first k scales for every k, captioned) and "
    "metrics.json (held-out PSNR per k, codebook usage per scale, the per-channel colour check). Budget "
    "limits combine: the run stops at the first one reached. Example: genorder train-tokenizer --steps "
    "2000 --set tokenizer.vocab_size=1024"
)


@app.command("train-tokenizer", help=TRAIN_HELP)
@guarded
def train_tokenizer_cmd(
    tokenizer: Annotated[Optional[str], Opt(help="a trainable tokenizer preset (see `genorder plugins`); default: the multi-scale preset declared for the dataset's channels and size")] = None,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH or npz:PATH")] = DEFAULT_DATASET,
    holdout: HoldoutOpt = None,
    out: Annotated[Optional[Path], Opt(help="output directory (default runs/tokenizer-<preset>)")] = None,
    steps: Annotated[Optional[int], Opt(help="budget: optimizer steps (with no budget given: the regime's tokenizer.steps, 300 on a CPU, 3000 on a GPU)")] = None,
    images: Annotated[Optional[int], Opt(help="budget: training images seen")] = None,
    minutes: Annotated[Optional[float], Opt(help="budget: wall-clock minutes (load-dependent: where it stops depends on the machine's load; never a default)")] = None,
    batch_size: Annotated[Optional[int], Opt(help="images per step (default: the regime's tokenizer.batch_size, 32)")] = None,
    lr: Annotated[Optional[float], Opt(help="peak learning rate (default: the regime's tokenizer.lr, 2e-3 on a CPU, 3e-4 on a GPU: what compare and train use)")] = None,
    gan: Annotated[Optional[bool], Opt("--gan/--no-gan", help="add a PatchGAN loss after train.gan_start steps (default off; tokenizers with a gan option)")] = None,
    seed: Annotated[Optional[int], Opt(help="seed of the initialisation and the data order")] = None,
    image_size: ImageSizeOpt = None,
    channels: Annotated[Optional[int], Opt(help="convert the dataset to 1 (grey) or 3 (RGB) channels (explicit; never done silently)")] = None,
    device: Annotated[Optional[str], Opt(help="auto (cuda if available), cpu, cuda, cuda:1")] = None,
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, Opt(help="replace a tokenizer already in --out")] = False,
    config: Annotated[Optional[Path], Opt(help="TOML with \\[tokenizer] (name + preset options), \\[train], \\[budget] and \\[data] (name) sections")] = None,
    set_: Annotated[Optional[list[str]], Opt("--set", help="override: section.key=value, e.g. tokenizer.vocab_size=1024 (repeatable)")] = None,
) -> None:
    set_threads(threads)
    set_holdout(holdout)
    sections = sections_from(config, set_)
    preset = tokenizer or sections.get("tokenizer", {}).get("name")
    if preset is not None:
        registry("tokenizers").get(preset)  # unknown preset: a clear error before anything else
    if channels is not None and channels not in (1, 3):
        raise UserError(f"--channels must be 1 or 3, got {channels}")
    budget = {"steps": steps, "images": images, "minutes": minutes}
    budget = {k: v for k, v in budget.items() if v is not None} or None
    ds_spec = sections.get("data", {}).get("name", dataset) if dataset == DEFAULT_DATASET else dataset
    # the regime's tokenizer budget, lr and batch where nothing is given: the tokenizer compare and
    # train would train (and find in the content-keyed cache)
    reg = tokenizer_regime(device)
    given = sections.get("train", {})
    if budget is None and not sections.get("budget") and "budget" not in given:
        budget = {"steps": reg.steps}
    train_opts = {"batch_size": batch_size if batch_size is not None or "batch_size" in given else reg.batch_size,
                  "lr": lr if lr is not None or "lr" in given else reg.lr, "seed": seed}  # fmt: skip
    if gan is not None:
        train_opts["gan"] = gan
    with ExitStack() as stack:
        metrics = train_tokenizer_run(
            preset, None, out, budget, device=device, dataset_spec=ds_spec, sections=sections,
            train_opts=train_opts, overwrite=overwrite, image_size=image_size, channels=channels,
            **{k: v for k, v in stage_renderers(stack).items() if k != "on_status"},
        )  # fmt: skip
    preset = metrics["tokenizer"]
    dest = out or Path("runs") / f"tokenizer-{preset}"
    console.print(metrics_table(metrics, f"tokenizer {preset} on {ds_spec}"))
    if metrics.get("quality_warning"):
        console.print(f"[yellow]warning:[/yellow] {metrics['quality_warning']}")
    console.print(f"checkpoint {dest / 'tokenizer.safetensors'} · grid {dest / 'reconstructions.png'} · {dest / 'metrics.json'}")


@app.command("reconstruct")
@guarded
def reconstruct_cmd(
    tokenizer_ckpt: Annotated[Path, Opt("--tokenizer-ckpt", help="tokenizer checkpoint (stem, .safetensors or .json) or its folder")],
    dataset: Annotated[Optional[str], Opt(help="dataset spec (default: the one the tokenizer was trained on)")] = None,
    split: Annotated[str, Opt(help="train or test")] = "test",
    n: Annotated[int, Opt("--n", help="number of images (rows), spread over the classes")] = 8,
    out: Annotated[Optional[Path], Opt(help="PNG path (default <checkpoint dir>/reconstruct.png)")] = None,
    scale: Annotated[int, Opt(help="integer upscaling of the PNG")] = 2,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Show what the tokenizer keeps: one row per image (spread over the classes, captioned), the
    original, then the reconstruction from the first k scales for k = 1..K (captioned columns; the
    last uses every scale)."""
    from genorder.checkpoint import read_meta
    from genorder.runs import load_tokenizer
    from genorder.tokenizer_training import psnr_per_image, reconstruct_grid, scored_images
    from genorder.trainer import resolve_device

    set_threads(threads)
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if scale < 1:
        raise UserError(f"--scale must be at least 1, got {scale}")
    if split not in ("train", "test"):
        raise UserError(f"--split must be train or test, got {split!r}")
    if out is not None and out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png path, got {out}")
    stem = tokenizer_stem(tokenizer_ckpt)
    meta = read_meta(stem)
    tok, _ = load_tokenizer(stem, resolve_device(device))
    spec = dataset or meta.get("dataset") or DEFAULT_DATASET
    # shown at the checkpoint's own size and channels (the shape it was trained at, recorded in it)
    ds = load_dataset(spec, split, image_size=tok.image_size, channels=tok.channels)
    path = out or stem.parent / "reconstruct.png"
    reconstruct_grid(tok, ds, path, n=n, scale=scale)
    images, _ = scored_images(ds, n)  # the grid's images: the PSNR printed is theirs
    with torch.no_grad():
        x = images.to(next(tok.parameters()).device)
        psnr = float(psnr_per_image(tok.decode(tok.encode(x)), x).mean())
    console.print(f"wrote {path}: {min(n, len(ds))} rows x (original + {len(tok.scales)} prefixes) · PSNR {psnr:.2f} dB")
