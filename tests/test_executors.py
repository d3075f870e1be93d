"""Executors: the same config gives the same comparison.json wherever its jobs run (local processes,
one worker per GPU, submitit's local executor), and the GPU path pins each worker to its device
(tested on a CPU with fake devices through the `pin` hook)."""

from __future__ import annotations

import os
import time

import pytest
from helpers import one_thread
from test_compare import shapes_npz

from genorder.executors import GpuExecutor, LocalExecutor, SubmititExecutor
from genorder.parallel import Job, Result

pytest.importorskip("torch_fidelity")


def fake_pin(device) -> None:
    """The test's stand-in for CUDA_VISIBLE_DEVICES: the worker remembers its device."""
    os.environ["GENORDER_TEST_DEVICE"] = str(device)


def where(i: int, wait: float = 0.3) -> dict:
    time.sleep(wait)  # long enough that both workers get jobs
    return {"i": i, "device": os.environ.get("GENORDER_TEST_DEVICE"), "pid": os.getpid()}


def total(parts: list[dict]) -> int:
    return sum(p["i"] for p in parts)


def test_gpu_executor_pins_one_worker_per_device_and_records_it():
    ex = GpuExecutor(devices=["gpu-a", "gpu-b"], pin=fake_pin)
    jobs = [Job(f"j{i}", where, (i,)) for i in range(6)]
    jobs.append(Job("sum", total, ([Result(f"j{i}") for i in range(6)],), deps=tuple(f"j{i}" for i in range(6))))
    events: list[tuple[str, str]] = []
    got = ex.run(jobs, on_event=lambda kind, name, s: events.append((kind, name)))
    assert got["sum"] == 15
    for i in range(6):  # each job ran in the worker pinned to the device it was assigned
        assert got[f"j{i}"]["device"] == ex.assignments[f"j{i}"]
    assert {ex.assignments[f"j{i}"] for i in range(6)} == {"gpu-a", "gpu-b"}
    pids = {d: {got[f"j{i}"]["pid"] for i in range(6) if ex.assignments[f"j{i}"] == d} for d in ("gpu-a", "gpu-b")}
    assert all(len(p) == 1 for p in pids.values()) and pids["gpu-a"] != pids["gpu-b"]  # one process per device
    assert events.count(("done", "sum")) == 1 and len(events) == 14


def boom() -> None:
    raise ValueError("job failed")


def test_a_failing_job_stops_the_graph_with_its_error():
    ex = GpuExecutor(devices=[0], pin=fake_pin)
    with pytest.raises(ValueError, match="job failed"):
        ex.run([Job("bad", boom), Job("after", where, (1, 0.0), deps=("bad",))])


def test_every_executor_gives_the_same_comparison_json(tmp_path, monkeypatch):
    from genorder.experiments import CompareConfig, run_compare

    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    data = shapes_npz(tmp_path / "shapes.npz")

    def compare(name: str, executor) -> bytes:
        cfg = CompareConfig.build(orders=["raster", "maskgit"], dataset=data, tokenizer=["msvq-tiny", "vq-tiny"],
                                  tokenizer_steps=2, depth=1, steps=4, batch_size=8, points=2, n=8, final_n=16, seeds=[0],
                                  no_fid=True, per_class=1, fid_cache=tmp_path / "fid", out=tmp_path / name,
                                  device="cpu")  # fmt: skip
        run_compare(cfg, executor).write()
        return (tmp_path / name / "comparison.json").read_bytes()

    with one_thread():
        one = compare("local1", LocalExecutor(1, threads=1))
        assert compare("local2", LocalExecutor(2, threads=1)) == one
        gpu = GpuExecutor(devices=["fake0", "fake1"], threads=1, pin=fake_pin)
        assert compare("gpu", gpu) == one
        # the first wave (classifier + a tokenizer) fills both devices; which device a later job gets
        # depends on which job finishes first, so only the first wave's spread is a fixed fact
        assert set(gpu.assignments.values()) == {"fake0", "fake1"}
        assert any(n.startswith("train:") for n in gpu.assignments)
        sub = SubmititExecutor(tmp_path / "submitit", workers=2, threads=1, cluster="local", poll_seconds=0.2)
        assert compare("submitit", sub) == one


def test_the_example_compares_from_python(tmp_path):
    """examples/compare_from_python.py runs as a user would run it (CI runs this test)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "examples" / "compare_from_python.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "ex")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "raster: held-out loss" in r.stdout and "maskgit: held-out loss" in r.stdout
    assert (tmp_path / "ex" / "compare" / "comparison.json").is_file()
