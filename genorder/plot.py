"""Line plots drawn with Pillow (no matplotlib): `genorder bench`'s images/s against batch size and
`genorder compare`'s loss curves. One function, `line_plot`, with linear or logarithmic axes."""

from __future__ import annotations

import math
from pathlib import Path

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip

Series = dict[str, list[tuple[float, float]]]  # label -> [(x, y), ...]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k between lo and hi (or only decades when the range is wide)."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks: list[float] = []
    for mults in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in mults if lo <= m * 10.0**k <= hi]
        if len(ticks) >= 4:
            return ticks
    return ticks


def linear_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round steps (1, 2, 5 x 10^k) giving about `target` ticks between lo and hi."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def fmt_number(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:g}k"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def line_plot(
    series: Series,
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    xlog: bool = False,
    ylog: bool = False,
    xticks_at_data: bool = False,
) -> Path:
    """One line (with dots) per label; log axes use base 2 for x and base 10 for y."""
    from PIL import Image, ImageDraw

    W, H = 960, 600
    left, right, top, bottom = 90, 230, 60, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f_title, f_axis, f_tick = _font(18), _font(15), _font(13)
    d.text((left, 8), title, fill="black", font=f_title)
    pts = [(x, y) for s in series.values() for x, y in s if (x > 0 or not xlog) and (y > 0 or not ylog)]
    if not pts:
        d.text((left, H // 2), "no data", fill="black", font=f_axis)
    else:
        fx = math.log2 if xlog else float
        fy = math.log10 if ylog else float
        xs, ys = [fx(x) for x, _ in pts], [fy(y) for _, y in pts]
        px = 0.3 if xlog else 0.03 * (max(xs) - min(xs) or 1)
        py = 0.15 if ylog else 0.05 * (max(ys) - min(ys) or 1)
        lx0, lx1, ly0, ly1 = min(xs) - px, max(xs) + px, min(ys) - py, max(ys) + py
        pw, ph = W - left - right, H - top - bottom

        def xy(x: float, y: float) -> tuple[float, float]:
            return (left + (fx(x) - lx0) / (lx1 - lx0) * pw, top + (ly1 - fy(y)) / (ly1 - ly0) * ph)

        d.rectangle([left, top, left + pw, top + ph], outline="black")
        inv_x = (lambda v: 2.0**v) if xlog else (lambda v: v)
        inv_y = (lambda v: 10.0**v) if ylog else (lambda v: v)
        if xticks_at_data:
            xt = sorted({x for x, _ in pts})
        else:
            xt = log_ticks(inv_x(lx0), inv_x(lx1)) if xlog else linear_ticks(lx0, lx1)
        for xv in xt:
            x, _ = xy(xv, inv_y(ly0))
            label = fmt_number(xv)
            d.line([x, top, x, top + ph], fill=(230, 230, 230))
            d.text((x - 3.5 * len(label), top + ph + 6), label, fill="black", font=f_tick)
        yt = log_ticks(inv_y(ly0), inv_y(ly1)) if ylog else linear_ticks(ly0, ly1)
        for yv in yt:
            _, y = xy(inv_x(lx0), yv)
            label = fmt_number(yv)
            d.line([left, y, left + pw, y], fill=(230, 230, 230))
            d.text((left - 8 - 7 * len(label), y - 7), label, fill="black", font=f_tick)
        d.text((left + pw / 2 - 4 * len(xlabel), H - 30), xlabel, fill="black", font=f_axis)
        d.text((10, top - 24), ylabel, fill="black", font=f_axis)
        for i, (label, s) in enumerate(series.items()):
            col = COLORS[i % len(COLORS)]
            xys = [xy(x, y) for x, y in sorted(s) if (x > 0 or not xlog) and (y > 0 or not ylog)]
            if len(xys) > 1:
                d.line(xys, fill=col, width=3)
            if len(xys) <= 40:
                for x, y in xys:
                    d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=col)
            ly = top + 10 + 24 * i
            d.line([left + pw + 15, ly + 8, left + pw + 45, ly + 8], fill=col, width=3)
            d.text((left + pw + 52, ly), label[:24], fill="black", font=f_tick)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, format="PNG")
    return p
