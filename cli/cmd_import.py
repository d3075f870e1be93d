"""`genorder import NAME`: another project's checkpoints as a genorder run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genorder.config import parse_overrides
from genorder.data import class_balanced_labels
from genorder.errors import UserError
from genorder.images import save_grid
from genorder.importers import write_run
from genorder.model import count_params
from genorder.registry import registry
from genorder.runs import load_run
from genorder_cli.app import app, console, guarded
from genorder_cli.common import generate_with_bar, make_sampler

Opt = typer.Option


@app.command("import")
@guarded
def import_cmd(
    name: Annotated[str, typer.Argument(help="importer: var (the official VAR release); see `genorder plugins`")],
    out: Annotated[Path, Opt(help="run directory to write")],
    vae: Annotated[Optional[Path], Opt(help="var: the VQVAE file (vae_ch160v4096z32.pth or .safetensors)")] = None,
    var: Annotated[Optional[Path], Opt(help="var: the transformer file (var_d16.pth ... or .safetensors)")] = None,
    vae_prefix: Annotated[Optional[str], Opt(help="var: read only the VQVAE tensors under this name prefix")] = None,
    var_prefix: Annotated[Optional[str], Opt(help="var: read only the VAR tensors under this name prefix")] = None,
    heads: Annotated[Optional[int], Opt(help="var: attention heads when the weights cannot tell (default depth)")] = None,
    dataset: Annotated[Optional[str], Opt(help="the dataset the model was trained on (what `eval` scores against)")] = None,
    grid: Annotated[bool, Opt("--grid/--no-grid", help="also write samples.png (one row per class, up to 10 classes)")] = False,
    set_: Annotated[Optional[list[str]], Opt("--set", help="importer option: importer.key=value (repeatable)")] = None,
) -> None:
    """Convert another project's checkpoints into a run directory (safetensors + JSON) that
    `sample`, `eval`, `bench --run` and `edit` use like a trained one."""
    sections = parse_overrides(set_)
    bad = sorted(set(sections) - {"importer"})
    if bad:
        raise UserError(f"--set: unknown section(s) {', '.join(bad)}; use importer.key=value")
    opts = {**sections.get("importer", {}),
            **{k: v for k, v in dict(vae=vae, var=var, vae_prefix=vae_prefix, var_prefix=var_prefix, heads=heads).items()
               if v is not None}}
    importer = registry("importers").create(name, opts)
    if (out / "model.json").exists():
        raise UserError(f"{out} already holds a run; choose another --out")
    with registry("importers").blame(name, "reading the checkpoints"):  # a malformed file the checks missed
        imported = importer.load()
    extra = {"dataset": dataset} if dataset else {}
    write_run(imported, out, name, **extra)
    b = imported.backbone
    console.print(
        f"imported [bold]{name}[/bold]: {imported.order_name} d{b.depth} C={b.C} heads={b.H} "
        f"shared AdaLN={b.shared_adaln} q/k norm={b.qk_norm} · {count_params(imported.model):,} params · "
        f"tokenizer scales {list(imported.tokenizer.scales)} V={imported.tokenizer.codebook_size} -> {out}"
    )
    if grid:
        run = load_run(out)
        k = min(run.model.num_classes, 10)
        labels = class_balanced_labels(k, k * 4)
        images = generate_with_bar(run, labels, make_sampler({}), seed=0, batch_size=16, title="sample grid")
        save_grid(images, out / "samples.png", nrow=4, labels_left=run.class_names[:k])
        console.print(f"wrote {out / 'samples.png'}")
