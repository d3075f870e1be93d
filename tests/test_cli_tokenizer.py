"""`genorder train-tokenizer` and `genorder reconstruct` end to end on a tiny preset."""

from __future__ import annotations

import json

import pytest
from genorder.testing import one_thread
from typer.testing import CliRunner

from genorder_cli.main import app

runner = CliRunner()
TINY = ["--tokenizer", "msvq-tiny", "--dataset", "shapes", "--image-size", "16"]
SMALL_EVAL = ["--set", "train.eval_images=16", "--set", "train.eval_prefix_images=4", "--set", "train.grid_images=2"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is several times faster than two on a busy 2-core box."""
    with one_thread():
        yield


def test_train_tokenizer_then_reconstruct(tmp_path):
    out = tmp_path / "tok"
    res = runner.invoke(app, ["train-tokenizer", *TINY, *SMALL_EVAL, "--out", str(out), "--steps", "5",
                              "--batch-size", "8", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("tokenizer.safetensors", "tokenizer.json", "reconstructions.png", "metrics.json", "log.jsonl"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 5 and metrics["images"] == 40 and metrics["eval_split"] == "test"
    assert len(metrics["psnr_per_k"]) == 3 and len(metrics["usage_pct"]) == 3
    colour = metrics["colour"]  # the colour check: 3 channels of means and correlations
    assert len(colour["mean_original"]) == len(colour["mean_reconstruction"]) == len(colour["correlation"]) == 3
    assert all(-1 <= c <= 1 for c in colour["correlation"])
    assert metrics["channels"] == 3 and metrics["image_size"] == 16
    meta = json.loads((out / "tokenizer.json").read_text())
    assert meta["name"] == "msvq-tiny" and meta["config"]["channels"] == 3 and meta["dataset"] == "shapes"

    png = tmp_path / "rec.png"
    res = runner.invoke(app, ["reconstruct", "--tokenizer-ckpt", str(out / "tokenizer"), "--n", "3",
                              "--out", str(png), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert png.is_file()

    # a second run into the same directory needs --overwrite
    res = runner.invoke(app, ["train-tokenizer", *TINY, "--out", str(out), "--steps", "1"])
    assert res.exit_code == 2 and "overwrite" in res.output


def test_toml_config_and_nested_overrides(tmp_path):
    cfg = tmp_path / "tok.toml"
    cfg.write_text(
        '[tokenizer]\nname = "vq-tiny"\nchannels = 3\n'
        "[train]\nbatch_size = 4\neval_images = 4\neval_prefix_images = 2\ngrid_images = 1\n"
        "[budget]\nsteps = 5\n"
    )
    out = tmp_path / "tok"
    res = runner.invoke(app, ["train-tokenizer", "--dataset", "shapes", "--image-size", "16", "--config", str(cfg), "--out", str(out),
                              "--set", "train.budget.steps=2", "--set", "budget.steps=2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokenizer"] == "vq-tiny" and metrics["steps"] == 2 and metrics["scales"] == [4]


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "0"],
        ["--batch-size", "0"],
        ["--threads", "0"],
        ["--set", "tokenizer.vocab_size=1"],
        ["--set", "tokenizer.scales=[1,2]"],
        ["--set", "train.no_such_key=1"],
        ["--dataset", "no-such-dataset"],
        ["--tokenizer", "no-such-preset"],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args):
    out = tmp_path / "tok"
    base = ["train-tokenizer", "--tokenizer", "msvq-tiny", "--dataset", "shapes", "--out", str(out)]
    res = runner.invoke(app, [*base, *args])
    assert res.exit_code == 2, res.output
    assert "error" in res.output
    assert not out.exists()


def test_no_silent_conversion_and_explicit_flags_convert(tmp_path):
    """A tokenizer that cannot take the dataset's shape is an error naming the flag; the grey preset
    is configured to the colour dataset's channels (not the photos turned grey); --channels and
    --image-size convert on request."""
    out = tmp_path / "tok"
    res = runner.invoke(app, ["train-tokenizer", "--tokenizer", "msvq-tiny", "--dataset", "shapes", "--out", str(out),
                              "--steps", "1"])  # fmt: skip
    assert res.exit_code == 2 and "--image-size" in res.output and "3x32px" in res.output
    assert not out.exists()
    res = runner.invoke(app, ["train-tokenizer", "--tokenizer", "vq-tiny", "--dataset", "shapes", "--image-size", "16",
                              "--channels", "1", *SMALL_EVAL, "--steps", "1", "--batch-size", "4", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "tokenizer.json").read_text())
    assert meta["config"]["channels"] == 1 and meta["config"]["image_size"] == 16


def test_default_preset_is_chosen_by_the_dataset(tmp_path):
    """No --tokenizer: the preset declared for the dataset's channels and size (3x16 -> msvq-tiny)."""
    out = tmp_path / "tok"
    res = runner.invoke(app, ["train-tokenizer", "--dataset", "shapes", "--image-size", "16", *SMALL_EVAL,
                              "--steps", "1", "--batch-size", "4", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "tokenizer.json").read_text())
    assert meta["name"] == "msvq-tiny" and meta["config"]["channels"] == 3
    res = runner.invoke(app, ["train-tokenizer", "--dataset", "shapes", "--image-size", "24", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no multi-scale tokenizer preset is declared for 3x24px" in res.output


def test_reconstruct_rejects_a_missing_checkpoint(tmp_path):
    res = runner.invoke(app, ["reconstruct", "--tokenizer-ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    assert not (tmp_path / "x.png").exists()
