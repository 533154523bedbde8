"""SVG charts for the HTML report, drawn here rather than by a JavaScript library: a heatmap, a
histogram, a log-log line chart and a scatter plot, each a string of escaped SVG markup.

Every piece of text that reaches the markup goes through markupsafe.escape; numbers are
formatted here. Elements that the report's script can explain on click carry data-k, an index
into the report's table of details.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

# One colour per backend, in the order the backends are first listed (Okabe-Ito, readable by
# people with the common colour-vision deficiencies).
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
                            "#F0E442", "#000000")
# The ULP colour scale: log2 of the error against these stops; 0.5 ULP is correctly rounded.
ULP_STOPS: tuple[tuple[float, str], ...] = ((0.5, "#1a9850"), (2.0, "#a6d96a"), (8.0, "#fee08b"),
                                            (64.0, "#fdae61"), (1024.0, "#d73027"), (65536.0, "#67001f"))
NO_VALUE = "#c6d3e3"
# Fills that say the verdict, not an error size: every unexpected failure alike (too far off, NaN or
# inf for a number, a broken invariant), and a call that raised or timed out. The glyph tells them
# apart from the scale's own reds without colour.
FAIL_FILL, ERROR_FILL, NOT_RUN_FILL = "#b00020", "#222222", "#ececec"
GLYPHS = {"fail": "×", "error": "!"}
STATUS_STROKE = {"fail": ("#5c0010", "1.5", ""), "error": ("#000000", "1.5", ""),
                 "known_failure": ("#7a4b00", "1.5", "3 2")}
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def ulp_colour(ulp: float | None) -> str:
    """The fill for an error of ulp ULPs: green when correctly rounded, through yellow, to dark
    red past 2^16; interpolated on log2 between the stops."""
    if ulp is None or math.isnan(ulp):
        return NO_VALUE
    if ulp <= ULP_STOPS[0][0]:
        return ULP_STOPS[0][1]
    for (lo, c_lo), (hi, c_hi) in itertools.pairwise(ULP_STOPS):
        if ulp <= hi:
            t = (math.log2(ulp) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
            rgb = [round(a + (b - a) * t) for a, b in zip(_hex(c_lo), _hex(c_hi), strict=True)]
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return ULP_STOPS[-1][1]


def number(value: float | None, digits: int = 3) -> str:
    """A compact label: 3 significant digits, 'inf', or '-' for no value."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def size_label(value: float) -> str:
    """Counts with a binary prefix where exact (4096 -> 4K, 2^20 -> 1M), else 3 digits with a
    decimal one (2516458 -> 2.52M)."""
    for unit, power in (("G", 30), ("M", 20), ("K", 10)):
        if value >= 2**power and value % 2**power == 0:
            return f"{int(value) >> power}{unit}"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return number(value)


