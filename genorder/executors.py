"""Where an experiment's jobs run: one interface, several places.

An experiment (`genorder.experiments`) builds a list of `genorder.parallel.Job`s (module-level
functions of plain arguments, with dependencies) and hands them to an executor:

    >>> ex = LocalExecutor(workers=2, threads=1)
    >>> results = ex.run(jobs, on_event=lambda kind, name, seconds: ...)

Every executor returns {job name: return value} and calls `on_event(kind, name, seconds)` with kind
"start" and "done", and `on_result(name, value)` as each job ends. Each job computes the same
numbers wherever it runs, so an experiment's results do not depend on the executor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from genorder.parallel import Job, run_jobs

OnEvent = Callable[[str, str, float], None]
OnResult = Callable[[str, Any], None]


@runtime_checkable
class Executor(Protocol):
    """Runs a job graph; `workers` is how many jobs it runs at once (1: one after another)."""

    workers: int

    def run(self, jobs: list[Job], on_event: OnEvent | None = None, on_result: OnResult | None = None) -> dict[str, Any]: ...


class LocalExecutor:
    """Worker processes on this machine (`spawn`ed), each with `threads` torch threads; workers=1
    runs the jobs one after another in this process."""

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads

    def run(self, jobs: list[Job], on_event: OnEvent | None = None, on_result: OnResult | None = None) -> dict[str, Any]:
        return run_jobs(jobs, workers=self.workers, threads=self.threads, on_event=on_event, on_result=on_result)

    def describe(self) -> str:
        return f"{self.workers} local worker process{'es' if self.workers > 1 else ''} × {self.threads or 'all'} threads"


# -- a scheduler over slots: what GpuExecutor (one slot per GPU) and SubmititExecutor (one per job in
#    flight) share with `run_jobs`: ready jobs by descending cost, `Result` placeholders resolved,
#    the first failure stops the graph (queued jobs never start)


def _call(threads: int | None, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run one job with `threads` torch threads (where the job runs in a process of its own)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(*args, **kwargs)


def _schedule(jobs: list[Job], slots: list[Any], submit: Callable[[Any, Job, tuple, dict], Any],
              is_done: Callable[[Any], bool], result: Callable[[Any], Any], on_event: OnEvent | None,
              on_result: OnResult | None, cancel: Callable[[Any], None]) -> dict[str, Any]:  # fmt: skip
    import time

    from genorder.parallel import _check, _resolve

    by_name = _check(jobs)
    done: dict[str, Any] = {}
    pending = dict(by_name)
    emit = on_event or (lambda kind, name, seconds: None)
    got = on_result or (lambda name, value: None)
    free = list(slots)
    running: dict[str, tuple[Any, Any, float]] = {}  # name -> (handle, slot, start)
    try:
        while pending or running:
            ready = sorted((j for j in pending.values() if all(d in done for d in j.deps)), key=lambda j: -j.cost)
            for j in ready[: len(free)]:
                slot = free.pop(0)
                del pending[j.name]
                emit("start", j.name, 0.0)
                handle = submit(slot, j, _resolve(j.args, done), _resolve(j.kwargs, done))
                running[j.name] = (handle, slot, time.perf_counter())
            finished = [name for name, (h, _, _) in running.items() if is_done(h)]
            if not finished:
                time.sleep(0.05)
                continue
            for name in finished:
                handle, slot, t0 = running.pop(name)
                free.append(slot)
                done[name] = result(handle)  # re-raises the job's exception here
                got(name, done[name])
                emit("done", name, time.perf_counter() - t0)
    except BaseException:
        for handle, _, _ in running.values():
            cancel(handle)
        raise
    return done


def pin_cuda_device(device: Any) -> None:
    """Pin this (worker) process to one GPU: only it is visible, so the job's "cuda" is that GPU."""
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = str(device)


def _init_pinned(device: Any, pin: Callable[[Any], None], threads: int | None) -> None:
    pin(device)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


class GpuExecutor:
    """One worker process per GPU, each pinned to its device before CUDA starts (`pin`, default
    `pin_cuda_device`: CUDA_VISIBLE_DEVICES), so a job's device "cuda" is the GPU of the worker that
    runs it. `assignments` records which device ran which job. `pin` is a hook (a module-level
    function of the device) so that the path can be tested on a CPU with fake devices."""

    def __init__(self, devices: list[Any], threads: int | None = None, pin: Callable[[Any], None] = pin_cuda_device) -> None:
        if not devices:
            raise ValueError("GpuExecutor needs at least one device")
        self.devices = list(devices)
        self.workers = len(self.devices)
        self.threads = threads
        self.pin = pin
        self.assignments: dict[str, Any] = {}

    def describe(self) -> str:
        return f"{self.workers} GPU worker{'s' if self.workers > 1 else ''} (devices {', '.join(map(str, self.devices))})"

    def run(self, jobs: list[Job], on_event: OnEvent | None = None, on_result: OnResult | None = None) -> dict[str, Any]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        pools = {d: ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_pinned,
                                        initargs=(d, self.pin, self.threads)) for d in self.devices}  # fmt: skip

        def submit(device, job: Job, args: tuple, kwargs: dict):
            self.assignments[job.name] = device
            return pools[device].submit(job.fn, *args, **kwargs)

        try:
            return _schedule(jobs, self.devices, submit, lambda f: f.done(), lambda f: f.result(), on_event, on_result,
                             lambda f: f.cancel())  # fmt: skip
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)


class SubmititExecutor:
    """Jobs as SLURM jobs through `submitit` (the optional extra `genorder[slurm]`): at most `workers`
    in flight, each running with `threads` torch threads. `cluster` is submitit's: None (auto: SLURM
    when it is there), "slurm", "local" (subprocesses on this machine: how CI tests it) or "debug"
    (in this process); `parameters` go to `update_parameters` (e.g. slurm_partition, gpus_per_node,
    timeout_min). Logs and pickles go to `folder`."""

    def __init__(self, folder: str | Path, workers: int = 1, threads: int | None = None, cluster: str | None = None,
                 poll_seconds: float = 0.5, **parameters: Any) -> None:  # fmt: skip
        try:
            import submitit
        except ImportError:
            from genorder.errors import UserError

            raise UserError("the SLURM executor needs submitit: pip install 'genorder[slurm]'") from None
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.threads, self.poll = workers, threads, poll_seconds
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(**({"timeout_min": 24 * 60} | parameters))

    def describe(self) -> str:
        return f"submitit ({self.executor.cluster}, {self.workers} job{'s' if self.workers > 1 else ''} in flight)"

    def run(self, jobs: list[Job], on_event: OnEvent | None = None, on_result: OnResult | None = None) -> dict[str, Any]:
        def submit(slot, job: Job, args: tuple, kwargs: dict):
            return self.executor.submit(_call, self.threads, job.fn, args, kwargs)

        def cancel(handle) -> None:
            with contextlib.suppress(Exception):  # best effort on the way out
                handle.cancel(check=False)

        return _schedule(jobs, list(range(self.workers)), submit, lambda h: h.done(), lambda h: h.result(), on_event,
                         on_result, cancel)  # fmt: skip
