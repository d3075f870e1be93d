"""`genorder bench`: the orders' sampling speed side by side, with counted FLOPs and the device floor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from genorder.bench import (
    BenchConfig,
    BenchRow,
    default_baseline,
    failures,
    ceilings_for,
    plot_throughput,
    report,
    resolve_device,
    resolve_dtype,
    validate,
    write_report,
)
from genorder.bench import bench as run_bench
from genorder.config import build_config
from genorder.errors import UserError
from genorder_cli.app import app, console, guarded, parse_csv, progress_bar

Opt = typer.Option

CPU_DEPTH = 2  # default depth when no GPU is present and no --resolution / --depth is given
CPU_BATCH_SIZES = [1, 4, 16]


def _si(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def _bytes(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 2**30:.1f}GiB" if n >= 2**30 else f"{n / 2**20:.0f}MiB"


def _num(v: float | None, fmt: str = "{:.1f}", none: str = "–") -> str:
    return none if v is None else fmt.format(v)


def _sig(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}" if v >= 0.995 else f"{v:.3g}"


def _gflops(v: float) -> str:
    return f"{v:,.1f}" if v >= 10 else f"{v:.3g}"


def rows_tables(rows: list[BenchRow], title: str, baseline: str | None) -> list[Table]:
    """Two tables that fit an 80-column terminal: speed, then cost (FLOPs, memory, device floor)."""
    depths = sorted({r.depth for r in rows})
    if len(depths) == 1:
        title = f"d{depths[0]} · {title}"
    width = min(max((len(r.order) for r in rows), default=5), 12)
    base = f"× {baseline}" if baseline else "× base"
    tables = []
    for kind, cols in (
        ("speed", ("batch", "ms/batch", "images/s", "ms/image", "decode", base)),
        ("cost", ("batch", "steps", "params", "GFLOP/img", "peak mem", "floor ms", "%floor")),
    ):
        t = Table(title=f"{kind} · {title}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        t.add_column("order", justify="left", overflow="fold", min_width=width)
        for name in cols:
            t.add_column(name, justify="right", no_wrap=True)
        tables.append(t)
    speed, cost = tables
    for r in rows:
        cost.add_row(r.order, str(r.batch), str(r.steps), _si(r.params), _gflops(r.gflops_per_image),
                     _bytes(r.peak_memory_bytes), _sig(1e3 * r.floor_s if r.floor_s else None),
                     _num(100 * r.floor_fraction if r.floor_fraction else None, "{:.1f}%"))
        if r.error:
            speed.add_row(r.order, str(r.batch), f"[red]{escape('failed' if r.failed else r.error)}[/red]", "–", "–", "–", "–")
            continue
        decode = (_num(100 * r.decode_share, "{:.0f}%") if r.decode_share is not None
                  else f"({1e3 * r.decode_s:.1f} ms)" if r.decode_s else "–")
        speed.add_row(
            r.order, str(r.batch), _sig(1e3 * r.latency_s if r.latency_s else None),
            _sig(r.images_per_s), _sig(r.ms_per_image), decode,
            _num(r.ratio_to_baseline, "{:.2f}×"),
        )
    return tables


@app.command("bench")
@guarded
def bench(
    orders: Annotated[Optional[str], Opt(help="comma-separated order specs, NAME or NAME:key=value (see `genorder plugins`); default every registered order, the declared reference baseline first")] = None,
    depth: Annotated[Optional[int], Opt(help=f"backbone depth d (width 64·d); default 16 ({CPU_DEPTH} on a CPU without --resolution)")] = None,
    batch_sizes: Annotated[Optional[str], Opt(help="comma-separated batch sizes (default 1,16,64; 1,4,16 on a CPU without --resolution)")] = None,
    resolution: Annotated[Optional[str], Opt(help="256: the paper's layout (3x256 px, the tokenizers declared for it: VAR's 256 px VQVAE, 16x16 tokens, 10 scales, V 4096; 1000 classes, random weights); tiny: 3x16 px toy for CPUs. Default 256 on a GPU, tiny on a CPU")] = None,
    run: Annotated[Optional[Path], Opt(help="time trained checkpoints: a run directory or a folder of runs (replaces --orders/--depth/--resolution)")] = None,
    cfg: Annotated[bool, Opt("--cfg/--no-cfg", help="classifier-free guidance (the backbone sees a doubled batch)")] = True,
    cfg_scale: Annotated[float, Opt(help="CFG strength (VAR's official timing: 1.5)")] = 1.5,
    top_k: Annotated[int, Opt(help="top-k (official timing: 900)")] = 900,
    top_p: Annotated[float, Opt(help="top-p (official timing: 0.95)")] = 0.95,
    include_decode: Annotated[bool, Opt("--include-decode/--tokens-only", help="include the tokenizer decode to pixels in the latency (the decode is timed separately either way)")] = True,
    kv_cache: Annotated[bool, Opt("--kv-cache/--no-kv-cache", help="every order that declares a KV-cache option samples with its static KV cache (off: recompute the prefix every step, the paper's O(n^6) baseline)")] = True,
    baseline: Annotated[Optional[str], Opt(help="order label the last column is relative to (baseline latency / row latency); default the order declaring itself the reference baseline, else the first")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda, cuda:1")] = "auto",
    dtype: Annotated[str, Opt(help="auto (bf16 on CUDA, fp32 on a CPU), bf16 or fp32")] = "auto",
    warmup: Annotated[int, Opt(help="untimed calls before timing")] = 2,
    repeats: Annotated[int, Opt(help="timed calls; the median is reported")] = 5,
    compile: Annotated[bool, Opt("--compile/--no-compile", help="torch.compile the per-step backbone call (CUDA graphs on a GPU); fixed-shape cached steps")] = False,
    static_step: Annotated[Optional[bool], Opt("--static-step/--no-static-step", help="fixed-shape cached steps (whole KV cache + position mask) and AdaLN computed once per generation; default: as --compile")] = None,
    threads: Annotated[Optional[int], Opt(help="CPU threads while timing (default: torch's)")] = None,
    out: Annotated[Optional[Path], Opt(help="output folder of the JSON report and the PNG (default runs/bench)")] = None,
    json_path: Annotated[Optional[Path], Opt("--json", help="JSON report path (default OUT/bench-<resolution>-d<depth>.json)")] = None,
    plot: Annotated[Optional[Path], Opt(help="PNG plot path (default: the JSON path with .png)")] = None,
) -> None:
    """Time every order side by side on one device: latency, images/s, counted FLOPs, device floor.

    Each order samples a whole batch (CFG on: doubled) with warm-up, device synchronisation (CUDA
    events) and medians; the decode is timed separately so its share is known. Writes a JSON report
    and a PNG (images/s against batch size). Random weights unless --run points at trained runs.
    """
    has_cuda = torch.cuda.is_available() and device != "cpu"
    notes = []
    if resolution is None and run is None:
        if has_cuda or device.startswith("cuda"):
            resolution = "256"
        else:
            resolution = "tiny"
            if depth is None:
                depth = CPU_DEPTH
            if batch_sizes is None:
                batch_sizes = ",".join(map(str, CPU_BATCH_SIZES))
            notes.append(
                f"no CUDA device: using --resolution tiny, depth {depth}, batch sizes {batch_sizes} "
                "(pass --resolution 256 --depth 16 for the paper's size, which is very slow on a CPU)"
            )
    sizes = parse_csv(batch_sizes, int) if batch_sizes is not None else None
    config = build_config(
        BenchConfig,
        {
            "orders": parse_csv(orders) or None, "depth": depth, "batch_sizes": sizes, "resolution": resolution,
            "run": str(run) if run else None, "cfg": cfg, "cfg_scale": cfg_scale, "top_k": top_k, "top_p": top_p,
            "include_decode": include_decode, "kv_cache": kv_cache, "baseline": baseline, "device": device,
            "dtype": dtype, "warmup": warmup, "repeats": repeats, "compile": compile,
            "static_step": static_step,
            "threads": threads,
        },
        section="bench",
    )
    validate(config)  # every user error before anything runs or is written
    dev = resolve_device(config.device)
    dt = resolve_dtype(config.dtype, dev)
    res_name = "run" if config.run else config.resolution
    stem = f"bench-{res_name}-d{config.depth}" if not config.run else f"bench-{Path(config.run).name}"
    json_out = json_path or (out or Path("runs/bench")) / f"{stem}.json"
    png_out = plot or json_out.with_suffix(".png")
    for n in notes:
        console.print(f"[yellow]note:[/yellow] {n}")
    what = f"runs in {config.run}" if config.run else f"{config.resolution} layout, d{config.depth}, random weights"
    console.print(
        f"[bold]bench[/bold] {what} · device {dev} ({str(dt).removeprefix('torch.')}) · CFG "
        f"{'on (cfg ' + str(config.cfg_scale) + ', batch doubled)' if config.cfg else 'off'} · top-k {config.top_k} top-p {config.top_p} · "
        f"{'decode included' if config.include_decode else 'tokens only'} · KV cache {'on' if config.kv_cache else 'off'}"
        f"{' · compiled' if config.compile else ''}{' · static steps' if config.use_static else ''}"
        f" · warm-up {config.warmup}, median of {config.repeats}"
    )
    total = (1 if config.run else len(config.orders)) * len(config.batch_sizes)
    with progress_bar("bench", total=total) as update:
        rows = run_bench(config, progress=lambda done, tot, info: update(done, tot, info=info))
    ceilings = ceilings_for(config)  # the cached ceilings the floors were computed with
    if config.baseline not in (None, "auto") and rows and all(config.baseline not in (r.order, r.order_name) for r in rows):
        console.print(f"[yellow]note:[/yellow] baseline {config.baseline!r} is not among the rows; no ratios")
    title = f"{rows[0].device if rows else dev} · {str(dt).removeprefix('torch.')}"
    baseline = default_baseline(rows) if config.baseline == "auto" else config.baseline
    for table in rows_tables(rows, title, baseline):
        console.print(table)
    console.print(
        "decode: its share of ms/batch (in brackets when --tokens-only: timed, not included) · "
        f"× {baseline}: its latency / this latency at the same batch · %floor: floor / measured"
    )
    if ceilings:
        console.print(
            f"floor: per step max(FLOPs / {ceilings.matmul_flops / 1e12:.3g} TFLOP/s, bytes / "
            f"{ceilings.bandwidth / 1e9:.3g} GB/s) — both measured on this device ({ceilings.measured})"
        )
    write_report(json_out, report(config, rows, ceilings))
    plot_throughput(rows, png_out, f"genorder bench · {what} · {title}")
    console.print(f"wrote {json_out} and {png_out}")
    failed = failures(rows)
    if failed:  # the other orders' results are written above; the failing ones are named here
        raise UserError("\n".join(failed))