def _svg(width: float, height: float, body: list[str], label: str, css_class: str) -> Markup:
    return Markup(f'<svg class="chart {css_class}" role="img" aria-label="{escape(label)}" '
                  f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
                  f'xmlns="http://www.w3.org/2000/svg" {FONT}>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


@dataclass(frozen=True)
class Cell:
    """One heatmap cell: an error in ULP (None: nothing measured), the record's status and failure
    kind (None, accuracy, semantic, invariant, error, ...), the hover text, and the index of its
    details (None: nothing to show)."""

    ulp: float | None
    status: str
    title: str
    key: int | None = None
    failure: str | None = None


@dataclass(frozen=True)
class Panel:
    """One panel of a heatmap: its heading and its columns; cells by (row, column)."""

    heading: str
    columns: Sequence[str]
    cells: dict[tuple[str, str], Cell]


CELL_W, CELL_H = 22, 15
# Widths of a character at the charts' 11 px font, to size the room text needs (no text metrics here).
CHAR_W, BOLD_CHAR_W = 6.2, 7.5
PANEL_GAP = 16
# Column labels are turned 60 degrees: their length runs up by sin 60 and right by cos 60.
UP, RIGHT = math.sin(math.radians(60)), math.cos(math.radians(60))


def heatmap(rows: Sequence[str], panels: Sequence[Panel], label: str) -> Markup:
    """Panels side by side sharing the row labels: a rectangle per cell filled by cell_fill, known
    deviations outlined; cells not run are left out. A panel is as wide as its heading, and the
    picture as wide and tall as its turned column labels, so that one column per panel (a
    one-backend report) neither overlaps headings nor cuts labels off."""
    label_w = 7 * max((len(r) for r in rows), default=4) + 10
    longest = max((len(c) for p in panels for c in p.columns), default=4)
    header_h = math.ceil(22 + UP * CHAR_W * longest + 8)
    body: list[str] = []
    x0, right = label_w, float(label_w)
    for i, row in enumerate(rows):
        body.append(_text(label_w - 6, header_h + i * CELL_H + 11, row, "end"))
    for panel in panels:
        columns_w = len(panel.columns) * CELL_W
        width = max(columns_w, math.ceil(BOLD_CHAR_W * len(panel.heading)))
        left = x0 + (width - columns_w) // 2
        body.append(_text(x0 + width / 2, 12, panel.heading, "middle", 'class="heading" font-weight="bold"'))
        for j, column in enumerate(panel.columns):
            cx, cy = left + j * CELL_W + CELL_W / 2 + 4, header_h - 4
            body.append(_text(cx, cy, column, "start", f'transform="rotate(-60 {cx:.1f} {cy:.1f})"'))
            right = max(right, cx + RIGHT * CHAR_W * len(column) + 6)
        for i, row in enumerate(rows):
            for j, column in enumerate(panel.columns):
                cell = panel.cells.get((row, column))
                if cell is not None:
                    body.append(_cell(cell, left + j * CELL_W, header_h + i * CELL_H))
        x0 += width + PANEL_GAP
    return _svg(max(x0, right), header_h + len(rows) * CELL_H + 4, body, label, "heatmap")


def cell_fill(cell: Cell) -> str:
    """An unexpected failure is one red whatever went wrong, an error black, a cell not run grey;
    otherwise the error's colour on the ULP scale, where a value of the wrong kind (NaN or inf for a
    number: outside the ULP statistics) counts as the largest error."""
    if cell.status == "fail":
        return FAIL_FILL
    if cell.status == "error" or cell.failure in ("error", "timeout", "crash"):
        return ERROR_FILL
    if cell.status in ("unsupported", "skip"):
        return NOT_RUN_FILL
    return ulp_colour(math.inf if cell.failure == "semantic" else cell.ulp)


def _cell(cell: Cell, x: float, y: float) -> str:
    key = f' data-k="{cell.key}"' if cell.key is not None else ""
    title = f"<title>{escape(cell.title)}</title>"
    stroke, width, dash = STATUS_STROKE.get(cell.status, ("none", "0", ""))
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    markup = (f'<rect class="cell {cell.status}"{key} x="{x + 1}" y="{y + 1}" width="{CELL_W - 2}" '
              f'height="{CELL_H - 2}" fill="{cell_fill(cell)}" stroke="{stroke}" stroke-width="{width}"'
              f"{dash_attr}>{title}</rect>")
    glyph = GLYPHS.get(cell.status) or ("–" if cell.status in ("unsupported", "skip") else None)
    if glyph:
        colour = "#999" if glyph == "–" else "#fff"
        markup += _text(x + CELL_W / 2, y + 11.5, glyph, "middle",
                        f'fill="{colour}" font-weight="bold" pointer-events="none"')
    return markup


def ulp_legend() -> Markup:
    """The colour scale, the verdict fills and the known deviations' outline, as a small SVG."""
    body: list[str] = []
    steps = 48
    lo, hi = math.log2(ULP_STOPS[0][0]), math.log2(ULP_STOPS[-1][0])
    for i in range(steps):
        value = 2 ** (lo + (hi - lo) * (i + 0.5) / steps)
        body.append(f'<rect x="{10 + i * 6}" y="4" width="6" height="12" fill="{ulp_colour(value)}"/>')
    for ulp, _ in ULP_STOPS:
        x = 10 + (math.log2(ulp) - lo) / (hi - lo) * steps * 6
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="16" y2="20" stroke="#333"/>')
        body.append(_text(x, 31, number(ulp), "middle"))
    body.append(_text(10, 44, "largest ULP error of the case (log scale; 0.5 = correctly rounded; "
                              "NaN or inf for a number: the darkest)"))
    x = 320
    samples = (("fail", None, "unexpected failure (any kind)"), ("error", None, "error"),
               ("known_failure", 64.0, "known deviation"), ("unsupported", None, "not run"),
               ("pass", None, "nothing measured (special values only)"))
    for status, ulp, text in samples:
        body.append(_cell(Cell(ulp, status, text), x, 3))
        body.append(_text(x + CELL_W + 4, 14, text))
        x += CELL_W + 12 + CHAR_W * len(text)
    return _svg(x, 50, body, "colour scale: largest ULP error, and the verdicts", "legend")


@dataclass(frozen=True)
class Series:
    """A named line or set of points; dashed lines draw a limit (the roofline)."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    dashed: bool = False
    marker: str = "circle"
    keys: Sequence[int | None] = field(default_factory=tuple)


def _log_ticks(lo: float, hi: float, base: int) -> list[float]:
    first, last = math.floor(math.log(lo, base)), math.ceil(math.log(hi, base))
    step = max(1, math.ceil((last - first) / 5))
    return [float(base) ** k for k in range(first, last + 1, step)]


@dataclass(frozen=True)
class Axes:
    """A log-log plotting area: data ranges, pixel box, and the mapping between them."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: float = 52
    top: float = 22
    width: float = 230
    height: float = 150

    def x(self, value: float) -> float:
        lo, hi = (math.log10(v) for v in self.x_range)
        return self.left + (math.log10(value) - lo) / ((hi - lo) or 1) * self.width

    def y(self, value: float) -> float:
        lo, hi = (math.log10(v) for v in self.y_range)
        return self.top + self.height - (math.log10(value) - lo) / ((hi - lo) or 1) * self.height


def _padded(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    return lo / 1.6, hi * 1.6


def _frame(axes: Axes, title: str, x_label: str, y_label: str, x_base: int,
           x_format=number) -> list[str]:
    body = [f'<rect x="{axes.left}" y="{axes.top}" width="{axes.width}" height="{axes.height}" '
            'fill="#fcfcfc" stroke="#bbb"/>',
            _text(axes.left + axes.width / 2, 13, title, "middle", 'font-weight="bold"')]
    for tick in _log_ticks(*axes.x_range, x_base):
        if axes.x_range[0] <= tick <= axes.x_range[1]:
            x = axes.x(tick)
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axes.top}" y2="{axes.top + axes.height}" '
                        'stroke="#eee"/>')
            body.append(_text(x, axes.top + axes.height + 13, x_format(tick), "middle"))
    for tick in _log_ticks(*axes.y_range, 10):
        if axes.y_range[0] <= tick <= axes.y_range[1]:
            y = axes.y(tick)
            body.append(f'<line x1="{axes.left}" x2="{axes.left + axes.width}" y1="{y:.1f}" y2="{y:.1f}" '
                        'stroke="#eee"/>')
            body.append(_text(axes.left - 4, y + 4, number(tick), "end"))
    body.append(_text(axes.left + axes.width / 2, axes.top + axes.height + 27, x_label, "middle"))
    cy = axes.top + axes.height / 2
    body.append(_text(12, cy, y_label, "middle", f'transform="rotate(-90 12 {cy:.1f})"'))
    return body


