"""Small inline-SVG charts: horizontal bars with error bars, stacked bars, a
scatter with its Pareto frontier, a line over time. Plain strings, no
dependency and nothing fetched, so a report stays one self-contained file.
Every text that reaches the markup goes through ``esc``."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

FONT = 12
PALETTE = ("#2f9e44", "#4263eb", "#f08c00", "#ae3ec9", "#0c8599", "#e03131", "#5c940d", "#868e96")


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if len(ticks) < 2:
        ticks.append(round(start + step, 12))
    return ticks


def fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _svg(width: int, height: int, body: list[str], title: str, cls: str) -> str:
    return (
        f'<svg class="plot {esc(cls)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="system-ui, sans-serif" font-size="{FONT}">'
        f"<title>{esc(title)}</title>" + "".join(body) + "</svg>"
    )


@dataclass
class Bar:
    label: str
    value: float
    low: float | None = None
    high: float | None = None
    color: str = PALETTE[0]
    note: str = ""


def hbars(
    bars: Sequence[Bar],
    *,
    title: str,
    xmax: float | None = None,
    width: int = 560,
    label_width: int = 150,
    value_fmt: Callable[[float], str] = fmt_num,
    cls: str = "hbars",
    ref_line: float | None = None,
) -> str:
    """One horizontal bar per row; whiskers where low/high are given."""
    row_h, top, bottom = 24, 8, 26
    height = top + bottom + row_h * max(len(bars), 1)
    plot_w = width - label_width - 70
    hi = xmax if xmax is not None else max([b.high or b.value for b in bars] + [0.0]) or 1.0
    ticks = nice_ticks(0.0, hi, 4)
    hi = max(hi, ticks[-1])

    def x(v: float) -> float:
        return label_width + max(0.0, min(v, hi)) / hi * plot_w

    body = []
    for t in ticks:
        body.append(
            f'<line x1="{_f(x(t))}" y1="{top}" x2="{_f(x(t))}" y2="{height - bottom}" stroke="#e9ecef"/>'
            f'<text x="{_f(x(t))}" y="{height - bottom + 15}" text-anchor="middle" fill="#495057">'
            f"{esc(value_fmt(t))}</text>"
        )
    if ref_line is not None:
        body.append(
            f'<line x1="{_f(x(ref_line))}" y1="{top}" x2="{_f(x(ref_line))}" y2="{height - bottom}" '
            'stroke="#e03131" stroke-dasharray="4 3"/>'
        )
    for i, b in enumerate(bars):
        y = top + i * row_h
        tip = f"{b.label}: {value_fmt(b.value)}"
        if b.low is not None and b.high is not None:
            tip += f" [{value_fmt(b.low)}, {value_fmt(b.high)}]"
        if b.note:
            tip += f" ({b.note})"
        body.append(
            f'<g class="bar"><title>{esc(tip)}</title>'
            f'<text x="{label_width - 6}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="#212529">'
            f"{esc(_clip(b.label, 24))}</text>"
            f'<rect x="{label_width}" y="{y + 4}" width="{_f(x(b.value) - label_width)}" '
            f'height="{row_h - 8}" fill="{esc(b.color)}" rx="2"/>'
        )
        end = x(b.value)
        if b.low is not None and b.high is not None:
            xl, xh, ym = x(b.low), x(b.high), y + row_h / 2
            body.append(
                f'<path class="errorbar" d="M{_f(xl)} {_f(ym)}H{_f(xh)}M{_f(xl)} {_f(ym - 5)}V{_f(ym + 5)}'
                f'M{_f(xh)} {_f(ym - 5)}V{_f(ym + 5)}" stroke="#212529" stroke-width="1.5" fill="none"/>'
            )
            end = max(end, xh)
        body.append(
            f'<text x="{_f(end + 6)}" y="{y + row_h / 2 + 4:.1f}" fill="#495057">{esc(value_fmt(b.value))}</text></g>'
        )
    return _svg(width, height, body, title, cls)


@dataclass
class Stack:
    label: str
    parts: list[tuple[str, float]] = field(default_factory=list)  # (series name, value)


def stacked_hbars(
    stacks: Sequence[Stack],
    *,
    title: str,
    colors: dict[str, str],
    width: int = 640,
    label_width: int = 150,
    cls: str = "stacked",
) -> str:
    """Stacked horizontal bars (e.g. calls per task by who served them), with a legend."""
    row_h, top, bottom = 24, 26, 26
    height = top + bottom + row_h * max(len(stacks), 1)
    plot_w = width - label_width - 70
    hi = max([sum(v for _, v in s.parts) for s in stacks] + [0.0]) or 1.0
    ticks = nice_ticks(0.0, hi, 4)
    hi = max(hi, ticks[-1])
    body = []
    lx = label_width
    for name, color in colors.items():
        body.append(
            f'<rect x="{lx}" y="4" width="12" height="12" fill="{esc(color)}"/>'
            f'<text x="{lx + 16}" y="14" fill="#212529">{esc(name)}</text>'
        )
        lx += 24 + 8 * len(name)
    for t in ticks:
        xt = label_width + t / hi * plot_w
        body.append(
            f'<line x1="{_f(xt)}" y1="{top}" x2="{_f(xt)}" y2="{height - bottom}" stroke="#e9ecef"/>'
            f'<text x="{_f(xt)}" y="{height - bottom + 15}" text-anchor="middle" fill="#495057">'
            f"{esc(fmt_num(t))}</text>"
        )
    for i, s in enumerate(stacks):
        y = top + i * row_h
        body.append(
            f'<text x="{label_width - 6}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="#212529">'
            f"{esc(_clip(s.label, 24))}</text>"
        )
        x0 = float(label_width)
        total = sum(v for _, v in s.parts)
        for name, v in s.parts:
            if v <= 0:
                continue
            w = v / hi * plot_w
            share = f" ({v / total:.0%})" if total else ""
            body.append(
                f'<rect class="segment" x="{_f(x0)}" y="{y + 4}" width="{_f(w)}" height="{row_h - 8}" '
                f'fill="{esc(colors.get(name, PALETTE[-1]))}"><title>{esc(f"{s.label}: {name} {fmt_num(v)}{share}")}'
                "</title></rect>"
            )
            x0 += w
        body.append(
            f'<text x="{_f(x0 + 6)}" y="{y + row_h / 2 + 4:.1f}" fill="#495057">{esc(fmt_num(total))}</text>'
        )
    return _svg(width, height, body, title, cls)


@dataclass
class Point:
    label: str
    x: float
    y: float
    low: float | None = None
    high: float | None = None
    color: str = PALETTE[0]


def pareto(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both cost (lower) and quality (higher)."""
    best: list[Point] = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        if not best or p.y > best[-1].y:
            best.append(p)
    return best


