"""Independent jobs on a pool of worker processes, with dependencies: how `compare` keeps every
core of a small machine busy without changing a single result.

A job is a top-level function and its arguments (so it can be pickled to a `spawn`ed worker). Jobs
run when the jobs they depend on have finished; an argument `Result("name")` is replaced by that
job's return value. Each worker process sets its own torch thread count, so a job computes exactly
what it computes in the main process with that thread count: the results do not depend on how many
workers ran them, only the wall-clock does.

    >>> jobs = [Job("tok", train_tokenizer, ("vq",), cost=25),
    ...         Job("run", train_one, (Result("tok"), 0), deps=("tok",), cost=120)]
    >>> results = run_jobs(jobs, workers=2, threads=1, on_event=print)

With `workers=1` the jobs run one after another in this process (the GPU path, and tests).
Among the jobs that are ready, the one with the highest `cost` (an estimate in any unit) starts
first, so the long ones do not end up alone at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Result:
    """Placeholder for the return value of the job called `name` (it must be among the deps)."""

    name: str


@dataclass
class Job:
    name: str
    fn: Callable[..., Any]  # a module-level function (picklable)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    cost: float = 1.0


def _init_worker(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def _resolve(value: Any, done: dict[str, Any]) -> Any:
    if isinstance(value, Result):
        return done[value.name]
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, done) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, done) for k, v in value.items()}
    return value


def _check(jobs: list[Job]) -> dict[str, Job]:
    by_name: dict[str, Job] = {}
    for j in jobs:
        if j.name in by_name:
            raise ValueError(f"two jobs are called {j.name!r}")
        by_name[j.name] = j
    for j in jobs:
        missing = [d for d in j.deps if d not in by_name]
        if missing:
            raise ValueError(f"job {j.name!r} depends on unknown job(s) {missing}")
    # a cycle would leave jobs that never become ready: find it before starting anything
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError(f"jobs depend on each other in a cycle: {' -> '.join(path + (n,))}")
        state[n] = 1
        for d in by_name[n].deps:
            visit(d, path + (n,))
        state[n] = 2

    for n in by_name:
        visit(n, ())
    return by_name


def run_jobs(
    jobs: list[Job],
    workers: int = 1,
    threads: int | None = None,
    on_event: Callable[[str, str, float], None] | None = None,
    on_result: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """Run `jobs` and return {name: return value}. `on_event(kind, name, seconds)` is called with
    kind "start" (seconds 0) and "done" (the job's wall-clock); `on_result(name, value)` as each job
    ends (to write results as they come). The first job that raises stops the pool (running jobs
    finish, queued ones never start) and its exception is raised here."""
    by_name = _check(jobs)
    done: dict[str, Any] = {}
    pending = dict(by_name)
    emit = on_event or (lambda kind, name, seconds: None)
    got = on_result or (lambda name, value: None)

    def ready() -> list[Job]:
        r = [j for j in pending.values() if all(d in done for d in j.deps)]
        return sorted(r, key=lambda j: -j.cost)

    if workers <= 1:
        while pending:
            j = ready()[0]  # there is always one: _check ruled out cycles
            del pending[j.name]
            emit("start", j.name, 0.0)
            t0 = time.perf_counter()
            done[j.name] = j.fn(*_resolve(j.args, done), **_resolve(j.kwargs, done))
            got(j.name, done[j.name])
            emit("done", j.name, time.perf_counter() - t0)
        return done

    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
    running: dict[Future, tuple[str, float]] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        try:
            while pending or running:
                for j in ready()[: max(0, workers - len(running))]:
                    del pending[j.name]
                    emit("start", j.name, 0.0)
                    fut = pool.submit(j.fn, *_resolve(j.args, done), **_resolve(j.kwargs, done))
                    running[fut] = (j.name, time.perf_counter())
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    name, t0 = running.pop(fut)
                    done[name] = fut.result()  # re-raises the job's exception here
                    got(name, done[name])
                    emit("done", name, time.perf_counter() - t0)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
    return done
