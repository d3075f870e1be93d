"""PNG grids and side-by-side comparisons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genorder.images import make_grid, save_grid, side_by_side, to_uint8


def test_to_uint8_range_and_clamp():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)
    out = to_uint8(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert out.flatten().tolist() == [0, 0, 128, 255, 255]


def test_grid_layout_exact():
    images = torch.full((3, 1, 4, 4), -1.0)  # black cells
    images[1] = 1.0  # a white one
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (1, 2 * 5 + 1, 2 * 5 + 1)
    assert grid[0, 1:5, 1:5].max() == 0  # first cell black
    assert grid[0, 1:5, 6:10].min() == 255  # second cell white
    assert grid[0, 6:10, 1:5].max() == 0  # third cell, second row


def test_save_grid_grey_scaled(tmp_path):
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    path = save_grid(images, tmp_path / "sub" / "g.png", nrow=3, padding=2, scale=3)
    assert path == tmp_path / "sub" / "g.png"
    with Image.open(path) as im:
        assert im.size == ((3 * 10 + 2) * 3, (2 * 10 + 2) * 3)
        arr = np.asarray(im.convert("L"))
    first = to_uint8(images[0, 0]).numpy()
    assert np.array_equal(arr[6 : 6 + 24 : 3, 6 : 6 + 24 : 3], first)  # nearest upscaling
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["g.png"]  # no temp files


def test_save_grid_rgb_with_row_labels(tmp_path):
    images = torch.rand(8, 3, 8, 8) * 2 - 1
    plain = save_grid(images, tmp_path / "plain.png", nrow=4)
    labelled = save_grid(
        images, tmp_path / "lab.png", nrow=4, labels_left=["square", "a long caption"]
    )
    with Image.open(plain) as a, Image.open(labelled) as b:
        assert a.mode == "RGB" and b.size[1] == a.size[1] and b.size[0] > a.size[0]
        margin = b.size[0] - a.size[0]
        assert np.array_equal(np.asarray(b)[:, margin:], np.asarray(a))  # grid unchanged, shifted
        assert np.asarray(b)[:, :margin].min() < 128  # some caption ink
    with pytest.raises(ValueError, match="captions"):
        save_grid(images, tmp_path / "x.png", nrow=4, labels_left=["one"])


def test_save_grid_partial_last_row(tmp_path):
    path = save_grid(torch.zeros(5, 1, 4, 4), tmp_path / "p.png", nrow=4, padding=0)
    with Image.open(path) as im:
        assert im.size == (16, 8)


def test_side_by_side(tmp_path):
    a = save_grid(torch.rand(4, 1, 8, 8) * 2 - 1, tmp_path / "a.png", nrow=2)
    b = save_grid(torch.rand(6, 3, 8, 8) * 2 - 1, tmp_path / "b.png", nrow=3)
    tensor_panel = torch.zeros(3, 10, 12)
    out = side_by_side(
        [a, str(b), tensor_panel], ["next-scale", "raster", "maskgit"], tmp_path / "cmp.png"
    )
    with Image.open(a) as ia, Image.open(b) as ib, Image.open(out) as io:
        assert io.mode == "RGB"
        assert io.size[0] >= ia.size[0] + ib.size[0] + 12
        assert io.size[1] > max(ia.size[1], ib.size[1])
    with pytest.raises(ValueError, match="titles"):
        side_by_side([a], ["x", "y"], tmp_path / "bad.png")
