"""`genorder.parallel.run_jobs`: dependencies, results passed along, errors, and the same results
with one worker (in process) as with two worker processes."""

from __future__ import annotations

import pytest
import torch

from genorder.parallel import Job, Result, run_jobs


def seeded_matmul(seed: int, n: int) -> float:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g)
    return float((a @ a).sum())


def add(a: float, b: float) -> float:
    return a + b


def threads_now() -> int:
    return torch.get_num_threads()


def boom(msg: str) -> None:
    raise ValueError(msg)


def jobs() -> list[Job]:
    return [
        Job("a", seeded_matmul, (0, 64), cost=1),
        Job("b", seeded_matmul, (1, 64), cost=5),
        Job("sum", add, (Result("a"), Result("b")), deps=("a", "b")),
        Job("threads", threads_now),
    ]


def test_dependencies_and_results_in_process():
    events = []
    out = run_jobs(jobs(), workers=1, on_event=lambda kind, name, s: events.append((kind, name)))
    assert out["sum"] == pytest.approx(out["a"] + out["b"])
    starts = [n for k, n in events if k == "start"]
    assert starts.index("sum") > max(starts.index("a"), starts.index("b"))  # after its dependencies
    assert starts.index("b") < starts.index("a")  # the costlier of two ready jobs first
    assert [k for k, _ in events].count("done") == 4


def test_two_worker_processes_give_the_same_results():
    one = run_jobs(jobs(), workers=1)
    two = run_jobs(jobs(), workers=2, threads=1)
    assert {k: v for k, v in two.items() if k != "threads"} == {k: v for k, v in one.items() if k != "threads"}
    assert two["threads"] == 1  # each worker runs with the thread count it was given


def test_bad_graphs_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="unknown"):
        run_jobs([Job("x", add, (1, 2), deps=("nope",))])
    with pytest.raises(ValueError, match="cycle"):
        run_jobs([Job("x", add, (1, 2), deps=("y",)), Job("y", add, (1, 2), deps=("x",))])
    with pytest.raises(ValueError, match="two jobs"):
        run_jobs([Job("x", add, (1, 2)), Job("x", add, (1, 2))])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_and_its_dependents_never_run(workers):
    ran = []
    with pytest.raises(ValueError, match="broken"):
        run_jobs([Job("bad", boom, ("broken",)), Job("after", add, (1, 2), deps=("bad",))], workers=workers,
                 on_event=lambda kind, name, s: ran.append((kind, name)))  # fmt: skip
    assert ("start", "after") not in ran
