"""How long a training run will take, before it starts: counted FLOPs and a measured step time.

    est = estimate_training(trainer)          # times a few real steps, then puts the run back as it was
    print(est.line())                         # "estimate: 300 steps x 0.41 s ... = 2.1 min ..."
    check_duration(est, force=False)          # a CPU run over an hour is refused unless forced

The step time is measured on this machine now (its load included), by running `timed` real
optimizer steps after `warmup` ones and then restoring the model, the optimizer and the budget
tracker, so the run that follows is the same as without the estimate. The number of steps comes
from the budget: `steps`, `images` / batch, or `flops` / (counted training FLOPs of a step); a
`minutes` budget is its own duration. Only training is estimated: a tokenizer trained first,
sampling and scoring come on top.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch

from genorder.errors import UserError

CPU_LIMIT_S = 3600.0  # a CPU run estimated over this is refused unless forced


@dataclass
class Estimate:
    steps: int | None  # optimizer steps the budget allows (None: bounded by minutes only)
    seconds_per_step: float  # measured, median of the timed steps
    flops_per_step: float  # counted training FLOPs (forward + backward) of one step
    seconds: float  # the estimated training time
    timed_steps: int
    device: str  # the device type, "cpu" or "cuda"
    bound: str  # which budget limit sets the estimate: steps, images, flops or minutes

    @property
    def achieved_flops(self) -> float:
        """FLOP/s the measured steps reached (counted FLOPs / measured time)."""
        return self.flops_per_step / max(self.seconds_per_step, 1e-12)

    def as_dict(self) -> dict:
        return {**asdict(self), "achieved_flops": self.achieved_flops}

    def line(self) -> str:
        """One line for the console."""
        how = (f"{self.steps:,} steps x {self.seconds_per_step:.3g} s/step" if self.steps is not None
               else "the minutes budget")  # fmt: skip
        return (
            f"estimate: {how} = {format_duration(self.seconds)} of training on {self.device} "
            f"({self.flops_per_step / 1e9:.3g} GFLOP/step counted, {self.achieved_flops / 1e9:.3g} GFLOP/s measured "
            f"over {self.timed_steps} steps; load-dependent; a tokenizer trained first, sampling and scoring come on top)"
        )


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def budget_steps(budget, batch_size: int, flops_per_step: float) -> tuple[int | None, str]:
    """(steps, limit) the budget allows: the tightest of steps, images / batch and flops / step;
    (None, "minutes") for a minutes-only budget."""
    options = []
    if budget.steps is not None:
        options.append((budget.steps, "steps"))
    if budget.images is not None:
        options.append((math.ceil(budget.images / batch_size), "images"))
    if budget.flops is not None and flops_per_step > 0:
        options.append((math.ceil(budget.flops / flops_per_step), "flops"))
    if not options:
        return None, "minutes"
    return min(options)


def measure_step_seconds(trainer, timed: int = 2, warmup: int = 1) -> float:
    """Median seconds of `timed` real optimizer steps of `trainer` (after `warmup` steps), with the
    model, the optimizer and the budget tracker restored afterwards (`train_step` reseeds from the
    step number, so the run that follows is unchanged). One process only (the steps of a
    multi-process run synchronise every process)."""
    if trainer.world.size > 1:
        raise UserError("the step-time estimate runs in one process; under torchrun it is skipped")
    model_state = copy.deepcopy(trainer.model.state_dict())
    optim_state = copy.deepcopy(trainer.optimizer.state_dict())
    spent = copy.deepcopy(trainer.tracker.spent)
    start = spent.steps
    times = []
    try:
        for i in range(warmup + timed):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            t0 = time.perf_counter()
            trainer.train_step(start + i, 0.0)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        trainer.model.load_state_dict(model_state)
        trainer.optimizer.load_state_dict(optim_state)
        trainer.tracker.spent = spent
        trainer.tracker._t0 = time.perf_counter() - spent.seconds
    times.sort()
    return times[len(times) // 2]


def estimate_training(trainer, timed: int = 2, warmup: int = 1) -> Estimate:
    """The estimated duration of `trainer`'s remaining budget (see the module docstring)."""
    cfg = trainer.cfg
    flops_per_step = float(trainer.flops_per_sample) * cfg.batch_size
    steps, bound = budget_steps(cfg.budget, cfg.batch_size, flops_per_step)
    per_step = measure_step_seconds(trainer, timed, warmup)
    done = trainer.tracker.spent.steps
    if steps is not None:
        steps = max(0, steps - done)
        seconds = steps * per_step
        if cfg.budget.minutes is not None and 60 * cfg.budget.minutes < seconds:
            seconds, bound = 60 * cfg.budget.minutes - trainer.tracker.spent.seconds, "minutes"
    else:
        seconds = 60 * cfg.budget.minutes - trainer.tracker.spent.seconds
    return Estimate(steps=steps, seconds_per_step=per_step, flops_per_step=flops_per_step, seconds=max(0.0, seconds),
                    timed_steps=timed, device=trainer.device.type, bound=bound)  # fmt: skip


def refuse_long_cpu(seconds: float, device: str, what: str, detail: str = "",
                    lower: str = "the budget (--steps), the depth, or the image size", force: bool = False,
                    limit_s: float | None = None) -> None:  # fmt: skip
    """Refuse (UserError) `what` ("this CPU run") on a CPU estimated over `limit_s` (default
    CPU_LIMIT_S) of training, unless `force`: "WHAT is estimated at ... (over ...)DETAIL; pass
    --force to run it anyway, or lower LOWER"."""
    limit_s = CPU_LIMIT_S if limit_s is None else limit_s
    if device == "cpu" and seconds > limit_s and not force:
        raise UserError(f"{what} is estimated at {format_duration(seconds)} of training (over {format_duration(limit_s)})"
                        f"{detail}; pass --force to run it anyway, or lower {lower}")  # fmt: skip


def check_duration(est: Estimate, force: bool = False, limit_s: float | None = None) -> None:
    """Refuse (UserError) a CPU run estimated over `limit_s` (default CPU_LIMIT_S) unless `force`."""
    refuse_long_cpu(est.seconds, est.device, "this CPU run",
                    f": {est.steps:,} steps x {est.seconds_per_step:.3g} s/step measured now", force=force, limit_s=limit_s)  # fmt: skip


def estimate_and_check(trainer, force: bool = False, report=None, skip: bool = False) -> Estimate | None:
    """`estimate_training` then `check_duration`, with `report(line)` told the estimate; None (no
    estimate) when `skip`, in a multi-process run, or when the budget is already spent."""
    if skip or trainer.world.size > 1 or trainer.tracker.exhausted() is not None:
        return None
    est = estimate_training(trainer)
    if report is not None:
        report(est.line())
    check_duration(est, force)
    return est
