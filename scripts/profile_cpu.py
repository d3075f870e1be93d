"""Profile the CPU regime: one training step and one sampling block per order, one torch thread.

    python scripts/profile_cpu.py --json profile.json                    # next-scale, raster, maskgit
    python scripts/profile_cpu.py --orders raster --repeats 3 --json p.json
    python scripts/profile_cpu.py --summarize a.json b.json --json benchmarks/profile-cpu.json

What it times is what the main job (`genorder compare`, docs/RESULTS.md §0.0) runs: the shared
`Trainer.train_step` (batch of 64 Fashion-MNIST images -> tokenizer encode -> the order's training
batch -> forward, backward, grad clip, AdamW) on d2 at width 64 with the CPU regime's schedule, and
one sampling block (`genorder.sampling.generate_design`, CFG 1.5, the block of the paired design)
followed by the decoder. The tokenizers are the presets the regime uses (msvq-fmnist-cpu for
next-scale, vq-fmnist-cpu for raster and MaskGIT) with untrained weights: the cost of a step does not
depend on the weights (MaskGIT's and next-scale's loops have a fixed number of steps, raster's a
fixed number of tokens).

Per order: `--repeats` rounds of `--steps` timed training steps (after `--warmup`), the median of
each round's per-step median, and the same for sampling blocks; then one `torch.profiler` pass over
`--profile-steps` steps (and one block), from which the top ops by self CPU time and the shares of
the step's phases (data: the batch indexing and uint8 -> float; tokenize: the encoder and
quantizer; order: `training_batch`; forward; backward; clip; optimizer) are taken, with "other" the
Python and framework time outside every named phase. Writes a JSON (command, date, CPU model, torch
version, per-order ms per train step and per sampled image, top ops) that docs/RESULTS.md renders.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

PRESETS = {"multi-scale": "msvq-fmnist-cpu", "single-scale": "vq-fmnist-cpu"}
PHASES = ("data", "tokenize", "order", "forward", "backward", "clip", "optimizer")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


@contextmanager
def phase_hooks(trainer):
    """Wrap the trainer's phases in `record_function` ranges (for the profiler only)."""
    from torch.profiler import record_function

    saved = {}

    def wrap(obj, name: str, label: str):
        fn = getattr(obj, name)
        saved[(id(obj), name)] = (obj, name, fn, name in vars(obj))

        def wrapped(*a, **k):
            with record_function(label):
                return fn(*a, **k)

        setattr(obj, name, wrapped)

    wrap(trainer, "_items" if hasattr(trainer, "_items") else "_batch", "phase:data")  # the dataset reads
    wrap(trainer.tokenizer, "encode", "phase:tokenize")
    wrap(trainer.order, "training_batch", "phase:order")
    wrap(trainer, "net", "phase:forward")
    wrap(trainer.optimizer, "step", "phase:optimizer")
    real_clip = torch.nn.utils.clip_grad_norm_
    real_backward = torch.Tensor.backward

    def clip(*a, **k):
        with record_function("phase:clip"):
            return real_clip(*a, **k)

    def backward(self, *a, **k):
        with record_function("phase:backward"):
            return real_backward(self, *a, **k)

    torch.nn.utils.clip_grad_norm_ = clip
    torch.Tensor.backward = backward
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = real_clip
        torch.Tensor.backward = real_backward
        for obj, name, fn, own in saved.values():
            if own:
                setattr(obj, name, fn)
            else:
                delattr(obj, name)