def _marker(kind: str, x: float, y: float, fill: str, key: int | None, title: str,
            stroke: str | None = None) -> str:
    data = f' data-k="{key}"' if key is not None else ""
    if stroke:
        data += f' stroke="{stroke}" stroke-width="1.5"'
    inner = f"<title>{escape(title)}</title>"
    if kind == "square":
        return (f'<rect class="point"{data} x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" '
                f'fill="{fill}">{inner}</rect>')
    if kind == "diamond":
        return (f'<path class="point"{data} d="M{x:.1f} {y - 5:.1f}l5 5l-5 5l-5 -5z" fill="{fill}">'
                f"{inner}</path>")
    return f'<circle class="point"{data} cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}">{inner}</circle>'


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str,
               point_title=None) -> Markup:
    """Log-log lines with markers (point_title(series, x, y) is each marker's hover text);
    dashed series draw as lines only. Empty series are left out."""
    drawn = [s for s in series if s.points]
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points if y > 0]
    if not xs or not ys:
        return Markup("")
    axes = Axes(_padded(xs), _padded(ys))
    body = _frame(axes, title, x_label, y_label, 2, size_label)
    for s in drawn:
        points = sorted((x, y) for x, y in s.points if y > 0)
        path = " ".join(f"{'M' if i == 0 else 'L'}{axes.x(x):.1f} {axes.y(y):.1f}"
                        for i, (x, y) in enumerate(points))
        dash = ' stroke-dasharray="5 3" stroke-width="1.2"' if s.dashed else ' stroke-width="1.8"'
        body.append(f'<path class="line" d="{path}" fill="none" stroke="{s.colour}"{dash}>'
                    f"<title>{escape(s.name)}</title></path>")
        if not s.dashed:
            keys = list(s.keys) or [None] * len(s.points)
            for (x, y), key in sorted(zip(s.points, keys, strict=False)):
                if y > 0:
                    text = point_title(s, x, y) if point_title else f"{s.name}: {number(y)}"
                    body.append(_marker(s.marker, axes.x(x), axes.y(y), s.colour, key, text))
    return _svg(axes.left + axes.width + 12, axes.top + axes.height + 34, body, title, "lines")


