"""The CLI end to end at a tiny size: train-tokenizer -> train -> sample -> runs, `train` training its
tokenizer first (`compare`, the main job, is tested in test_compare.py), and bad input
exiting with code 2 before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from genorder.testing import one_thread
from PIL import Image
from typer.testing import CliRunner

from genorder.data import SHAPE_CLASSES, render_shapes
from genorder_cli.app import console
from genorder_cli.main import app


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "width", 200)  # tables not truncated to the 80 columns of a pipe
    with one_thread():
        yield


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def shapes_npz(path: Path, size: int, grey: bool = False, n_train: int = 96, n_test: int = 32) -> str:
    """A small generated shapes dataset as .npz (train + test split); returns its spec."""
    train, train_lab = render_shapes(n_train, size, seed=1)
    test, test_lab = render_shapes(n_test, size, seed=2)
    if grey:
        train, test = train[:, :1], test[:, :1]
    np.savez(path, images=train.numpy(), labels=train_lab.numpy(), test_images=test.numpy(),
             test_labels=test_lab.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip
    return f"npz:{path}"


def test_train_sample_runs_end_to_end(tmp_path):
    data = shapes_npz(tmp_path / "shapes16.npz", 16)
    r = invoke("train-tokenizer", "--tokenizer", "msvq-tiny", "--set", "tokenizer.channels=3", "--dataset", data,
               "--steps", "3", "--batch-size", "8", "--out", "tok")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("train", "--order", "next-scale", "--depth", "1", "--dataset", data, "--tokenizer", "tok/tokenizer",
               "--steps", "3", "--batch-size", "8", "--out", "runs/ns", "--cfg", "1.5")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "ns"
    for name in ("model.safetensors", "model.json", "checkpoints/step-000000003/optim.safetensors",
                 "checkpoints/step-000000003/manifest.json", "tokenizer.safetensors", "log.jsonl",
                 "samples.png", "summary.json"):  # fmt: skip
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["spent"]["steps"] == 3 and summary["spent"]["images"] == 24 and summary["stopped_by"] == "steps"
    assert summary["order"] == "next-scale" and summary["depth"] == 1 and summary["sampler"]["cfg"] == 1.5
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert logs and all(np.isfinite(rec["loss"]) for rec in logs if "loss" in rec)
    # one row per class, 8 per row by default, at the tokenizer's size (2x upscaled, with labels left)
    grid = Image.open(run / "samples.png")
    assert grid.height >= len(SHAPE_CLASSES) * 16 * 2

    r = invoke("sample", "--run", "runs/ns", "--per-class", "2", "--cfg", "2", "--top-k", "5", "--seed", "3",
               "--npz", "s.npz")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (run / "samples-seed3.png").is_file()
    with np.load(tmp_path / "s.npz") as z:
        assert z["arr_0"].shape == (2 * len(SHAPE_CLASSES), 16, 16, 3) and z["arr_0"].dtype == np.uint8  # ADM: NHWC
        first = z["arr_0"].copy()
    assert invoke("sample", "--run", "runs/ns", "--per-class", "2", "--cfg", "2", "--top-k", "5", "--seed", "3",
                  "--npz", "s2.npz").exit_code == 0  # fmt: skip
    with np.load(tmp_path / "s2.npz") as z:
        assert np.array_equal(z["arr_0"], first)  # same seed, same samples

    r = invoke("runs", "runs")
    assert r.exit_code == 0 and "next-scale" in r.output

    r = invoke("train", "--order", "next-scale", "--depth", "1", "--dataset", data, "--tokenizer", "tok/tokenizer",
               "--steps", "5", "--batch-size", "8", "--out", "runs/ns")  # fmt: skip
    assert r.exit_code == 2 and "--resume" in r.output
    r = invoke("train", "--order", "next-scale", "--depth", "1", "--dataset", data, "--tokenizer", "tok/tokenizer",
               "--steps", "5", "--batch-size", "8", "--out", "runs/ns", "--resume")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((run / "summary.json").read_text())["spent"]["steps"] == 5


def test_train_trains_its_tokenizer_first_and_says_so(tmp_path):
    data = shapes_npz(tmp_path / "grey32.npz", 32, grey=True)
    r = invoke("train", "--order", "raster", "--depth", "1", "--dataset", data, "--tokenizer-steps", "2",
               "--steps", "2", "--batch-size", "8", "--out", "runs/r")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "no tokenizer given: training vq-fmnist" in " ".join(r.output.split())
    cached = list((tmp_path / "runs" / "tokenizers").glob("vq-fmnist-*/tokenizer.safetensors"))
    assert len(cached) == 1
    metrics = json.loads((cached[0].parent / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["eval_split"] == "test" and metrics["dataset"] == data
    # the same preset, budget and dataset content: the cached tokenizer is reused (another budget would retrain)
    r = invoke("train", "--order", "maskgit", "--depth", "1", "--dataset", data, "--tokenizer-steps", "2", "--steps", "1",
               "--batch-size", "8", "--out", "runs/m")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "using the cached tokenizer" in " ".join(r.output.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--order", "nope", "--steps", "1"], "nope"),
        (["train", "--order", "raster", "--steps", "0", "--dataset", "shapes"], "steps"),
        (["train", "--order", "raster", "--steps", "1", "--set", "backbone.depthh=2"], "depthh"),
        (["train", "--order", "raster", "--steps", "1", "--dataset", "npz:missing.npz"], "missing.npz"),
        (["train", "--order", "raster", "--steps", "1", "--resume", "--out", "runs/x"], "resume"),
        (["sample", "--run", "runs/none"], "runs/none"),
        (["compare", "--orders", "raster,nope"], "nope"),
        (["runs", "runs/none"], "runs/none"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and message in r.output
    assert not (tmp_path / "runs").exists()
