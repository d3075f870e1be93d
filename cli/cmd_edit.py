"""`genorder edit`: zero-shot in-painting, out-painting and class-conditional editing, every order
side by side (original | mask | each run's results, several seeds), with metrics JSON."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import torch
import typer

from genorder.data import _image_files, _load_image, load_dataset, to_float
from genorder.editing import (
    class_accuracy,
    edit_images,
    edit_metrics,
    edit_refusal,
    fid_skip_note,
    parse_mask,
)
from genorder.errors import UserError
from genorder.subsets import SUBSET_SEED, balanced_subset, subset_of
from genorder.images import make_grid, side_by_side, tensor_to_pil, to_uint8
from genorder.runs import load_run, write_json
from genorder.trainer import resolve_device
from genorder_cli.app import app, console, guarded, progress_bar
from genorder.data import set_holdout
from genorder_cli.common import HoldoutOpt, make_sampler

Opt = typer.Option


def read_images(path: Path, size: int, channels: int, n: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """An image file or a folder of images -> (N, C, size, size) float in [-1, 1] (n files of the
    folder, a seeded shuffle: not the first n of a sorted listing)."""
    if not path.exists():
        raise UserError(f"--images: {path} not found")
    files = [path] if path.is_file() else _image_files(path)
    if len(files) > 1:
        pick = balanced_subset(None, n, seed, total=len(files))
        files = [files[i] for i in torch.sort(pick).values.tolist()]
    if not files:
        raise UserError(f"--images: no image files in {path}")
    arr = np.stack([_load_image(f, size, "L" if channels == 1 else "RGB") for f in files])
    t = torch.from_numpy(arr)
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return to_float(t.contiguous())


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _panel(images: torch.Tensor, nrow: int, scale: int):
    grid = tensor_to_pil(make_grid(images, nrow))
    return grid.resize((grid.width * scale, grid.height * scale)) if scale > 1 else grid


@app.command("edit")
@guarded
def edit(
    run: Annotated[list[Path], Opt(help="run directory (repeat --run for one column per order)")],
    mask: Annotated[str, Opt(help="region to regenerate: center, left, right, top, bottom, a box x0,y0,x1,y1 (0..1) or a PNG (white = regenerate)")],
    out: Annotated[Path, Opt(help="output folder: edit.png and edit.json")],
    images: Annotated[Optional[Path], Opt(help="an image file or a folder of images")] = None,
    dataset: Annotated[Optional[str], Opt(help="take the images from this dataset's test split")] = None,
    holdout: HoldoutOpt = None,
    n: Annotated[int, Opt(help="images to edit: a seeded class-balanced subset of --dataset's test split, or a seeded pick of the --images folder")] = 4,
    class_: Annotated[Optional[int], Opt("--class", help="class-conditional editing: regenerate the region as this class (default: the null class, pure in-painting)")] = None,
    seeds: Annotated[int, Opt(help="results per image and order (seeds 0..K-1)")] = 2,
    cfg: Annotated[Optional[float], Opt(help="CFG strength t_max (0 = off)")] = None,
    top_k: Annotated[Optional[int], Opt(help="top-k (0 = off)")] = None,
    top_p: Annotated[Optional[float], Opt(help="top-p (0 = off)")] = None,
    temperature: Annotated[Optional[float], Opt(help="softmax temperature")] = None,
    fid: Annotated[bool, Opt("--fid/--no-fid", help="FID of the edited images against the test split (skipped, with a note, under 100 edited images)")] = True,
    extractor: Annotated[str, Opt(help="FID features: genorder-inception-fid, or genorder-tiny-random (tests)")] = "genorder-inception-fid",
    ref_n: Annotated[Optional[int], Opt(help="reference images from the test split for FID (default all)")] = None,
    cache_dir: Annotated[Optional[Path], Opt(help="FID reference cache (default $GENORDER_FID_CACHE or ~/.cache/genorder/fid); the classifier is cached in CACHE_DIR/classifiers")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    scale: Annotated[int, Opt(help="integer upscaling of the grid")] = 2,
) -> None:
    """Edit images with every given run's order (in-/out-painting; with --class, class-conditional
    editing); orders that cannot make the edit say why. Writes OUT/edit.png and OUT/edit.json."""
    set_holdout(holdout)
    if (images is None) == (dataset is None):
        raise UserError("give exactly one of --images PATH or --dataset NAME")
    if n < 1 or seeds < 1:
        raise UserError(f"--n and --seeds must be at least 1, got {n} and {seeds}")
    dev = resolve_device(device)
    sampler = make_sampler({}, cfg=cfg, top_k=top_k, top_p=top_p, temperature=temperature)
    runs = [load_run(r, dev) for r in run]
    tok0 = runs[0].tokenizer
    for r in runs[1:]:
        if (r.tokenizer.channels, r.tokenizer.image_size) != (tok0.channels, tok0.image_size):
            raise UserError(f"{r.path} takes {r.tokenizer.channels}x{r.tokenizer.image_size}px images, "
                            f"{runs[0].path} {tok0.channels}x{tok0.image_size}px: runs must share the image format")  # fmt: skip
    for r in runs:
        if class_ is not None and not 0 <= class_ < r.model.num_classes:
            raise UserError(f"--class {class_}: {r.path} has classes 0..{r.model.num_classes - 1}")
    size, ch = tok0.image_size, tok0.channels
    region = parse_mask(mask, size)
    if dataset is not None:
        picked, _ = subset_of(load_dataset(dataset, "test", image_size=size, channels=ch), n)  # seeded, class-balanced
        x = to_float(picked)
    else:
        x = read_images(images, size, ch, n)
    ref_spec = dataset or runs[0].meta.get("dataset")
    refusals = {str(r.path): edit_refusal(r, region) for r in runs}
    if all(v is not None for v in refusals.values()):
        raise UserError("no run can make this edit:\n" + "\n".join(f"{p}: {v}" for p, v in refusals.items()))
    fid_note = fid_skip_note(x.shape[0] * seeds) if fid else None
    if fid_note is not None:
        fid = False
        console.print(f"[yellow]note:[/yellow] {fid_note}")
    if fid and ref_spec is None:
        raise UserError("--fid needs a reference set: pass --dataset, or --no-fid for images of an unknown set")
    if fid:
        from genorder.scoring import check_extractor

        check_extractor(extractor)
    out.mkdir(parents=True, exist_ok=True)

    B = x.shape[0]
    overlay = x.clone()
    inside = region >= 0.5
    overlay[..., inside] = overlay[..., inside] * 0.3 - 0.7  # darken the region to regenerate
    panels, titles = [_panel(x, 1, scale), _panel(overlay, 1, scale)], ["original", "mask"]
    record: dict[str, Any] = {"mask": mask, "class": class_, "seeds": seeds, "n": B, "images": str(images or dataset),
                              "sampler": sampler.config.model_dump(), "reference": ref_spec, "orders": []}  # fmt: skip
    if fid_note is not None:
        record["fid_note"] = fid_note
    for r in runs:
        name = f"{r.order_name} ({r.path.name})"
        reason = refusals[str(r.path)]
        row: dict[str, Any] = {"run": str(r.path), "order": r.order_name}
        if reason is not None:
            row["refused"] = reason
            record["orders"].append(row)
            blank = torch.full((B * seeds, ch, size, size), 1.0)
            panels.append(_panel(blank, seeds, scale))
            titles.append(f"{name}: cannot")
            console.print(f"[yellow]{r.order_name}[/yellow] ({r.path}): cannot make this edit: {reason}")
            continue
        label = r.model.null_class if class_ is None else class_
        labels = torch.full((B,), label, dtype=torch.long)
        per_seed, metrics = [], []
        with progress_bar(f"edit {r.order_name}", total=seeds) as update:
            for s in range(seeds):
                res = edit_images(r, x, region, labels, sampler, seed=s)
                per_seed.append(res.images)
                metrics.append(edit_metrics(res, region))
                update(s + 1)
        edited = torch.stack(per_seed, dim=1).flatten(0, 1)  # (B * seeds, C, H, W), image-major
        for key in metrics[0]:
            row[key] = _mean([m[key] for m in metrics])
        row["kept_token_agreement_min"] = min(m["kept_token_agreement"] for m in metrics)
        if class_ is not None and ref_spec is not None:
            from genorder.scoring import classifier_cache_dir

            row["class_accuracy"] = class_accuracy(ref_spec, edited, torch.full((len(edited),), class_), device=dev,
                                                   cache_root=classifier_cache_dir(cache_dir))  # fmt: skip
        if fid:
            from genorder_cli.cmd_eval import _score as score_images  # drawn with rich bars

            if len(edited) < 2:
                row["fid"] = None
            else:
                m = score_images(to_uint8(edited), ref_spec, extractor=extractor, device=dev, ref_n=ref_n,
                                 kid=False, prc=False, cache_dir=cache_dir, floor=False,
                                 title=f"FID features ({r.order_name})")  # fmt: skip
                row["fid"] = m["fid"]
                row["fid_n"] = len(edited)
        record["orders"].append(row)
        panels.append(_panel(edited, seeds, scale))
        titles.append(name)
    side_by_side(panels, titles, out / "edit.png")
    write_json(out / "edit.json", record)
    for row in record["orders"]:
        if "refused" in row:
            continue
        extra = f" · FID {row['fid']:.2f}" if row.get("fid") is not None else ""
        acc = row.get("class_accuracy", {})
        extra += f" · class acc {acc['acc']:.3f}" if "acc" in acc else ""
        console.print(
            f"[bold]{row['order']}[/bold]: kept tokens identical {row['kept_token_agreement']:.3f} · "
            f"PSNR outside the mask vs reconstruction {row['outside_psnr_vs_reconstruction']:.2f} dB{extra}"
        )
    console.print(f"wrote {out / 'edit.png'} and {out / 'edit.json'}")
