"""`genorder scale`: the scaling law of every order (VAR §4.1). The work is
`genorder.experiments.scale`; this command parses its options into a `ScaleConfig`, builds the
executor from --workers, prints the plan, progress and the fits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from genorder_cli.app import app, console, guarded, parse_csv
from rich.table import Table

from genorder.errors import UserError
from genorder.executors import LocalExecutor
from genorder.experiments.scale import ScaleConfig, ScalePlan, ScaleResult, plan_scale, run_scale
from genorder.regime import load_regime

Opt = typer.Option


def show(text: str) -> None:
    console.print(text, highlight=False)


def _fmt_ci(ci) -> str:
    return "—" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def render_plan(plan: ScalePlan) -> None:
    t = Table(title=f"scale: {len(plan.plans)} points, {plan.sweep.tokens_per_param:g} tokens per parameter")
    for col in ("point", "params", "tokens/img", "steps", "images", "TFLOP", "status"):
        t.add_column(col, justify="left" if col in ("point", "status") else "right")
    for p in plan.plans:
        t.add_row(p.name, f"{p.params:,}", str(p.tokens_per_image), f"{p.steps:,}", f"{p.images:,}",
                  f"{p.train_flops / 1e12:.3g}", plan.status(p))  # fmt: skip
    console.print(t)


def render(result: ScaleResult) -> None:
    t = Table(title="power law per order: test loss = a · X^b (log-log least squares)")
    for col in ("order", "X", "points", "b", "95% (regression)", "95% (bootstrap)", "Pearson r"):
        t.add_column(col, justify="left" if col in ("order", "X") else "right")
    for order, by_x in result.fits["loss"].items():
        for x, f in by_x.items():
            if "b" not in f:
                t.add_row(order, x, str(f.get("n", 0)), "—", f.get("error", ""), "", "")
                continue
            t.add_row(order, x, str(f["n"]), f"{f['b']:+.4f}", _fmt_ci(f["b_ci_t"]), _fmt_ci(f["b_ci_boot"]), f"{f['r']:+.4f}")
    console.print(t)
    if result.frontier:
        console.print("frontier (lowest loss for the FLOPs): " + ", ".join(f"{q['order']}-d{q['depth']}" for q in result.frontier))
    out = result.out
    console.print(f"wrote {out / 'scaling.json'}, {out / 'scaling_flops.png'}, {out / 'scaling_params.png'}")


@app.command("scale")
@guarded
def scale(
    orders: Annotated[str | None, Opt(help="comma-separated orders (default: every registered order; see `genorder plugins`)")] = None,
    depths: Annotated[str, Opt(help="comma-separated depths, at least 3 (4 or more for a law worth the name)")] = "1,2,3,4",
    width_per_depth: Annotated[int | None, Opt(help="width C = this x depth (default: the regime's, else 64, the backbone's default)")] = None,
    tokens_per_param: Annotated[float, Opt(help="target tokens seen per parameter, the same for every point")] = 20.0,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH or npz:PATH")] = "fashion-mnist",
    tokenizer_multi: Annotated[str | None, Opt(help="tokenizer of the orders that take multi-scale tokens: a checkpoint, or a preset trained first when not cached (default: the regime's, else the preset declared for the dataset's shape)")] = None,
    tokenizer_single: Annotated[str | None, Opt(help="tokenizer of the orders that take single-scale tokens (same rules)")] = None,
    tokenizer_steps: Annotated[int | None, Opt(help="steps when a tokenizer preset has to be trained first (default: the regime's, else 300)")] = None,
    batch_size: Annotated[int | None, Opt(help="images per optimizer step, every point (default: the regime's, else 64)")] = None,
    lr: Annotated[float | None, Opt(help="peak learning rate, every point (default: the regime's lr.default, else 2e-3)")] = None,
    seed: Annotated[int | None, Opt(help="seed of initialisation, data order and sampling (default: the regime's first seed, else 0)")] = None,
    eval_n: Annotated[int | None, Opt(help="test images for the held-out token loss (default: the regime's evaluation.heldout_n, else 1000)")] = None,
    accuracy_n: Annotated[int, Opt(help="class-consistency samples per point (0: off; needs genorder.classifier)")] = 0,
    bootstrap: Annotated[int, Opt(help="bootstrap resamples of the points for the exponent's interval")] = 2000,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    out: Annotated[Path, Opt(help="folder: points.jsonl, scaling.json, scaling_flops.png, scaling_params.png, runs/")] = Path("runs/scale"),
    regime: Annotated[str | None, Opt(help="cpu, gpu or a TOML file (genorder/regimes/): width, batch, lr, schedule, held-out size and tokenizer budgets of every point, unless an option gives them")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="override a regime key, e.g. --set train.batch_size=32 (repeatable; needs --regime)")] = None,
    plan_only: Annotated[bool, Opt("--plan-only", help="print the points (params, steps, FLOPs) and write nothing")] = False,
    workers: Annotated[int, Opt(help="processes that train points side by side, 1 torch thread each when N > 1 (one per CPU core is a good choice on a CPU); the points do not depend on it")] = 1,
) -> None:
    """Train every order at several sizes under the same tokens per parameter; fit L = a·X^b per order."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    config = ScaleConfig(
        orders=parse_csv(orders) or None, depths=parse_csv(depths, int), width_per_depth=width_per_depth,
        tokens_per_param=tokens_per_param, batch_size=batch_size, lr=lr, seed=seed, eval_n=eval_n,
        accuracy_n=accuracy_n, bootstrap=bootstrap, dataset=dataset, tokenizer_multi=tokenizer_multi,
        tokenizer_single=tokenizer_single, tokenizer_steps=tokenizer_steps, device=device, out=out, regime=regime,
        regime_set=set_ or [],
    )  # fmt: skip
    threads = load_regime(regime, set_ or []).train.threads if regime is not None else 0  # 0: as before regimes
    if threads:  # the regime's torch threads per worker
        torch.set_num_threads(threads)
    plan = plan_scale(config, train_tokenizers=not plan_only)
    render_plan(plan)
    if plan_only:
        return
    executor = LocalExecutor(workers, torch.get_num_threads() if workers == 1 else (threads or 1))
    render(run_scale(config, executor, progress=show, plan=plan))
