"""`genorder ablate`: the VAR ablation table (TABLES.md §1.1) trained and scored under one budget.

The work is `genorder.experiments.ablate.run_ablate`; this command parses its options into an
`AblateConfig`, builds the executor from --workers/--threads, prints progress and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from genorder_cli.app import app, console, guarded
from genorder_cli.common import set_threads
from rich.table import Table

from genorder.errors import UserError
from genorder.executors import LocalExecutor
from genorder.experiments.ablate import AblateConfig, AblateResult, run_ablate
from genorder.regime import load_regime

Opt = typer.Option


def show(text: str) -> None:
    """Progress lines (module-level: the worker processes print with it too)."""
    console.print(text, highlight=False)


def render(result: AblateResult) -> None:
    t = Table(title=f"ablation ({result.preset.name}), seeds {result.header['seeds']}")
    for col in ("#", "row", "params", "cost", "FID", "class acc", "Δ FID", "paper FID", "paper Δ"):
        t.add_column(col, justify="left" if col == "row" else "right")
    for r in result.rows:
        fid, d = r["fid"], r["delta_fid"]
        t.add_row(str(r["row"]), r["title"], "—" if r["params"] is None else f"{r['params'] / 1e6:.2f}M",
                  "—" if r["cost"] is None else f"{r['cost']:.3f}",
                  "—" if fid["mean"] is None else f"{fid['mean']:.2f}" + (f" ± {fid['std']:.2f}" if fid["std"] else ""),
                  "—" if r["class_acc"]["mean"] is None else f"{100 * r['class_acc']['mean']:.1f}%",
                  "—" if d["mean"] is None else f"{d['mean']:+.2f}",
                  "—" if r["paper_fid"] is None else f"{r['paper_fid']:.2f}",
                  "—" if r["paper_delta"] is None else f"{r['paper_delta']:+.2f}")  # fmt: skip
    console.print(t)
    console.print(f"wrote {result.out / 'ABLATION.md'} and {result.out / 'ablation.json'}")


@app.command("ablate")
@guarded
def ablate(
    preset: Annotated[str | None, Opt(help="fmnist (Fashion-MNIST, sized for one H100; the default), fmnist-regime (the CPU regime of `genorder compare`: 1000 steps a row, about 40 CPU minutes per seed; the default with --regime), fmnist-plateau (the same, 2500 steps a row, to bring every row to its plateau; about 85 CPU minutes per seed, docs/ABLATION.md), fmnist-cpu (CPU smoke scale) or tiny (pipeline check)")] = None,
    regime: Annotated[str | None, Opt(help="train every row in a regime: cpu, gpu or a TOML file (genorder/regimes/); it gives the backbone size, step budget, batch, schedule, tokenizer budgets and the learning rate, the preset its data, evaluation sizes and seeds")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="override a regime key, e.g. --set train.steps=2000 (repeatable; needs --regime)")] = None,
    per_order_lr: Annotated[bool, Opt("--per-order-lr", help="train each row at the regime's rate for its order (default: the regime's lr.default for every row)")] = False,
    out: Annotated[Path, Opt(help="folder for runs, samples, ABLATION.md and ablation.json")] = Path("runs/ablate"),
    seeds: Annotated[str | None, Opt(help="comma-separated seeds, each a full set of rows (default: the preset's)")] = None,
    rows: Annotated[str, Opt(help="'all' or row numbers, e.g. 1,2,3 (see docs/ABLATION.md)")] = "all",
    device: Annotated[str, Opt(help="training and sampling device: auto, cpu, cuda")] = "auto",
    eval_device: Annotated[str | None, Opt(help="feature-extraction device (default: --device)")] = None,
    no_eval: Annotated[bool, Opt("--no-eval", help="train and sample only (no FID weights needed)")] = False,
    eval_only: Annotated[bool, Opt("--eval-only", help="score existing samples.npz only (no training)")] = False,
    n: Annotated[int | None, Opt(help="generated images per row and seed (default: the preset's)")] = None,
    bootstrap: Annotated[int | None, Opt(help="bootstrap resamples for the FID interval (default: the preset's)")] = None,
    extractor: Annotated[str | None, Opt(help="feature extractor (default: the preset's)")] = None,
    ref_n: Annotated[int | None, Opt(help="reference test images (default: the preset's)")] = None,
    images: Annotated[int | None, Opt(help="override the budget: training images per row")] = None,
    cache_dir: Annotated[Path | None, Opt(help="reference feature cache (default $GENORDER_FID_CACHE or ~/.cache/genorder/fid)")] = None,
    threads: Annotated[int | None, Opt(help="CPU threads for torch per worker (default: the regime's train.threads with --regime, else torch's choice; 1 when --workers > 1)")] = None,
    workers: Annotated[int, Opt(help="processes that train and score rows side by side (one per CPU core is a good choice on a CPU: 1 thread each unless --threads says otherwise); the results do not depend on it. The inference-cost timings of the first seed are measured while other rows train when N > 1")] = 1,
) -> None:
    """Train and score the VAR ablation rows under one budget; write OUT/ABLATION.md and ablation.json."""
    if threads is None and regime is not None:  # the regime's torch threads per worker (0: torch's choice)
        threads = load_regime(regime, set_ or []).train.threads or None
    set_threads(threads)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    config = AblateConfig(preset=preset, regime=regime, regime_set=set_ or [], per_order_lr=per_order_lr, out=out,
                          seeds=seeds, rows=rows, device=device, eval_device=eval_device, no_eval=no_eval,
                          eval_only=eval_only, n=n, bootstrap=bootstrap, extractor=extractor, ref_n=ref_n,
                          images=images, cache_dir=cache_dir)  # fmt: skip
    executor = LocalExecutor(workers, threads if threads is not None else (1 if workers > 1 else None))
    render(run_ablate(config, executor, progress=show))
