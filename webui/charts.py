"""Charts drawn on the server as inline SVG: no JavaScript, no library, nothing fetched
from elsewhere (the CSP allows none). Colours come from classes in static/app.css.

Each chart is a `<figure>` with an `<svg role="img">` and a `<figcaption>`; every bar
carries a `<title>` (its value, shown on hover) and `data-value`, so a test or a screen
reader reads the numbers the bars are drawn from."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

W, H = 480, 150  # viewBox; the SVG scales to its card
PAD_L, PAD_B, PAD_T = 34, 20, 8


@dataclass(frozen=True)
class Bar:
    value: float
    label: str  # under the bar (may be empty)
    title: str  # on hover
    cls: str = "bar"  # CSS class: bar, bar-ok, bar-bad, bar-warn


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600):
        if v <= step * 4:
            return float(step * 4)
    return float(v)


def bar_chart(chart_id: str, caption: str, bars: Sequence[Bar], unit: str = "",
              empty: str = "No data yet.") -> Markup:
    """Vertical bars over a y axis with four ticks; `unit` follows the tick values."""
    if not bars or not any(b.value for b in bars):
        return Markup(f'<figure class="chart" id="{escape(chart_id)}"><figcaption>'
                      f'{escape(caption)}</figcaption><p class="empty">{escape(empty)}</p>'
                      '</figure>')
    top = _nice_max(max(b.value for b in bars))
    plot_w, plot_h = W - PAD_L - 4, H - PAD_B - PAD_T
    slot = plot_w / len(bars)
    parts = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(caption)}" '
             'class="chart-svg">']
    for i in range(5):  # y ticks
        y = PAD_T + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{PAD_L}" x2="{W - 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">'
                     f'{_fmt(top * i / 4)}{escape(unit)}</text>')
    every = max(1, len(bars) // 12)  # at most ~12 labels under the bars
    for i, b in enumerate(bars):
        h = plot_h * min(b.value, top) / top
        x = PAD_L + i * slot + slot * 0.12
        parts.append(f'<rect class="{escape(b.cls)}" x="{x:.1f}" y="{PAD_T + plot_h - h:.1f}" '
                     f'width="{max(slot * 0.76, 1):.1f}" height="{h:.1f}" '
                     f'data-value="{b.value:g}"><title>{escape(b.title)}</title></rect>')
        if b.label and i % every == 0:
            parts.append(f'<text class="tick" x="{x + slot * 0.38:.1f}" y="{H - 6}" '
                         f'text-anchor="middle">{escape(b.label)}</text>')
    parts.append("</svg>")
    return Markup(f'<figure class="chart" id="{escape(chart_id)}">{"".join(parts)}'
                  f'<figcaption>{escape(caption)}</figcaption></figure>')


def meter(chart_id: str, caption: str, used: int, size: int) -> Markup:
    """One horizontal bar: `used` of `size`."""
    share = used / size if size else 0.0
    cls = "bar-bad" if share >= 0.9 else "bar-warn" if share >= 0.75 else "bar-ok"
    w = (W - 8) * min(share, 1.0)
    text = f"{used} of {size} ({share:.0%})"
    return Markup(
        f'<figure class="chart" id="{escape(chart_id)}"><svg viewBox="0 0 {W} 34" role="img" '
        f'aria-label="{escape(caption)}: {escape(text)}" class="chart-svg meter">'
        f'<rect class="track" x="4" y="4" width="{W - 8}" height="26" rx="4"/>'
        f'<rect class="{cls}" x="4" y="4" width="{w:.1f}" height="26" rx="4" '
        f'data-value="{used}"><title>{escape(text)}</title></rect>'
        f'<text class="meter-label" x="{W / 2}" y="22" text-anchor="middle">{escape(text)}</text>'
        f'</svg><figcaption>{escape(caption)}</figcaption></figure>')


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def duration(seconds: float | None) -> str:
    """`3.2 s`, `4 min 10 s`, `1 h 5 min`; `—` for None."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def hourly(timestamps: Sequence[float], now: float, hours: int = 24) -> list[tuple[float, int]]:
    """(start of hour, how many of `timestamps` fall in it) for the last `hours` hours."""
    end = (int(now) // 3600 + 1) * 3600
    counts = [0] * hours
    for ts in timestamps:
        i = hours - 1 - int((end - ts) // 3600)
        if 0 <= i < hours:
            counts[i] += 1
    return [(end - (hours - i) * 3600, n) for i, n in enumerate(counts)]


def hour_label(ts: float) -> str:
    return time.strftime("%H", time.localtime(ts))
