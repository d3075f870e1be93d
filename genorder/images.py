"""Image grids as PNG files: sample sheets, reconstructions, and side-by-side order comparisons.

    >>> save_grid(samples, "runs/x/samples.png", nrow=8, scale=2, labels_left=class_names)
    >>> side_by_side(["a.png", "b.png"], ["next-scale", "raster"], "compare.png")

Images come in as float tensors (N, C, H, W) in [-1, 1]; files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from genorder.checkpoint import atomic_write

PAD_VALUE = 255  # white separators between cells, and white margins
TEXT_FILL = 0  # black captions
TEXT_GAP = 4  # pixels around captions


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8 in [0, 255], same shape, on the CPU."""
    x = images.detach().float().cpu()
    return ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def make_grid(
    images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = PAD_VALUE
) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one uint8 image (C, rows*(H+p)+p, nrow*(W+p)+p), row-major."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    x = to_uint8(images)  # (N, C, H, W)
    n, c, h, w = x.shape
    rows = max(1, math.ceil(n / nrow))
    blank = torch.full((rows * nrow - n, c, h, w), pad_value, dtype=torch.uint8)
    x = torch.cat([x, blank])  # (rows*nrow, C, H, W)
    x = F.pad(x, (0, padding, 0, padding), value=pad_value)  # (rows*nrow, C, H+p, W+p)
    grid = rearrange(x, "(r k) c h w -> c (r h) (k w)", k=nrow)
    return F.pad(grid, (padding, 0, padding, 0), value=pad_value)  # (C, rows*(H+p)+p, nrow*(W+p)+p)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 (C, H, W) with C in 1, 3 -> a PIL image ("L" or "RGB")."""
    arr = rearrange(image, "c h w -> h w c").numpy()
    if arr.shape[-1] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]))  # mode "L"
    if arr.shape[-1] == 3:
        return Image.fromarray(np.ascontiguousarray(arr))  # mode "RGB"
    raise ValueError(f"can only write 1- or 3-channel images, got {arr.shape[-1]} channels")


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_size(text: str, font) -> tuple[int, int]:
    """(width, height) in pixels of `text` drawn with `font`."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    return right - left, bottom - top


def _save_png(image: Image.Image, path: str | Path) -> Path:
    """Write `image` as PNG via a temp file and os.replace; returns the path."""
    target = Path(path)
    atomic_write(target, lambda tmp: image.save(tmp, format="PNG"))
    return target


def _add_row_labels(
    grid: Image.Image, labels: Sequence[str], rows: int, row_pitch: float, y0: int = 0
) -> Image.Image:
    """A copy of `grid` with a white left margin holding one caption per row, vertically centred."""
    if len(labels) != rows:
        raise ValueError(f"labels_left has {len(labels)} captions for {rows} rows")
    font = _font()
    margin = max((_text_size(s, font)[0] for s in labels), default=0) + 2 * TEXT_GAP
    background = PAD_VALUE if grid.mode == "L" else (PAD_VALUE,) * 3
    out = Image.new(grid.mode, (grid.width + margin, grid.height), background)
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    fill = TEXT_FILL if grid.mode == "L" else (TEXT_FILL,) * 3
    for r, text in enumerate(labels):
        _, th = _text_size(text, font)
        y = y0 + int((r + 0.5) * row_pitch - th / 2)
        draw.text((TEXT_GAP, y), text, fill=fill, font=font)
    return out


def _add_column_labels(grid: Image.Image, labels: Sequence[str], col_pitch: float) -> tuple[Image.Image, int]:
    """A copy of `grid` with a white top margin holding one caption per column, horizontally
    centred (captions wider than a column are allowed to overlap their neighbours' margins);
    returns it and the margin's height."""
    font = _font()
    margin = max((_text_size(s, font)[1] for s in labels), default=0) + 2 * TEXT_GAP
    background = PAD_VALUE if grid.mode == "L" else (PAD_VALUE,) * 3
    out = Image.new(grid.mode, (grid.width, grid.height + margin), background)
    out.paste(grid, (0, margin))
    draw = ImageDraw.Draw(out)
    fill = TEXT_FILL if grid.mode == "L" else (TEXT_FILL,) * 3
    for c, text in enumerate(labels):
        tw, _ = _text_size(text, font)
        draw.text((max(0, int((c + 0.5) * col_pitch - tw / 2)), TEXT_GAP), text, fill=fill, font=font)
    return out, margin


def save_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int,
    padding: int = 2,
    scale: int = 1,
    labels_left: list[str] | None = None,
    labels_top: list[str] | None = None,
) -> Path:
    """Write (N, C, H, W) images in [-1, 1] as one PNG grid with `nrow` images per row.

    `scale` upsamples by an integer factor (nearest), so 32 px grids are visible; `labels_left`
    puts one caption per row in a left margin, `labels_top` one caption per column (nrow of them)
    in a top margin. Returns the path."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    grid = tensor_to_pil(make_grid(images, nrow, padding))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    top = 0
    if labels_top is not None:
        if len(labels_top) != nrow:
            raise ValueError(f"labels_top has {len(labels_top)} captions for {nrow} columns")
        grid, top = _add_column_labels(grid, labels_top, (images.shape[-1] + padding) * scale)
    if labels_left is not None:
        rows = max(1, math.ceil(len(images) / nrow))
        pitch = (images.shape[-2] + padding) * scale
        grid = _add_row_labels(grid, labels_left, rows, pitch, y0=top)
    return _save_png(grid, path)


def _as_pil(item: str | Path | Image.Image | torch.Tensor) -> Image.Image:
    """A path to an image file, a PIL image, or a (C, H, W) tensor (uint8, or float in [-1, 1])."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, torch.Tensor):
        t = item if item.dtype == torch.uint8 else to_uint8(item)
        return tensor_to_pil(t.cpu()).convert("RGB")
    with Image.open(item) as im:
        return im.convert("RGB")


def side_by_side(
    paths_or_images: Sequence[str | Path | Image.Image | torch.Tensor],
    titles: Sequence[str],
    out_path: str | Path,
    gap: int = 8,
) -> Path:
    """Compose several images horizontally, each under its title (to compare orders); RGB PNG."""
    if len(paths_or_images) != len(titles):
        raise ValueError(f"{len(paths_or_images)} images but {len(titles)} titles")
    if not titles:
        raise ValueError("side_by_side needs at least one image")
    panels = [_as_pil(p) for p in paths_or_images]
    font = _font()
    title_h = max(_text_size(t, font)[1] for t in titles) + 2 * TEXT_GAP
    width = sum(
        max(p.width, _text_size(t, font)[0] + 2 * TEXT_GAP)
        for p, t in zip(panels, titles, strict=True)
    )
    width += gap * (len(panels) + 1)
    height = title_h + max(p.height for p in panels) + gap
    canvas = Image.new("RGB", (width, height), (PAD_VALUE,) * 3)
    draw = ImageDraw.Draw(canvas)
    x = gap
    for panel, title in zip(panels, titles, strict=True):
        tw, _ = _text_size(title, font)
        col_w = max(panel.width, tw + 2 * TEXT_GAP)
        draw.text((x + (col_w - tw) // 2, TEXT_GAP), title, fill=(TEXT_FILL,) * 3, font=font)
        canvas.paste(panel, (x + (col_w - panel.width) // 2, title_h))
        x += col_w + gap
    return _save_png(canvas, out_path)
