"""The Pillow plots: a panel with one point gets a sensible x axis (issue 25, item 8)."""

from __future__ import annotations

import math

from PIL import Image

from genorder.plot import axis_range, band_panels, fmt_number, linear_ticks, log_ticks


def test_one_point_axis_spans_round_numbers_around_it():
    lo, hi = axis_range([1_000_000.0], 0.04)
    assert lo == 500_000 and hi == 1_500_000  # before: 999,999.96 .. 1,000,000.04
    ticks = linear_ticks(lo, hi, 5)
    labels = [fmt_number(t) for t in ticks]
    assert 3 <= len(ticks) <= 7 and len(set(labels)) == len(labels)  # distinct, readable labels
    assert any(abs(t - 1e6) < 1 for t in ticks)
    lo2, hi2 = axis_range([math.log2(4096)], 0.04, log=True)
    assert log_ticks(2**lo2, 2**hi2)  # a log axis around one point still has ticks
    assert axis_range([0.0], 0.1) == (-1.0, 1.0)
    assert axis_range([1.0, 3.0], 0.5) == (0.0, 4.0)  # several points: padded by the span, as before


def test_band_panels_with_one_point(tmp_path):
    panels = [{"title": "FID against compute", "xlabel": "training FLOPs", "ylabel": "FID",
               "series": {"raster": [(1.2e15, 80.0, 78.0, 82.0)]}, "hline": (20.0, "floor")}]  # fmt: skip
    out = band_panels(panels, tmp_path / "p.png", "one point")
    assert Image.open(out).size == (1240, 440)
