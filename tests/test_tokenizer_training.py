"""The core tokenizer-training pieces: class-spread grids, the colour check, preset choice by
declaration, the eval small-n warnings, and captioned grid columns."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from genorder.errors import UserError
from genorder.images import save_grid
from genorder.metrics import small_n_warnings
from genorder.tokenizer_training import colour_check, configure_for_dataset, default_tokenizer, spread_over_classes


def test_spread_over_classes_round_robin():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # the first 3 images are all class 0
    assert spread_over_classes(labels, 4).tolist() == [0, 3, 5, 1]
    assert spread_over_classes(labels, 10).tolist() == [0, 3, 5, 1, 4, 2]


def test_colour_check_sees_grey_and_swapped_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 4, 4, generator=g) * 2 - 1
    same = colour_check(x, x)
    assert same["correlation"] == pytest.approx([1.0, 1.0, 1.0]) and same["mean_reconstruction"] == pytest.approx(same["mean_original"])
    grey = colour_check(x, x.mean(1, keepdim=True).expand_as(x))
    assert max(grey["correlation"]) < 0.8  # each channel only partly explained by the grey value
    swapped = colour_check(x, x[:, [2, 0, 1]])
    assert max(abs(c) for c in swapped["correlation"]) < 0.3
    shifted = colour_check(x, (x + 0.5).clamp(-1, 1))
    assert all(b > a for a, b in zip(shifted["mean_original"], shifted["mean_reconstruction"]))


def test_presets_are_chosen_by_declaration():
    assert default_tokenizer("multi-scale", 1, 32) == "msvq-fmnist-cpu"  # the 8x8-token CPU regime
    assert default_tokenizer("single-scale", 3, 64) == "vq-rgb64"
    assert default_tokenizer("multi-scale", 3, 256) == "var-256"
    with pytest.raises(UserError, match="declared: .*3x64px"):
        default_tokenizer("multi-scale", 3, 48)
    name, opts = configure_for_dataset(None, "single-scale", 3, 16)
    assert name == "vq-tiny" and opts == {"channels": 3, "image_size": 16}
    name, opts = configure_for_dataset("msvq-fmnist", "multi-scale", 3, 32, {"vocab_size": 64})
    assert opts == {"vocab_size": 64, "channels": 3, "image_size": 32}
    with pytest.raises(UserError, match="--image-size"):
        configure_for_dataset("msvq-fmnist", "multi-scale", 3, 64)


def test_small_n_warnings():
    assert len(small_n_warnings(200)) == 2  # KID subsets = the whole set; coarse precision/recall
    assert any("KID std" in w for w in small_n_warnings(1000))
    assert small_n_warnings(5000, 10000) == []


def test_grid_column_captions(tmp_path):
    images = torch.zeros(6, 3, 8, 8)
    plain = Image.open(save_grid(images, tmp_path / "a.png", nrow=3))
    captioned = Image.open(save_grid(images, tmp_path / "b.png", nrow=3, labels_top=["a", "b", "c"],
                                     labels_left=["x", "y"]))  # fmt: skip
    assert captioned.height > plain.height and captioned.width > plain.width
    with pytest.raises(ValueError, match="captions for 3 columns"):
        save_grid(images, tmp_path / "c.png", nrow=3, labels_top=["a"])


def test_colour_data_on_a_cpu_gets_the_8x8_token_presets():
    from genorder.registry import registry

    for kind, size, cpu_name, gpu_name in (("multi-scale", 64, "msvq-rgb64-cpu", "msvq-rgb64"),
                                           ("single-scale", 64, "vq-rgb64-cpu", "vq-rgb64"),
                                           ("multi-scale", 32, "msvq-rgb32-cpu", "msvq-rgb32"),
                                           ("single-scale", 32, "vq-rgb32-cpu", "vq-rgb32")):  # fmt: skip
        assert default_tokenizer(kind, 3, size, device="cpu") == cpu_name
        assert default_tokenizer(kind, 3, size, device="cuda") == gpu_name == default_tokenizer(kind, 3, size)
        tok = registry("tokenizers").create(cpu_name, {})
        assert (tok.channels, tok.image_size, tok.scales[-1]) == (3, size, 8)  # 8x8 tokens
        tokens = tok.encode(torch.zeros(1, 3, size, size))
        assert sum(t.numel() for t in tokens) == (130 if kind == "multi-scale" else 64)
        twin = registry("tokenizers").create(cpu_name.replace(f"rgb{size}", "fmnist"), {})
        assert tok.scales == twin.scales and tok.codebook_size == twin.codebook_size  # colour twins
    name, _ = configure_for_dataset(None, "multi-scale", 3, 64, device="cpu")
    assert name == "msvq-rgb64-cpu"
    assert default_tokenizer("multi-scale", 1, 32, device="cpu") == "msvq-fmnist-cpu"  # grey: unchanged


def test_quality_warning_names_psnr_and_colour_correlation():
    from genorder.tokenizer_training import quality_warning

    bad = {"psnr": 12.9, "colour": {"correlation": [0.3, 0.46, 0.41]}, "steps": 7}
    line = quality_warning(bad)
    assert "\n" not in line and "PSNR 12.9 dB" in line and "0.30/0.46/0.41" in line and "7 steps" in line
    assert "far below" in quality_warning({"psnr": 25.0, "colour": {"correlation": [0.95, 0.5, 0.9]}})
    assert quality_warning({"psnr": 25.0, "colour": {"correlation": [0.95, 0.93, 0.9]}}) is None
    assert quality_warning({"psnr": 24.0}) is None


def test_default_budgets_contain_no_minutes():
    """No default stops on a wall-clock cap: train-tokenizer, train (its tokenizer and its run),
    compare's CPU and GPU defaults; --minutes stays available and says it is load-dependent."""
    import inspect

    import genorder_cli.cmd_compare as compare
    import genorder_cli.cmd_tokenizer as tok
    from genorder.experiments.compare import CompareConfig
    from genorder.regime import BUILTIN, load_regime
    import genorder_cli.cmd_train as train

    assert "minutes" not in tok.DEFAULT_BUDGET and tok.DEFAULT_BUDGET["steps"] > 0
    for fn in (train.train_run, train.train):
        for name, p in inspect.signature(fn).parameters.items():
            if "minutes" in name:
                default = p.default.default if hasattr(p.default, "default") else p.default
                assert default is None, (fn.__name__, name)
    for name in BUILTIN:  # the regimes hold step budgets only; no regime key names minutes
        flat = load_regime(name).resolved()
        assert not any("minutes" in k for section in flat.values() if isinstance(section, dict) for k in section)
        assert load_regime(name).train.steps > 0 and load_regime(name).tokenizer.steps > 0
    for field, info in CompareConfig.model_fields.items():  # compare's config: a minutes option defaults to None
        if "minutes" in field:
            assert info.default is None, field
    for name, p in inspect.signature(compare.compare).parameters.items():
        if "minutes" in name:
            default = p.default.default if hasattr(p.default, "default") else p.default
            assert default is None, ("compare", name)
    from typer.testing import CliRunner

    from genorder_cli.main import app

    out = CliRunner().invoke(app, ["train-tokenizer", "--help"], terminal_width=300).output
    assert "load-dependent" in " ".join(out.split()) and "1.5 minutes" not in out


