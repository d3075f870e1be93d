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
