"""README recipe "your own images", end to end with tiny budgets: a generated colour imagefolder
(4 classes x 8 images) -> tokenizers chosen by the dataset's shape -> three orders trained ->
samples -> eval. The commands are the README's, with `--image-size 16` (the tiny presets are
declared for 3x16 px, so a CPU test takes seconds) and tiny budgets added."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genorder.testing import one_thread
from genorder_cli.main import app

CLASSES = {"red": (220, 40, 30), "green": (40, 200, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def make_imagefolder(root, per_class: int = 8, size: int = 40) -> str:
    """PATH/<class>/*.png: a coloured disc on a noisy background, one colour per class."""
    rng = np.random.default_rng(0)
    for name, rgb in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            yy, xx = np.mgrid[:size, :size]
            cx, cy, r = rng.integers(12, size - 12, 2).tolist() + [int(rng.integers(6, 11))]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rgb
            Image.fromarray(img).save(root / name / f"{i}.png")
    return f"imagefolder:{root}"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_your_own_images_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "fid-cache"))
    data = make_imagefolder(tmp_path / "photos")
    small = ["--image-size", "16", "--steps", "2", "--batch-size", "8", "--set", "train.eval_images=16",
             "--set", "train.grid_images=4"]  # fmt: skip

    # 1. tokenizers: the presets declared for 3x16 px (no --tokenizer needed for the multi-scale one)
    r = invoke("train-tokenizer", "--dataset", data, *small, "--out", "runs/tok-ms")
    assert r.exit_code == 0, r.output
    ms = json.loads((tmp_path / "runs/tok-ms/metrics.json").read_text())
    assert ms["channels"] == 3 and ms["image_size"] == 16 and len(ms["scales"]) > 1 and len(ms["colour"]["correlation"]) == 3
    r = invoke("train-tokenizer", "--dataset", data, "--tokenizer", "vq-tiny", *small, "--out", "runs/tok-ss")
    assert r.exit_code == 0, r.output
    # without --image-size nothing is converted silently: 64 px photos need a 3x64 preset
    r = invoke("train-tokenizer", "--dataset", data, "--tokenizer", "vq-tiny", "--steps", "1", "--out", "runs/x")
    assert r.exit_code == 2 and "3x64px" in r.output and not (tmp_path / "runs/x").exists()

    # 2. three orders, each with its tokenizer folder
    for order, tok in (("next-scale", "runs/tok-ms"), ("raster", "runs/tok-ss"), ("maskgit", "runs/tok-ss")):
        r = invoke("train", "--order", order, "--dataset", data, "--image-size", "16", "--tokenizer", tok,
                   "--depth", "1", "--steps", "2", "--batch-size", "8", "--out", f"runs/{order}", "--threads", "1")  # fmt: skip
        assert r.exit_code == 0, r.output
        summary = json.loads((tmp_path / f"runs/{order}/summary.json").read_text())
        assert summary["spent"]["steps"] == 2 and summary["order"] == order

    # 3. samples from a run, one row per class
    r = invoke("sample", "--run", "runs/raster", "--per-class", "2", "--npz", "s.npz", "--threads", "1")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "s.npz") as z:
        assert z["arr_0"].shape == (2 * len(CLASSES), 16, 16, 3)  # ADM's layout: uint8 N x H x W x 3

    # decoding with another checkpoint of the same shape (here the tokenizer folder itself) works;
    # one of other scales is refused
    assert invoke("sample", "--run", "runs/next-scale", "--per-class", "1", "--tokenizer", "runs/tok-ms").exit_code == 0
    r = invoke("sample", "--run", "runs/next-scale", "--per-class", "1", "--tokenizer", "runs/tok-ss", "--out", "x.png")
    assert r.exit_code == 2 and "differ from the run's tokenizer" in r.output and not (tmp_path / "x.png").exists()

    # 4. eval (the tiny random extractor stands in for Inception here), with the small-n warning
    r = invoke("eval", "--run", "runs/next-scale", "--n", "16", "--extractor", "genorder-tiny-random",
               "--kid-subsets", "3", "--image-size", "16")  # fmt: skip
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "warning: KID" in out and "warning: precision/recall" in out
    rec = json.loads((tmp_path / "runs/next-scale/eval.json").read_text())
    assert rec["n_fake"] == 16 and np.isfinite(rec["metrics"]["fid"]) and len(rec["warnings"]) == 2


def test_train_with_a_preset_configured_by_set(tmp_path, monkeypatch):
    """`--set tokenizer.*` reaches the tokenizer `train` trains first (here its codebook size)."""
    monkeypatch.chdir(tmp_path)
    data = make_imagefolder(tmp_path / "photos", per_class=9)  # 36 images, 32 after the held-out split: one tokenizer batch
    r = invoke("train", "--order", "raster", "--dataset", data, "--image-size", "16", "--set", "tokenizer.vocab_size=32",
               "--tokenizer-steps", "1", "--depth", "1", "--steps", "1", "--batch-size", "8", "--out", "runs/r")  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "runs/r/tokenizer.json").read_text())
    assert meta["name"] == "vq-tiny" and meta["config"]["vocab_size"] == 32 and meta["config"]["channels"] == 3