def test_the_tokenizer_is_checked_against_the_order_before_it_is_trained(tmp_path, monkeypatch):
    from test_cli import shapes_npz
    from typer.testing import CliRunner

    from genorder_cli.main import app

    monkeypatch.chdir(tmp_path)
    data = shapes_npz(tmp_path / "s.npz", 16)
    r = CliRunner().invoke(app, ["train", "--order", "maskgit", "--dataset", data, "--tokenizer", "msvq-tiny",
                                 "--set", "tokenizer.channels=3", "--steps", "1", "--out", "runs/m"], terminal_width=200)  # fmt: skip
    assert r.exit_code == 2 and "maskgit needs a single-scale tokenizer" in r.output and "before training" in r.output
    assert not (tmp_path / "runs").exists()  # no tokenizer was trained or written


def test_train_and_compare_share_a_tokenizer_cache_key():
    """The key is what decides the weights, defaults filled in: an option given at its default
    value, or one that does not change the weights, gives the same key; another lr does not."""
    from genorder.data import load_dataset
    from genorder_cli.common import tokenizer_cache_entry

    ds = load_dataset("shapes", "train", limit=64)
    opts = {"channels": 3, "image_size": 32}
    train_side = tokenizer_cache_entry("msvq-rgb32-cpu", "shapes", ds, {"steps": 300}, None, opts)
    compare_side = tokenizer_cache_entry("msvq-rgb32-cpu", "shapes", ds, {"steps": 300},
                                         {"lr": 3e-4, "batch_size": 32, "device": "cpu", "eval_images": 100}, opts)
    assert train_side == compare_side
    other = tokenizer_cache_entry("msvq-rgb32-cpu", "shapes", ds, {"steps": 300}, {"lr": 2e-3}, opts)
    assert other[1] != train_side[1]
    assert tokenizer_cache_entry("msvq-rgb32-cpu", "shapes", ds, {"steps": 301}, None, opts)[1] != train_side[1]
