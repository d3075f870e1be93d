"""Timing helpers shared by `genorder bench` and `benchmarks/`.

Device work is asynchronous, so every measurement synchronises on both sides of the timed region:
on a CUDA device with events recorded on the current stream (then one synchronize to read them), on
the CPU with `time.perf_counter`. Warm-up calls come first (module load, kernel selection, autotuning,
torch.compile, CUDA-graph recording stay out of the numbers); the statistic reported is the median.

    >>> t = time_fn(lambda: model(x), device, warmup=2, repeats=5)
    >>> t.median_s, t.all_s
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def as_device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until all queued work on `device` is done (a no-op on the CPU)."""
    dev = as_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":  # pragma: no cover - not in CI
        torch.mps.synchronize()
    elif dev.type == "xpu":  # pragma: no cover - not in CI
        torch.xpu.synchronize(dev)


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed call (warm-up excluded) and their summary statistics."""

    all_s: tuple[float, ...]
    warmup: int = 0
    clock: str = "perf_counter"  # "cuda-events" on a GPU
    extra: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.all_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.all_s)

    @property
    def min_s(self) -> float:
        return min(self.all_s)

    @property
    def max_s(self) -> float:
        return max(self.all_s)

    @property
    def stdev_s(self) -> float:
        return statistics.stdev(self.all_s) if len(self.all_s) > 1 else 0.0

    @property
    def repeats(self) -> int:
        return len(self.all_s)

    def as_dict(self) -> dict:
        return {
            "median_s": self.median_s, "mean_s": self.mean_s, "min_s": self.min_s, "max_s": self.max_s,
            "stdev_s": self.stdev_s, "all_s": list(self.all_s), "warmup": self.warmup, "clock": self.clock,
        }


def time_fn(
    fn: Callable[[], object],
    device: torch.device | str | None = None,
    warmup: int = 2,
    repeats: int = 5,
) -> Timing:
    """Call `fn()` `warmup` times untimed, then `repeats` times timed; returns every duration.

    On CUDA each call is bracketed by events on the current stream (the device is synchronised
    before the first event, so earlier work is not billed to this call, and after the last one);
    elsewhere by `perf_counter` with a `synchronize` on both sides."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = as_device(device)
    for _ in range(max(warmup, 0)):
        fn()
    synchronize(dev)
    out: list[float] = []
    if dev.type == "cuda":
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            synchronize(dev)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        return Timing(tuple(out), warmup, "cuda-events")
    for _ in range(repeats):
        synchronize(dev)
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        out.append(time.perf_counter() - t0)
    return Timing(tuple(out), warmup, "perf_counter")


def reset_peak_memory(device: torch.device | str | None) -> None:
    """Start a new peak-memory window (CUDA only; a no-op elsewhere)."""
    dev = as_device(device)
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory(device: torch.device | str | None) -> int | None:
    """Bytes: the most ever allocated by tensors on `device` since the last reset; None on the CPU."""
    dev = as_device(device)
    if dev.type == "cuda":
        synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev))
    return None


def device_name(device: torch.device | str | None) -> str:
    """A human name for the device, stable across runs (the key of the device-floor cache)."""
    dev = as_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        model = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        import platform

        return f"CPU {model or platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return str(dev)
