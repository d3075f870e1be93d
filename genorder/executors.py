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

from typing import Any, Callable, Protocol, runtime_checkable

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
