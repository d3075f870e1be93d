"""The duration estimate before a run: counted FLOPs x a measured step time, the run unchanged by
the measurement, and a CPU run estimated over an hour refused unless forced (issue 25, item 5)."""

from __future__ import annotations

import pytest
import torch
from helpers import one_thread
from test_cli import shapes_npz
from typer.testing import CliRunner

import genorder.estimate as E
from genorder.budget import Budget
from genorder.checkpoint import load_checkpoint
from genorder.errors import UserError
from genorder_cli.main import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimate")
    data = shapes_npz(root / "shapes16.npz", 16)
    with one_thread():
        r = invoke("train-tokenizer", "--tokenizer", "vq-tiny", "--set", "tokenizer.channels=3", "--dataset", data,
                   "--steps", "1", "--batch-size", "8", "--out", root / "tok")  # fmt: skip
    assert r.exit_code == 0, r.output
    return root, data


def train_args(root, data, out, steps=3):
    return ("train", "--order", "raster", "--depth", "1", "--dataset", data, "--tokenizer", root / "tok" / "tokenizer",
            "--steps", steps, "--batch-size", "8", "--device", "cpu", "--out", out)  # fmt: skip


def test_budget_steps():
    assert E.budget_steps(Budget(steps=300), 64, 1e9) == (300, "steps")
    assert E.budget_steps(Budget(images=1000), 64, 1e9) == (16, "images")
    assert E.budget_steps(Budget(flops=3.5e9, steps=10), 64, 1e9) == (4, "flops")
    assert E.budget_steps(Budget(minutes=2), 64, 1e9) == (None, "minutes")


def test_check_duration_refuses_a_cpu_run_over_an_hour_unless_forced():
    est = E.Estimate(steps=10_000, seconds_per_step=0.5, flops_per_step=1e9, seconds=5000.0, timed_steps=2,
                     device="cpu", bound="steps")  # fmt: skip
    with pytest.raises(UserError, match="over 60.0 min.*--force"):
        E.check_duration(est)
    E.check_duration(est, force=True)
    E.check_duration(E.Estimate(**{**est.__dict__, "device": "cuda"}))  # only CPU runs are refused
    E.check_duration(E.Estimate(**{**est.__dict__, "seconds": 3000.0}))
    assert "10,000 steps x 0.5 s/step = 83.3 min" in est.line() and "1 GFLOP/step counted, 2 GFLOP/s" in est.line()


def test_the_estimate_is_printed_and_leaves_the_run_unchanged(tiny, tmp_path):
    """The CLI prints the estimate; a run with the estimate ends with exactly the weights of one without (quiet)."""
    from genorder.training_run import train_run

    root, data = tiny
    with one_thread():
        r = invoke(*train_args(root, data, tmp_path / "a"))
        assert r.exit_code == 0, r.output
        assert "estimate: 3 steps x" in r.output and "of training on cpu" in r.output
        assert "3/3" in r.output and "1000/1000" not in r.output  # the bar counts steps
        common = dict(dataset_spec=data, tokenizer_spec=str(root / "tok" / "tokenizer"), depth=1,
                      budget={"steps": 3}, train_opts={"batch_size": 8, "device": "cpu"})  # fmt: skip
        said: list[str] = []
        train_run("raster", tmp_path / "c", on_message=said.append, **common)  # the estimate runs
        assert any("estimate: 3 steps x" in line for line in said)
        train_run("raster", tmp_path / "b", quiet=True, **common)  # no estimate
    a, _ = load_checkpoint(tmp_path / "c" / "model")  # the final model
    b, _ = load_checkpoint(tmp_path / "b" / "model")  # the final model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_long_cpu_run_is_refused_before_anything_is_written(tiny, tmp_path, monkeypatch):
    root, data = tiny
    monkeypatch.setattr(E, "CPU_LIMIT_S", 1e-3)  # any run is "over the limit"
    with one_thread():
        r = invoke(*train_args(root, data, tmp_path / "long", steps=2))
        assert r.exit_code == 2 and "error: this CPU run is estimated at" in r.output and "--force" in r.output
        assert not (tmp_path / "long").exists()
        r = invoke(*train_args(root, data, tmp_path / "long", steps=2), "--force")
        assert r.exit_code == 0, r.output
    assert (tmp_path / "long" / "summary.json").is_file()
