"""Time one training step of the shared trainer's recipe: images/s, MFU and peak memory, for each
order x attention backend (FlexAttention block mask against SDPA with a boolean mask) x batch size.

    python scripts/train_step_speed.py --resolution 256 --depth 16 --batch-sizes 64,128 --json out.json

One step = `genorder.bench.make_train_step` (bf16 autocast on CUDA, AdamW, grad clip; random tokens,
the tokenizer's encoder excluded, as VAR's own timing), timed with `genorder.timing.time_fn` (CUDA
events, median of --repeats after --warmup). MFU = counted training FLOPs per second
(`genorder.flops.train_flops_per_sample`, 3x forward) / the GPU's nominal dense bf16 peak
(`genorder.trainer.device_peak_flops`); `of_matmul_ceiling` divides by the matmul rate measured on
this device instead (`genorder.bench.device_ceilings`). The JSON is rewritten after every row, so a
run cut short keeps the rows already timed. Used by `scripts/gpu_results.sh`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

from genorder.bench import PRESETS, device_ceilings, make_train_step, resolve_dtype, write_report
from genorder.flops import train_flops_per_sample
from genorder.model import BackboneConfig, build_model, count_params
from genorder.registry import registry
from genorder.timing import device_name, peak_memory, reset_peak_memory, time_fn
from genorder.tokenizer_training import configure_for_dataset
from genorder.trainer import device_peak_flops, resolve_device


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", default="next-scale", help="comma-separated order names")
    ap.add_argument("--resolution", choices=sorted(PRESETS), default="256")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--batch-sizes", default="64,128")
    ap.add_argument("--backends", default="flex,sdpa", help="comma-separated: flex, sdpa")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    dtype = resolve_dtype("auto", device)
    ceilings = device_ceilings(device, dtype)
    peak = device_peak_flops(device)
    preset = PRESETS[a.resolution]
    data = {
        "genorder_train_step": 1, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "config": vars(a) | {"json": str(a.json)}, "nominal_peak_flops": peak,
        "measured_matmul_flops": ceilings.matmul_flops, "rows": [],
    }  # fmt: skip
    for order_name in _csv(a.orders):
        order = registry("orders").create(order_name, {})
        # the tokenizer `genorder bench` uses at this resolution: the one declared for the shape
        tok_name, tok_opts = configure_for_dataset(None, order.tokenizer_kind, preset["channels"], preset["image_size"])
        with torch.device(device):
            tok = registry("tokenizers").create(tok_name, tok_opts).eval()
        # batch-major: both backends at the first batch size before the next, so a run cut short
        # still holds a FlexAttention-against-SDPA pair
        for batch, backend in ((int(b), k) for b in _csv(a.batch_sizes) for k in _csv(a.backends)):
            row = {"order": order_name, "backend": backend, "batch": batch, "depth": a.depth,
                   "resolution": a.resolution, "amp_bf16": device.type == "cuda"}  # fmt: skip
            model = None
            try:
                torch.manual_seed(0)
                with torch.device(device):
                    model = build_model(order, tok, BackboneConfig(depth=a.depth, attn_backend=backend),
                                        preset["num_classes"])  # fmt: skip
                flops = train_flops_per_sample(model) * batch
                row.update(params=count_params(model), seq_len=model.seq_len, train_gflops_per_image=flops / batch / 1e9,
                           attention_mode=model._plan(0, model.seq_len, False, device).mode)  # fmt: skip
                from genorder.memory import (  # the memory model's figure, next to the measured peak
                    estimate,
                    shape_of,
                )

                row["memory_model_bytes"] = estimate(shape_of(model, model.seq_len), batch, "none",
                                                     amp=device.type == "cuda").total  # fmt: skip
                step = make_train_step(order, tok, model, batch, device)
                reset_peak_memory(device)
                t = time_fn(step, device, a.warmup, a.repeats)
                loss = float(step())
                row.update(
                    seconds_per_step=t.median_s, all_s=list(t.all_s), clock=t.clock, images_per_s=batch / t.median_s,
                    tflops_per_s=flops / t.median_s / 1e12, mfu=(flops / t.median_s / peak) if peak else None,
                    of_matmul_ceiling=flops / t.median_s / ceilings.matmul_flops,
                    peak_memory_bytes=peak_memory(device), loss=loss,
                )  # fmt: skip
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            except Exception as e:  # noqa: BLE001 - one failed row must not lose the others
                row["error"] = f"{type(e).__name__}: {e}"[:500]
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            data["rows"].append(row)
            write_report(a.json, data)
            shown = {k: row.get(k) for k in ("order", "backend", "batch", "images_per_s", "mfu", "peak_memory_bytes", "error")}
            print(json.dumps(shown), flush=True)
    write_report(a.json, data)
    return 0 if all("error" not in r for r in data["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