def top_ops(prof, n: int, per: int) -> list[dict]:
    rows = []
    for e in prof.key_averages():
        if e.key.startswith("phase:") or e.key.startswith("ProfilerStep"):
            continue
        rows.append({"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3 / per, "calls": e.count / per})
    rows.sort(key=lambda r: -r["self_cpu_ms"])
    return rows[:n]


def phase_shares(prof, wall_ms: float, per: int) -> dict[str, float]:
    """ms per step of each phase (its CPU total, nested ops included) and `other` = wall - phases."""
    got = {p: 0.0 for p in PHASES}
    for e in prof.key_averages():
        if e.key.startswith("phase:"):
            got[e.key.split(":", 1)[1]] += e.cpu_time_total / 1e3 / per
    got["other"] = max(0.0, wall_ms - sum(got.values()))
    return got


def build(order_name: str, dataset, args):
    from genorder.model import BackboneConfig, build_model
    from genorder.registry import registry
    from genorder.regime import load_regime
    from genorder.trainer import TrainConfig, Trainer
    from genorder.budget import Budget

    reg = load_regime("cpu")
    order = registry("orders").create(order_name, {})
    torch.manual_seed(0)
    tok = registry("tokenizers").create(PRESETS[order.tokenizer_kind], {}).eval()
    bb = BackboneConfig(depth=reg.backbone.depth, width=reg.width(reg.backbone.depth))
    torch.manual_seed(0)
    model = build_model(order, tok, bb, dataset.num_classes)
    lr, _ = reg.lr_for(order_name)
    cfg = TrainConfig(batch_size=reg.train.batch_size, lr=lr, schedule=reg.train.schedule, cooldown=reg.train.cooldown,
                      budget=Budget(steps=reg.train.steps), device="cpu", seed=0, checkpoint_every=None)  # fmt: skip
    trainer = Trainer(order, tok, model, dataset, cfg, Path(tempfile.mkdtemp(prefix="profile-")))
    return order, tok, model, trainer


def time_rounds(fn, warmup: int, n: int, repeats: int) -> tuple[float, list[float]]:
    """fn() timed n times per round after `warmup` calls; -> (median of the round medians, the round medians) in ms."""
    for _ in range(warmup):
        fn()
    rounds = []
    for _ in range(repeats):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        rounds.append(statistics.median(ts))
    return statistics.median(rounds), rounds


def profile_order(order_name: str, dataset, args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from genorder.data import class_balanced_labels
    from genorder.sampling import generate_design
    from genorder.training_run import make_sampler

    order, tok, model, trainer = build(order_name, dataset, args)
    sampler = make_sampler({}, cfg=args.cfg, top_k=0)
    step = {"s": 0}

    losses: list[float] = []

    def train_once():
        losses.append(trainer.train_step(step["s"], step["s"] / trainer.cfg.budget.steps)["loss"])
        step["s"] += 1

    row: dict = {"order": order_name, "tokenizer": PRESETS[order.tokenizer_kind], "seq_len": model.seq_len,
                 "gen_steps": order.num_steps(order.layout(tok))}  # fmt: skip
    has_cache = getattr(trainer, "token_cache", None) is not None
    if args.cache == "off" and has_cache:
        trainer.token_cache = None
    elif args.cache == "cold" and has_cache:  # empty, not the one a previous order's run filled in this process
        from genorder.trainer_token_cache import TokenCache

        trainer.token_cache = TokenCache(len(dataset))
    elif args.cache == "warm" and has_cache:  # the batches of every step timed below already encoded once
        for s in range(args.warmup + args.steps * args.repeats + args.profile_steps):
            trainer._tokens(s)
    row["token_cache"] = args.cache if has_cache else "absent"
    if "train" in args.parts:
        train_ms, train_rounds = time_rounds(train_once, args.warmup, args.steps, args.repeats)
        with phase_hooks(trainer), profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(args.profile_steps):
                train_once()
            wall = (time.perf_counter() - t0) * 1e3 / args.profile_steps
        row.update({"train_ms_per_step": train_ms, "train_rounds_ms": train_rounds,
                    "train_phases_ms": phase_shares(prof, wall, args.profile_steps), "train_profiled_wall_ms": wall,
                    "train_top_ops": top_ops(prof, args.top, args.profile_steps),
                    "train_losses": losses})  # fmt: skip
    if "sample" not in args.parts:
        return row

    model.eval()
    labels = class_balanced_labels(model.num_classes, args.block)
    seeds = torch.arange(args.block, dtype=torch.int64) + 12345
    out = {}

    def sample_once():
        out["images"] = generate_design(order, model, tok, labels, seeds, sampler, block=args.block)

    sample_ms, sample_rounds = time_rounds(sample_once, 1, args.blocks, args.repeats)
    with profile(activities=[ProfilerActivity.CPU]) as sprof:
        t0 = time.perf_counter()
        sample_once()
        swall = (time.perf_counter() - t0) * 1e3
    ops_ms = sum(e.self_cpu_time_total for e in sprof.key_averages()) / 1e3
    return {
        **row, "sample_block": args.block, "sample_ms_per_block": sample_ms, "sample_rounds_ms": sample_rounds,
        "sample_ms_per_image": sample_ms / args.block,
        "sample_profiled_wall_ms": swall, "sample_ops_ms": ops_ms,
        "sample_other_ms": max(0.0, swall - ops_ms),
        "sample_top_ops": top_ops(sprof, args.top, 1),
        "sample_sha256": hashlib.sha256(out["images"].numpy().tobytes()).hexdigest(),
    }  # fmt: skip


METRICS = (("train_ms_per_step", "train ms/step"), ("sample_ms_per_image", "sample ms/image"))


def summarize(paths: list[Path], out: Path) -> str:
    """Several runs' JSONs -> one JSON (every run, and per label and order the median over the runs
    of each run's figure) and its markdown table, columns in the order the labels first appear."""
    runs = [json.loads(p.read_text()) for p in paths]
    labels: list[str] = []
    cells: dict[tuple[str, str, str], list[float]] = {}
    for r in runs:
        label = r.get("label") or "?"
        labels += [label] if label not in labels else []
        for row in r["orders"]:
            for key, _ in METRICS:
                if key in row:
                    cells.setdefault((label, row["order"], key), []).append(row[key])
    summary = {f"{lab}/{o}/{k}": {"median": statistics.median(v), "runs": v} for (lab, o, k), v in cells.items()}
    orders = list(dict.fromkeys(row["order"] for r in runs for row in r["orders"]))
    lines = ["| order | figure | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for o in orders:
        for key, name in METRICS:
            vals = [cells.get((lab, o, key)) for lab in labels]
            if any(vals):
                shown = [f"{statistics.median(v):.1f} ({', '.join(f'{x:.1f}' for x in v)})" if v else "" for v in vals]
                lines.append(f"| {o} | {name} | " + " | ".join(shown) + " |")
    table = "\n".join(lines)
    meta = {k: runs[0].get(k) for k in ("cpu_model", "torch", "python", "threads")}
    doc = {"genorder_profile_cpu_summary": 1, **meta, "runs": runs, "summary": summary, "table_md": table,
           "note": "median over runs of each run's median of 3 rounds; the machine was shared with other jobs, so the "
                   "times are upper bounds; results are deterministic on one machine but may differ across CPU models"}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--summarize", type=Path, nargs="+", default=None,
                    help="combine these runs' JSONs into --json (medians per label and order) and print the table")
    ap.add_argument("--orders", default="next-scale,raster,maskgit")
    ap.add_argument("--parts", default="train,sample", help="what to time: train, sample or both")
    ap.add_argument("--cache", choices=["cold", "warm", "off"], default="cold",
                    help="the trainer's token cache: empty (the first epoch), holding every timed batch (a later "
                         "epoch or a cool-down branch), or off")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    ap.add_argument("--blocks", type=int, default=2, help="timed sampling blocks per round")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; the median of the round medians is reported")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--block", type=int, default=50, help="images per sampling block (the paired design's)")
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--label", default=None, help="a name for this measurement (e.g. before / after)")
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.summarize:
        print(summarize(a.summarize, a.json))
        return 0
    torch.set_num_threads(a.threads)
    from genorder.data import load_dataset

    dataset = load_dataset("fashion-mnist", "train", image_size=32)
    report = {
        "genorder_profile_cpu": 1,
        "command": " ".join(["python", "scripts/profile_cpu.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "label": a.label, "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
        "threads": a.threads, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "orders": [],
    }  # fmt: skip
    for name in [s.strip() for s in a.orders.split(",") if s.strip()]:
        row = profile_order(name, dataset, a)
        report["orders"].append(row)
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n")
        if "train_ms_per_step" in row:
            ph = ", ".join(f"{k} {v:.1f}" for k, v in row["train_phases_ms"].items())
            print(f"{name}: train {row['train_ms_per_step']:.1f} ms/step ({ph})", flush=True)
        if "sample_ms_per_image" in row:
            print(f"{name}: sample {row['sample_ms_per_image']:.2f} ms/image", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
