"""How long a comparison's training will take, before anything is trained (issue 25, item 5).

For each order: the model compare would train (the regime's backbone on the tokenizer preset the
order gets, with untrained weights: a step costs the same) and a `Trainer` on the dataset, timed
over two real steps (`genorder.estimate.estimate_training`); then

    seconds = sum over orders of (steps per run, cool-down branches included) x seconds per step
              x seeds / workers

Only training is counted (tokenizers trained first, sampling and scoring come on top), and the step
time is measured now, on this machine's current load: the figure is an estimate to decide whether
to start, never a result. A CPU comparison estimated over an hour is refused unless forced.

    est = estimate_compare(plan)      # CompareEstimate(seconds, per_order)
    check_compare(est, force=False)   # UserError over an hour on a CPU
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genorder.estimate import budget_steps, format_duration, refuse_long_cpu


@dataclass
class CompareEstimate:
    seconds: float  # estimated training wall-clock of the whole comparison
    device: str
    workers: int
    seeds: int
    per_order: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> steps, s/step, tokens

    def line(self) -> str:
        parts = ", ".join(f"{nm} {o['run_steps']:,} steps x {o['seconds_per_step']:.3g} s"
                          for nm, o in self.per_order.items())  # fmt: skip
        return (f"estimate: {format_duration(self.seconds)} of training ({parts}; x {self.seeds} seeds / "
                f"{self.workers} workers; measured now, load-dependent; tokenizers, sampling and scoring come on top)")


def branch_steps(steps: int, points: int, schedule: str, cooldown: float) -> int:
    """Steps of one run with its evaluation points: under `wsd` every point but the last is the end of
    its own cool-down branch (`cooldown` of that point's length), run beside the trunk."""
    if schedule != "wsd" or points <= 1:
        return steps
    return steps + sum(round(cooldown * steps * k / points) for k in range(1, points))


def estimate_compare(*, orders: dict[str, Any], tokenizers: dict[str, Any], dataset, sections: dict,
                     depth: int, batch_size: int, budget: dict, points: int, schedule: str, cooldown: float,
                     seeds: int, workers: int, device: torch.device) -> CompareEstimate:  # fmt: skip
    """orders: name -> Order; tokenizers: name -> the Tokenizer it will get (a preset's untrained
    weights, or the checkpoint given: only the shapes matter)."""
    from genorder.budget import Budget
    from genorder.config import build_config
    from genorder.estimate import estimate_training
    from genorder.model import BackboneConfig, build_model
    from genorder.trainer import TrainConfig, Trainer

    bb = build_config(BackboneConfig, sections.get("backbone"), {"depth": depth}, section="backbone")
    train_section = {k: v for k, v in sections.get("train", {}).items() if k != "budget"}
    bud = build_config(Budget, budget, section="budget")
    tcfg = build_config(TrainConfig, train_section, {"batch_size": batch_size, "budget": bud, "device": str(device),
                                                     "schedule": schedule, "cooldown": cooldown}, section="train")  # fmt: skip
    per_order: dict[str, dict[str, Any]] = {}
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="genorder-estimate-") as tmp:
        for nm, order in orders.items():
            tokenizer = tokenizers[nm].to(device)
            torch.manual_seed(0)
            model = build_model(order, tokenizer, bb, dataset.num_classes).to(device)
            trainer = Trainer(order, tokenizer, model, dataset, tcfg, Path(tmp) / nm, {})
            est = estimate_training(trainer)
            steps, _ = budget_steps(bud, batch_size, est.flops_per_step)
            if steps is None:  # a minutes budget: its own duration
                run_s = 60 * float(bud.minutes)
                run_steps = 0
            else:
                run_steps = branch_steps(steps, points, schedule, cooldown)
                run_s = run_steps * est.seconds_per_step
            per_order[nm] = {"run_steps": run_steps, "seconds_per_step": est.seconds_per_step, "run_seconds": run_s,
                             "tokens": float(sum(s * s for s in tokenizer.scales))}  # fmt: skip
            total += run_s * seeds
    return CompareEstimate(seconds=total / max(1, min(workers, seeds * len(orders))), device=device.type,
                           workers=workers, seeds=seeds, per_order=per_order)  # fmt: skip


def check_compare(est: CompareEstimate, force: bool = False, limit_s: float | None = None) -> None:
    """Refuse a CPU comparison estimated over `limit_s` (default an hour) unless `force`."""
    refuse_long_cpu(est.seconds, est.device, "this CPU comparison", force=force, limit_s=limit_s,
                    lower="the budget (--steps), the depth, the seeds, or the image size (--image-size; the CPU presets give 8x8 tokens)")  # fmt: skip