def scatter(
    points: Sequence[Point],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 520,
    height: int = 280,
    xlog: bool = True,
    cls: str = "scatter",
) -> str:
    """Cost (x, log scale when positive) against quality (y), with CIs and the frontier."""
    left, right, top, bottom = 52, 90, 12, 40
    xs = [p.x for p in points]
    use_log = xlog and bool(xs) and min(xs) > 0 and (max(xs) / min(xs) > 20)
    tx: Callable[[float], float] = (lambda v: math.log10(v)) if use_log else (lambda v: v)
    lo_x, hi_x = (min(tx(v) for v in xs), max(tx(v) for v in xs)) if xs else (0.0, 1.0)
    pad = (hi_x - lo_x) * 0.08 or (abs(hi_x) * 0.1 or 1.0)
    lo_x, hi_x = lo_x - pad, hi_x + pad
    if not use_log:
        lo_x = max(lo_x, 0.0) if xs and min(xs) >= 0 else lo_x
    ys = [v for p in points for v in (p.y, p.low, p.high) if v is not None]
    lo_y, hi_y = (min(ys + [0.0]), max(ys + [1.0])) if ys else (0.0, 1.0)
    yticks = nice_ticks(lo_y, hi_y, 4)
    lo_y, hi_y = yticks[0], yticks[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + (tx(v) - lo_x) / (hi_x - lo_x) * pw

    def py(v: float) -> float:
        return top + ph - (v - lo_y) / ((hi_y - lo_y) or 1.0) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#dee2e6"/>']
    for t in yticks:
        body.append(
            f'<line x1="{left}" y1="{_f(py(t))}" x2="{left + pw}" y2="{_f(py(t))}" stroke="#f1f3f5"/>'
            f'<text x="{left - 6}" y="{_f(py(t) + 4)}" text-anchor="end" fill="#495057">{esc(fmt_num(t))}</text>'
        )
    if use_log:
        decades = [e for e in range(math.floor(lo_x), math.ceil(hi_x) + 1) if lo_x <= e <= hi_x]
        every = max(1, math.ceil(len(decades) / 6))  # at most ~6 labels
        xticks = [10.0**e for e in decades[::every]]
    else:
        xticks = [t for t in nice_ticks(lo_x, hi_x, 4) if lo_x <= t <= hi_x]
    for t in xticks:
        body.append(
            f'<line x1="{_f(px(t))}" y1="{top}" x2="{_f(px(t))}" y2="{top + ph}" stroke="#f1f3f5"/>'
            f'<text x="{_f(px(t))}" y="{top + ph + 15}" text-anchor="middle" fill="#495057">{esc(fmt_num(t))}</text>'
        )
    body.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#212529">{esc(xlabel)}'
        f"{' (log scale)' if use_log else ''}</text>"
        f'<text transform="translate(13 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#212529">'
        f"{esc(ylabel)}</text>"
    )
    front = pareto(points)
    if len(front) > 1:
        d = "M" + " L".join(f"{_f(px(p.x))} {_f(py(p.y))}" for p in front)
        body.append(f'<path class="frontier" d="{d}" stroke="#adb5bd" stroke-dasharray="5 3" fill="none"/>')
    for p in points:
        cx, cy = px(p.x), py(p.y)
        tip = f"{p.label}: quality {fmt_num(p.y)}"
        if p.low is not None and p.high is not None:
            tip += f" [{fmt_num(p.low)}, {fmt_num(p.high)}]"
            body.append(
                f'<path class="errorbar" d="M{_f(cx)} {_f(py(p.low))}V{_f(py(p.high))}M{_f(cx - 4)} '
                f'{_f(py(p.low))}H{_f(cx + 4)}M{_f(cx - 4)} {_f(py(p.high))}H{_f(cx + 4)}" stroke="{esc(p.color)}" '
                'fill="none"/>'
            )
        tip += f", ${fmt_num(p.x)} per 1k calls"
        body.append(
            f'<g class="point"><title>{esc(tip)}</title>'
            f'<circle cx="{_f(cx)}" cy="{_f(cy)}" r="5" fill="{esc(p.color)}" stroke="#fff"/>'
            f'<text x="{_f(cx + 7)}" y="{_f(cy - 6 if cy - 6 > top + 10 else cy + 14)}" fill="#212529">'
            f"{esc(_clip(p.label, 22))}</text></g>"
        )
    return _svg(width, height, body, title, cls)