@dataclass(frozen=True)
class Point:
    """A scatter point; a hollow one is drawn as an outline in its colour."""

    x: float
    y: float
    colour: str
    marker: str
    title: str
    key: int | None = None
    hollow: bool = False


def scatter(points: Sequence[Point], title: str, x_label: str, y_label: str) -> Markup:
    """A log-log scatter plot with a marker per point; points with a value <= 0 are left out."""
    shown = [p for p in points if p.x > 0 and p.y > 0]
    if not shown:
        return Markup("")
    axes = Axes(_padded([p.x for p in shown]), _padded([p.y for p in shown]),
                left=76, width=520, height=300)
    body = _frame(axes, title, x_label, y_label, 10)
    for p in shown:
        body.append(_marker(p.marker, axes.x(p.x), axes.y(p.y), "#ffffff" if p.hollow else p.colour,
                            p.key, p.title, p.colour if p.hollow else None))
    return _svg(axes.left + axes.width + 12, axes.top + axes.height + 34, body, title, "scatter")


def histogram(counts: Sequence[int], labels: Sequence[str], colours: Sequence[str], label: str,
              bar_titles: Sequence[str]) -> Markup:
    """Bars of counts on a log scale (log10(1 + count)), one per label (an empty label draws
    no tick text), with hover text; every histogram of a report has the same bins, so they
    line up in a grid."""
    width, height, top, left = 9 * len(labels), 60, 8, 38
    peak = math.log10(1 + max(counts, default=0)) or 1
    body = [f'<line x1="{left}" x2="{left + width}" y1="{top + height}" y2="{top + height}" stroke="#999"/>',
            _text(left - 3, top + 8, size_label(max(counts, default=0)), "end")]
    for i, (count, text, fill) in enumerate(zip(counts, bar_titles, colours, strict=False)):
        bar = math.log10(1 + count) / peak * height
        body.append(f'<rect class="bar" x="{left + i * 9 + 1}" y="{top + height - bar:.1f}" width="7" '
                    f'height="{bar:.1f}" fill="{fill}"><title>{escape(text)}</title></rect>')
    for i, text in enumerate(labels):
        if text:
            body.append(_text(left + i * 9 + 4.5, top + height + 12, text, "middle"))
    return _svg(left + width + 14, top + height + 16, body, label, "histogram")
