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


def axis_range(values: list[float], frac: float, log: bool = False) -> tuple[float, float]:
    """(lo, hi) of an axis over `values` (already log-transformed when `log`), padded by `frac` of
    the span. One distinct value (e.g. a single FID point): half a unit either side on a log axis,
    half the value either side on a linear one, so the ticks stay round numbers near the value."""
    lo, hi = min(values), max(values)
    if hi > lo:
        pad = frac * (hi - lo)
    elif log:
        pad = 0.5
    else:
        pad = 0.5 * abs(lo) or 1.0
    return lo - pad, hi + pad


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
        if xlog:
            lx0, lx1 = min(xs) - 0.3, max(xs) + 0.3
        else:
            lx0, lx1 = axis_range(xs, 0.03)
        if ylog:
            ly0, ly1 = min(ys) - 0.15, max(ys) + 0.15
        else:
            ly0, ly1 = axis_range(ys, 0.05)
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


Band = list[tuple[float, float, float, float]]  # [(x, mean, low, high), ...]


def band_panels(panels: list[dict], path: str | Path, title: str, cols: int = 2) -> Path:
    """Several small plots in one PNG (`genorder compare`'s comparison_curves.png). Each panel is a
    dict: "title", "xlabel", "ylabel", "series" {label: Band} (a line through the means and a shaded
    band between low and high, e.g. the min and max over seeds), optional "hline" (value, label)
    drawn dashed (e.g. the real-against-real FID floor) and "xlog" (log2 x axis). The same label has
    the same colour in every panel."""
    from PIL import Image, ImageDraw

    pw_, ph_ = 620, 400
    rows = max(1, math.ceil(len(panels) / cols))
    W, H = pw_ * cols, ph_ * rows + 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img, "RGBA")
    f_title, f_axis, f_tick = _font(18), _font(14), _font(12)
    d.text((12, 8), title, fill="black", font=f_title)
    labels: list[str] = []
    for p in panels:
        labels += [k for k in p["series"] if k not in labels]
    colour = {k: COLORS[i % len(COLORS)] for i, k in enumerate(labels)}
    for i, p in enumerate(panels):
        ox, oy = (i % cols) * pw_, 40 + (i // cols) * ph_
        left, right, top, bottom = ox + 75, ox + pw_ - 20, oy + 30, oy + ph_ - 55
        d.text((ox + 75, oy + 6), p.get("title", ""), fill="black", font=f_axis)
        xlog = bool(p.get("xlog"))
        fx = (lambda v: math.log2(v)) if xlog else float
        pts = [(x, y) for s in p["series"].values() for x, m, lo, hi in s for y in (m, lo, hi)
               if y is not None and (x > 0 or not xlog)]
        if p.get("hline") is not None:
            pts.append((pts[0][0] if pts else 1.0, p["hline"][0]))
        d.rectangle([left, top, right, bottom], outline="black")
        if not pts:
            d.text((left + 10, (top + bottom) // 2), "no data", fill="black", font=f_axis)
            continue
        xs, ys = [fx(x) for x, _ in pts], [y for _, y in pts]
        x0, x1 = axis_range(xs, 0.04, xlog)  # one point: a sensible span around it, not +-0.04
        y0, y1 = axis_range(ys, 0.08)

        def xy(x: float, y: float) -> tuple[float, float]:
            return (left + (fx(x) - x0) / (x1 - x0) * (right - left), top + (y1 - y) / (y1 - y0) * (bottom - top))

        inv = (lambda v: 2.0**v) if xlog else (lambda v: v)
        xt = log_ticks(inv(x0), inv(x1)) if xlog else linear_ticks(x0, x1, 5)
        for xv in xt:
            x, _ = xy(xv, y0)
            d.line([x, top, x, bottom], fill=(232, 232, 232))
            lab = fmt_number(xv) if abs(xv) < 1e9 else f"{xv:.1e}"
            d.text((x - 3.5 * len(lab), bottom + 5), lab, fill="black", font=f_tick)
        for yv in linear_ticks(y0, y1, 5):
            _, y = xy(inv(x0), yv)
            d.line([left, y, right, y], fill=(232, 232, 232))
            lab = fmt_number(yv)
            d.text((left - 8 - 6.5 * len(lab), y - 7), lab, fill="black", font=f_tick)
        d.text(((left + right) / 2 - 3.5 * len(p.get("xlabel", "")), bottom + 24), p.get("xlabel", ""), fill="black", font=f_axis)
        d.text((ox + 6, oy + 6), p.get("ylabel", ""), fill="black", font=f_tick)
        if p.get("hline") is not None:
            yv, lab = p["hline"]
            _, y = xy(inv(x0), yv)
            for xa in range(int(left), int(right), 14):
                d.line([xa, y, min(xa + 7, right), y], fill=(90, 90, 90), width=2)
            d.text((left + 6, y - 16), lab, fill=(60, 60, 60), font=f_tick)
        for label, s in p["series"].items():
            col = colour[label]
            s = sorted((x, m, lo, hi) for x, m, lo, hi in s if m is not None and (x > 0 or not xlog))
            if len(s) > 1 and any(hi != lo for _, _, lo, hi in s):
                poly = [xy(x, hi) for x, _, _, hi in s] + [xy(x, lo) for x, _, lo, _ in reversed(s)]
                d.polygon(poly, fill=(*col, 60))
            line = [xy(x, m) for x, m, _, _ in s]
            if len(line) > 1:
                d.line(line, fill=col, width=3)
            for x, y in line:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
    for i, label in enumerate(labels):  # one legend for every panel
        lx = W - 170
        ly = 10 + 18 * i
        d.line([lx, ly + 7, lx + 26, ly + 7], fill=colour[label], width=3)
        d.text((lx + 32, ly), label[:20], fill="black", font=f_tick)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG", optimize=True)
    return out