def time_label(t: float, step_s: int) -> str:
    fmt = "%m-%d %H:%M" if step_s < 86400 else "%Y-%m-%d"
    return time.strftime(fmt, time.gmtime(t))


def line(
    series: Sequence[tuple[float, float]],
    *,
    title: str,
    ylabel: str,
    step_s: int,
    width: int = 640,
    height: int = 240,
    color: str = PALETTE[0],
    value_fmt: Callable[[float], str] = fmt_num,
    cls: str = "line",
) -> str:
    """A value over time (x: epoch seconds, labelled in UTC)."""
    left, right, top, bottom = 64, 50, 12, 40
    pw, ph = width - left - right, height - top - bottom
    xs = [x for x, _ in series] or [0.0]
    ys = [y for _, y in series] or [0.0]
    lo_x, hi_x = min(xs), max(xs)
    if hi_x == lo_x:
        lo_x, hi_x = lo_x - step_s, hi_x + step_s
    yticks = nice_ticks(min(ys + [0.0]), max(ys + [0.0]) or 1.0, 4)

    def px(v: float) -> float:
        return left + (v - lo_x) / (hi_x - lo_x) * pw

    def py(v: float) -> float:
        return top + ph - (v - yticks[0]) / ((yticks[-1] - yticks[0]) or 1.0) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#dee2e6"/>']
    for t in yticks:
        body.append(
            f'<line x1="{left}" y1="{_f(py(t))}" x2="{left + pw}" y2="{_f(py(t))}" stroke="#f1f3f5"/>'
            f'<text x="{left - 6}" y="{_f(py(t) + 4)}" text-anchor="end" fill="#495057">{esc(value_fmt(t))}</text>'
        )
    n_labels = 4
    for i in range(n_labels + 1):
        t = lo_x + (hi_x - lo_x) * i / n_labels
        body.append(
            f'<text x="{_f(px(t))}" y="{top + ph + 15}" text-anchor="middle" fill="#495057">'
            f"{esc(time_label(t, step_s))}</text>"
        )
    body.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#212529">time (UTC)</text>'
        f'<text transform="translate(13 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#212529">'
        f"{esc(ylabel)}</text>"
    )
    if series:
        d = "M" + " L".join(f"{_f(px(x))} {_f(py(y))}" for x, y in series)
        body.append(f'<path class="series" d="{d}" stroke="{esc(color)}" stroke-width="2" fill="none"/>')
        for x, y in series:
            body.append(
                f'<circle cx="{_f(px(x))}" cy="{_f(py(y))}" r="3" fill="{esc(color)}">'
                f"<title>{esc(time_label(x, step_s))}: {esc(value_fmt(y))}</title></circle>"
            )
    return _svg(width, height, body, title, cls)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def coverage_curve(
    curve: Sequence[dict[str, Any]],
    *,
    title: str,
    min_share: float,
    chosen: float | None = None,
    width: int = 520,
    height: int = 240,
) -> str:
    """A confidence floor's trade-off: the share of test answers served (x)
    against the share of teacher quality on them, point and lower bound (y),
    with the gate's bar and the chosen floor's coverage."""
    left, right, top, bottom = 52, 20, 12, 40
    pw, ph = width - left - right, height - top - bottom
    pts = [(float(c["coverage"]), (c.get("share") or {}).get("value"), (c.get("share") or {}).get("low"))
           for c in curve if c.get("coverage") is not None]

    def px(v: float) -> float:
        return left + v * pw

    def py(v: float) -> float:
        return top + ph - max(0.0, min(1.0, v)) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#dee2e6"/>']
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        body.append(
            f'<line x1="{left}" y1="{_f(py(t))}" x2="{left + pw}" y2="{_f(py(t))}" stroke="#f1f3f5"/>'
            f'<text x="{left - 6}" y="{_f(py(t) + 4)}" text-anchor="end" fill="#495057">{t:.2f}</text>'
            f'<text x="{_f(px(t))}" y="{top + ph + 15}" text-anchor="middle" fill="#495057">{t:.0%}</text>'
        )
    body.append(
        f'<line class="bar" x1="{left}" y1="{_f(py(min_share))}" x2="{left + pw}" y2="{_f(py(min_share))}" '
        f'stroke="#e03131" stroke-dasharray="5 3"><title>gate: lower bound >= {min_share:.2f}</title></line>'
    )
    if chosen is not None:
        body.append(
            f'<line class="chosen" x1="{_f(px(chosen))}" y1="{top}" x2="{_f(px(chosen))}" y2="{top + ph}" '
            f'stroke="#2f9e44" stroke-dasharray="3 3"><title>floor serves {chosen:.0%}</title></line>'
        )
    for idx, color, name in ((1, PALETTE[0], "share"), (2, "#868e96", "lower bound")):
        seg = [(x, p[idx]) for p in pts for x in [p[0]] if p[idx] is not None]
        if seg:
            d = "M" + " L".join(f"{_f(px(x))} {_f(py(y))}" for x, y in seg)
            body.append(f'<path class="{name.replace(" ", "-")}" d="{d}" stroke="{color}" stroke-width="2" '
                        f'fill="none"><title>{esc(name)}</title></path>')
    body.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#212529">'
        "test answers served (most confident first)</text>"
        f'<text transform="translate(13 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#212529">'
        "share of teacher quality</text>"
    )
    return _svg(width, height, body, title, "coverage")
