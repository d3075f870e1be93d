"""`genorder compare` at a tiny size: deterministic budgets and results, curve points along training,
timings kept apart, the LR sweep, and content-keyed tokenizer caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import one_thread
from typer.testing import CliRunner

from genorder.data import SHAPE_CLASSES, render_shapes
from genorder_cli.app import console
from genorder_cli.main import app

pytest.importorskip("torch_fidelity")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "width", 200)
    with one_thread():
        yield


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def shapes_npz(path: Path, seed: int = 1, n_train: int = 96, n_test: int = 40) -> str:
    """Grey 16 px shapes (the tiny tokenizers' size) as .npz with labels; returns the spec."""
    train, train_lab = render_shapes(n_train, 16, seed=seed)
    test, test_lab = render_shapes(n_test, 16, seed=seed + 1)
    np.savez(path, images=train[:, :1].numpy(), labels=train_lab.numpy(), test_images=test[:, :1].numpy(),
             test_labels=test_lab.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip
    return f"npz:{path}"


def tiny(data: str, out: str, *extra: str) -> list[str]:
    return ["compare", "--dataset", data, "--tokenizer", "msvq-tiny,vq-tiny", "--tokenizer-steps", "2", "--depth", "1",
            "--steps", "4", "--batch-size", "8", "--points", "2", "--n", "8", "--ref-n", "16", "--seeds", "0,1",
            "--extractor", "genorder-tiny-random", "--fid-cache", "fid", "--per-class", "1", "--out", out, "--workers", "1",
            *extra]  # fmt: skip


def test_compare_twice_gives_the_same_json_and_writes_every_curve_point(tmp_path):
    data = shapes_npz(tmp_path / "shapes.npz")
    r = invoke(*tiny(data, "a", "--fid-points", "all"))  # the GPU default; on a CPU FID is at the last point
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "a" / "comparison.json").read_text())
    assert [row["order"] for row in doc["rows"]] == ["maskgit", "next-scale", "raster"]  # the built-ins, by name
    assert doc["budget"] == {"steps": 4} and not doc["load_dependent_budget"]
    from genorder.registry import registry
    from genorder_cli.cmd_compare import CPU_LR

    for name in doc["orders"]:  # no --lr: the rate each order declares for the CPU regime, else the default
        assert doc["lr"][name] == (registry("orders").create(name, {}).cpu_lr or CPU_LR)
    assert len(set(doc["lr"].values())) == 2  # raster declares its own (a capability, not a name test)
    for name, runs in doc["runs"].items():
        assert [run["seed"] for run in runs] == [0, 1]
        for run in runs:
            assert (run["steps"], run["images"]) == (4, 32)  # one deterministic budget for every order
            assert [p["step"] for p in run["points"]] == [2, 4]  # evaluated at 1/2 and 2/2 of the budget
            for p in run["points"]:
                assert p["heldout_loss"] > 0 and 0 <= p["class_acc"]["lo"] <= p["class_acc"]["acc"] <= p["class_acc"]["hi"] <= 1
                assert p["class_acc"]["n"] == 8 and p["fid"] >= 0 and "precision" in p and "recall" in p
                assert "seconds" not in json.dumps(p)  # timings live apart
            assert run["points"][1]["train_flops"] == pytest.approx(2 * run["points"][0]["train_flops"])
    assert doc["fid_floor"]["n"] == 8 and doc["fid_floor"]["fid_floor"] > 0
    assert all("class_acc" in row and "fid" in row and "last_20pct_improvement" in row for row in doc["rows"])
    for row in doc["rows"]:  # the plateau test runs on the order's curve: the mean over seeds at each point
        runs = doc["runs"][row["order"]]
        mean = [sum(r["points"][i]["heldout_loss"] for r in runs) / len(runs) for i in range(2)]
        assert row["last_20pct_improvement"] == pytest.approx((mean[0] - mean[1]) / mean[0])
        assert row["last_20pct_improvement_per_seed"] == [
            pytest.approx((r["points"][0]["heldout_loss"] - r["points"][1]["heldout_loss"]) / r["points"][0]["heldout_loss"]) for r in runs]
    timings = json.loads((tmp_path / "a" / "comparison_timings.json").read_text())
    assert len(timings["runs"]["raster"][0]["points"]) == 2 and timings["total_seconds"] > 0
    for png in ("comparison.png", "comparison_curves.png", "heldout_loss.png"):
        assert (tmp_path / "a" / png).is_file()
    # a second, independent run (fresh caches, fresh folder), its jobs spread over two worker
    # processes this time, gives the same file, byte for byte
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)
    r = invoke(*tiny(data, "b", "--fid-points", "all", "--workers", "2"))
    assert "2 worker processes" in " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert (other / "b" / "comparison.json").read_text() == (tmp_path / "a" / "comparison.json").read_text()
    # and a third call in the same folder reuses every finished run
    r = invoke(*tiny(data, "b", "--fid-points", "all"))
    assert r.exit_code == 0 and r.output.count("finished run found") == 6
    assert "using the cached tokenizer" in " ".join(r.output.split())
    assert (other / "b" / "comparison.json").read_text() == (tmp_path / "a" / "comparison.json").read_text()


