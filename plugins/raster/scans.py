"""Fixed scan orders of a square token map (RAR, arXiv 2411.00776, Tab. 3): each is a permutation of
the row-major cell indices [0, p*p), listing the cells in the order they are generated.

  * `row`: row-major, the identity (today's raster);
  * `zcurve`: Morton (z-order) curve: cells sorted by the interleaved bits of (row, column), the
    column bit lowest, so a 2x2 block is visited top-left, top-right, bottom-left, bottom-right;
  * `subsample`: the four stride-2 sub-grids one after another, each row-major: first every
    (even row, even column) cell, then (even, odd), (odd, even), (odd, odd);
  * `spiral-in`: clockwise from the top-left corner along the outer ring, ring by ring to the centre;
  * `spiral-out`: `spiral-in` reversed: from the centre outwards (counter-clockwise), ending at the
    top-left corner;
  * `alternate`: boustrophedon: even rows left to right, odd rows right to left.
"""

from __future__ import annotations

import torch

SCANS = ("row", "zcurve", "subsample", "spiral-in", "spiral-out", "alternate")


def _morton(r: int, c: int) -> int:
    code, bit = 0, 0
    while (r >> bit) or (c >> bit):
        code |= ((c >> bit) & 1) << (2 * bit)
        code |= ((r >> bit) & 1) << (2 * bit + 1)
        bit += 1
    return code


def _spiral_in(p: int) -> list[int]:
    out: list[int] = []
    top, left, bottom, right = 0, 0, p - 1, p - 1
    while top <= bottom and left <= right:
        out += [top * p + c for c in range(left, right + 1)]
        out += [r * p + right for r in range(top + 1, bottom + 1)]
        if top < bottom:
            out += [bottom * p + c for c in range(right - 1, left - 1, -1)]
        if left < right:
            out += [r * p + left for r in range(bottom - 1, top, -1)]
        top, left, bottom, right = top + 1, left + 1, bottom - 1, right - 1
    return out


def scan_order(scan: str, p: int) -> torch.Tensor:
    """(p*p,) int64: the row-major index of the cell generated at each step of `scan` on a p x p map."""
    if p < 1:
        raise ValueError(f"map side must be >= 1, got {p}")
    cells = [(r, c) for r in range(p) for c in range(p)]
    if scan == "row":
        order = list(range(p * p))
    elif scan == "zcurve":
        order = sorted(range(p * p), key=lambda i: _morton(*cells[i]))
    elif scan == "subsample":
        order = [r * p + c for dr in (0, 1) for dc in (0, 1) for r in range(dr, p, 2) for c in range(dc, p, 2)]
    elif scan == "spiral-in":
        order = _spiral_in(p)
    elif scan == "spiral-out":
        order = _spiral_in(p)[::-1]
    elif scan == "alternate":
        order = [r * p + (c if r % 2 == 0 else p - 1 - c) for r in range(p) for c in range(p)]
    else:
        raise ValueError(f"unknown scan {scan!r}; one of {', '.join(SCANS)}")
    return torch.tensor(order, dtype=torch.long)