def test_wall_clock_budget_is_flagged_as_load_dependent(tmp_path):
    data = shapes_npz(tmp_path / "shapes.npz")
    args = tiny(data, "m", "--orders", "raster", "--seeds", "0", "--no-fid")
    args[args.index("--steps")] = "--minutes"
    args[args.index("--minutes") + 1] = "0.01"
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "m" / "comparison.json").read_text())
    assert doc["load_dependent_budget"] and doc["budget"] == {"minutes": 0.01}
    assert "load-dependent" in " ".join(r.output.split())
    assert "fid" not in doc["rows"][0] and doc["fid_floor"] is None


def test_tune_lr_trains_each_order_at_its_best_heldout_rate(tmp_path):
    data = shapes_npz(tmp_path / "shapes.npz")
    r = invoke(*tiny(data, "t", "--orders", "raster", "--seeds", "0", "--no-fid", "--tune-lr", "--lrs", "1e-4,3e-3,1e-1"))
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "t" / "comparison.json").read_text())
    sweep = doc["lr_sweep"]["raster"]
    assert [t["lr"] for t in sweep["tried"]] == [1e-4, 3e-3, 1e-1] and sweep["budget"] == {"steps": 2}
    best = min(sweep["tried"], key=lambda t: t["heldout_loss"])
    assert sweep["best_lr"] == best["lr"] == doc["lr"]["raster"] == doc["rows"][0]["lr"]
    assert len({t["heldout_loss"] for t in sweep["tried"]}) == 3  # each rate really trained


def test_cached_tokenizer_is_rebuilt_when_the_dataset_content_changes(tmp_path):
    import torch

    from genorder.data import load_dataset
    from genorder.registry import registry
    from genorder_cli.common import resolve_tokenizer

    data = shapes_npz(tmp_path / "shapes.npz")
    order = registry("orders").create("raster", {})
    cpu = torch.device("cpu")

    def resolve():
        ds = load_dataset(data, "train")
        return resolve_tokenizer("vq-tiny", order, data, ds, cpu, 2, train_opts={"batch_size": 8}, quiet=True)[1]

    first = resolve()
    assert first.parent.name.startswith("vq-tiny-npz-shapes-")
    mtime = first.with_suffix(".safetensors").stat().st_mtime_ns
    assert resolve() == first and first.with_suffix(".safetensors").stat().st_mtime_ns == mtime  # reused
    shapes_npz(tmp_path / "shapes.npz", seed=5)  # same path, other pixels
    second = resolve()
    assert second != first and second.with_suffix(".safetensors").is_file()
    # a damaged cache entry is retrained, not loaded
    shapes_npz(tmp_path / "shapes.npz", seed=1)
    blob = first.with_suffix(".safetensors")
    blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")
    assert resolve() == first
    assert first.with_suffix(".safetensors").stat().st_mtime_ns != mtime


def test_fid_at_the_last_point_only(tmp_path):
    data = shapes_npz(tmp_path / "shapes.npz")
    r = invoke(*tiny(data, "f", "--orders", "raster", "--seeds", "0", "--fid-points", "last"))
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "f" / "comparison.json").read_text())
    pts = doc["runs"]["raster"][0]["points"]
    assert ["fid" in p for p in pts] == [False, True] and all("class_acc" in p for p in pts)
    assert doc["rows"][0]["fid"] == pts[-1]["fid"] and doc["evaluation"]["fid_points"] == "last"
    assert invoke(*tiny(data, "g", "--fid-points", "some")).exit_code == 2
