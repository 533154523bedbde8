"""SVG charts for the HTML report, drawn here rather than by a JavaScript library: a heatmap, a
histogram, a log-log line chart and a scatter plot, each a string of escaped SVG markup.

Every piece of text that reaches the markup goes through markupsafe.escape; numbers are
formatted here. Elements that the report's script can explain on click carry data-k, an index
into the report's table of details.

Any number may reach a chart: a backend that returns a non-zero where the exact value is 0 scores
1.8e308 ULP or inf, a timing of 0 s an infinite GB/s. The log axes place what they can: a value past
an axis (infinite, or over the caller's limit) is drawn at that axis's far edge as a triangle
pointing out of the chart, a value with no place on a log axis (none, NaN, <= 0) is left out, and a
note under the chart counts both. No chart raises, and no coordinate is ever NaN or infinite.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections import Counter
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


def real(value: object) -> float | None:
    """value as a float, or None where it is no number (None, text, a bool). An integer too large
    for a float (JSON reads any) is an infinity of its sign: float() would raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def number(value: float | None, digits: int = 3) -> str:
    """A compact label: 3 significant digits, 'inf', 'nan', or '-' for no value."""
    value = real(value)
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def size_label(value: float) -> str:
    """Counts with a binary prefix where exact (4096 -> 4K, 2^20 -> 1M), else 3 digits with a
    decimal one (2516458 -> 2.52M); past 10^12, or not finite, as number() writes it."""
    value = real(value)
    if value is None or not value < 1e12:
        return number(value)
    for unit, power in (("G", 30), ("M", 20), ("K", 10)):
        if value >= 2**power and value % 2**power == 0:
            return f"{int(value) >> power}{unit}"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return number(value)


# Characters XML 1.0 forbids (controls, lone surrogates, U+FFFE/U+FFFF): a name holding one would
# make the SVG no XML, and a lone surrogate cannot even be written as UTF-8.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _svg(width: float, height: float, body: list[str], label: str, css_class: str) -> Markup:
    svg = (f'<svg class="chart {css_class}" role="img" aria-label="{escape(label)}" '
           f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
           f'xmlns="http://www.w3.org/2000/svg" {FONT}>' + "".join(body) + "</svg>")
    return Markup(NOT_XML.sub("\ufffd", svg))


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
    ticks = []
    for k in range(first, last + 1, step):
        try:
            ticks.append(float(base) ** k)
        except OverflowError:  # 2^1024 or 10^309: past the largest float, so past any axis
            break
    return ticks


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


# Where a value goes on a log axis (_place): on it, or past its far edge; any other answer says why
# it has no place there.
ON, BEYOND = "on", "beyond"


def _place(value: float | None, limit: float = math.inf) -> str:
    if value is None:
        return "with no value"
    if math.isnan(value):
        return "NaN"
    if value == math.inf or value > limit:
        return BEYOND
    if value <= 0:
        return "≤ 0"
    return ON


def _left_out(*places: str) -> str | None:
    """Why a point is left out: the first place of its coordinates that is neither ON nor BEYOND."""
    return next((place for place in places if place not in (ON, BEYOND)), None)


def _padded(values: list[float]) -> tuple[float, float]:
    """The range of the values on an axis, 1.6 times wider each way as far as a float goes (1.6 x
    1e308 overflows; 5e-324 / 1.6 rounds back to 5e-324); 0.1 to 10 when every point is past it."""
    if not values:
        return 0.1, 10.0
    lo, hi = min(values), max(values)
    return lo / 1.6, min(hi * 1.6, sys.float_info.max)


def _notes(beyond: int, left_out: Counter[str], limit: float = math.inf) -> list[str]:
    """The lines under a chart that count the points it could not draw where they are."""
    notes = []
    if beyond:
        past = "infinite" if limit == math.inf else f"infinite or over {number(limit)}"
        notes.append(f"▲ ▶ {beyond} beyond the axis ({past}): drawn at its edge")
    if left_out:
        notes.append("left out (no place on a log axis): "
                     + ", ".join(f"{count} {why}" for why, count in sorted(left_out.items())))
    return notes


def _with_notes(body: list[str], notes: list[str], width: float, height: float, label: str,
                css_class: str) -> Markup:
    """The chart with its notes under it, widened to hold them (11 px text: about 6 px a character)."""
    for i, note in enumerate(notes):
        body.append(_text(4, height + 10 + 14 * i, note, extra='class="note"'))
    width = max([width, *(8 + 6 * len(note) for note in notes)])
    return _svg(width, height + 14 * len(notes), body, label, css_class)


def _nothing_drawn(title: str, notes: list[str], css_class: str) -> Markup:
    """A chart with no point to draw: its title and the notes that say why, or nothing at all."""
    if not notes:
        return Markup("")
    return _with_notes([_text(4, 13, title, extra='font-weight="bold"')], notes, 8 + 6 * len(title), 20,
                       title, css_class)


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


def _beyond(axes: Axes, x: float | None, y: float | None, fill: str, key: int | None, title: str,
            stroke: str | None = None) -> str:
    """A point past an axis (x or y None: past that axis) at the axis's far edge: a triangle inside
    the frame whose tip touches the edge, pointing out of the chart (up past the top, right past the
    right-hand edge), clear of the title above."""
    data = f' data-k="{key}"' if key is not None else ""
    if stroke:
        data += f' stroke="{stroke}" stroke-width="1.5"'
    px = axes.x(x) if x is not None else axes.left + axes.width
    py = axes.y(y) if y is not None else axes.top
    shape = f"M{px:.1f} {py:.1f}l5 9h-10z" if y is None else f"M{px:.1f} {py:.1f}l-9 5v-10z"
    return (f'<path class="point beyond"{data} d="{shape}" fill="{fill}">'
            f"<title>{escape(title)}; beyond the axis, drawn at its edge</title></path>")


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str,
               point_title=None, y_limit: float = math.inf) -> Markup:
    """Log-log lines with markers (point_title(series, x, y) is each marker's hover text);
    dashed series draw as lines only. A line joins a series' points on both axes; a point past an
    axis (infinite, or y over y_limit) is drawn at its edge pointing out, a point with no place on
    a log axis (no value, NaN, <= 0) is left out, and the note under the chart counts both. Empty
    series draw nothing."""
    drawn: list[tuple[Series, float, float, int | None, str, str]] = []
    left_out: Counter[str] = Counter()
    for s in series:
        for i, (x, y) in enumerate(s.points):
            x, y = real(x), real(y)
            places = _place(x), _place(y, y_limit)
            if why := _left_out(*places):
                left_out[why] += 1
            else:
                drawn.append((s, x, y, s.keys[i] if i < len(s.keys) else None, *places))
    notes = _notes(sum(BEYOND in (px, py) for *_, px, py in drawn), left_out, y_limit)
    if not drawn:
        return _nothing_drawn(title, notes, "lines")
    axes = Axes(_padded([x for _, x, _, _, px, _ in drawn if px == ON]),
                _padded([y for _, _, y, _, _, py in drawn if py == ON]))
    body = _frame(axes, title, x_label, y_label, 2, size_label)
    for s in series:
        mine = sorted((point for point in drawn if point[0] is s), key=lambda point: point[1])
        on = [(x, y) for _, x, y, _, px, py in mine if px == py == ON]
        dash = ' stroke-dasharray="5 3" stroke-width="1.2"' if s.dashed else ' stroke-width="1.8"'
        if on:
            path = " ".join(f"{'M' if i == 0 else 'L'}{axes.x(x):.1f} {axes.y(y):.1f}"
                            for i, (x, y) in enumerate(on))
            body.append(f'<path class="line" d="{path}" fill="none" stroke="{s.colour}"{dash}>'
                        f"<title>{escape(s.name)}</title></path>")
        for _, x, y, key, px, py in mine:
            text = point_title(s, x, y) if point_title else f"{s.name}: {number(y)}"
            if BEYOND in (px, py):  # a dashed line's too: a limit past the axis is marked, not lost
                body.append(_beyond(axes, x if px == ON else None, y if py == ON else None, s.colour,
                                    key, text))
            elif not s.dashed:
                body.append(_marker(s.marker, axes.x(x), axes.y(y), s.colour, key, text))
    return _with_notes(body, notes, axes.left + axes.width + 12, axes.top + axes.height + 34, title, "lines")


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


def scatter(points: Sequence[Point], title: str, x_label: str, y_label: str,
            y_limit: float = math.inf) -> Markup:
    """A log-log scatter plot with a marker per point. A point past an axis (infinite, or y over
    y_limit) is drawn at that axis's edge pointing out, a point with no place on a log axis (no
    value, NaN, <= 0) is left out, and the note under the chart counts both."""
    drawn: list[tuple[Point, float, float, str, str]] = []
    left_out: Counter[str] = Counter()
    for p in points:
        x, y = real(p.x), real(p.y)
        places = _place(x), _place(y, y_limit)
        if why := _left_out(*places):
            left_out[why] += 1
        else:
            drawn.append((p, x, y, *places))
    notes = _notes(sum(BEYOND in (px, py) for *_, px, py in drawn), left_out, y_limit)
    if not drawn:
        return _nothing_drawn(title, notes, "scatter")
    axes = Axes(_padded([x for _, x, _, px, _ in drawn if px == ON]),
                _padded([y for _, _, y, _, py in drawn if py == ON]), left=76, width=520, height=300)
    body = _frame(axes, title, x_label, y_label, 10)
    for p, x, y, px, py in drawn:
        fill, stroke = ("#ffffff", p.colour) if p.hollow else (p.colour, None)
        if BEYOND in (px, py):
            body.append(_beyond(axes, x if px == ON else None, y if py == ON else None, fill, p.key,
                                p.title, stroke))
        else:
            body.append(_marker(p.marker, axes.x(x), axes.y(y), fill, p.key, p.title, stroke))
    return _with_notes(body, notes, axes.left + axes.width + 12, axes.top + axes.height + 34, title,
                       "scatter")


def histogram(counts: Sequence[int], labels: Sequence[str], colours: Sequence[str], label: str,
              bar_titles: Sequence[str], note: str = "") -> Markup:
    """Bars of counts on a log scale (log10(1 + count)), one per label (an empty label draws
    no tick text), with hover text; every histogram of a report has the same bins, so they
    line up in a grid. What is no count (None, NaN, negative, infinite) draws no bar, and the
    note under the chart (after the caller's note) counts those bins."""
    width, height, top, left = 9 * len(labels), 60, 8, 38
    valid = [c if c is not None and 0 <= c < math.inf else None for c in map(real, counts)]
    peak_count = max((c for c in valid if c is not None), default=0)
    peak = math.log10(1 + peak_count) or 1
    body = [f'<line x1="{left}" x2="{left + width}" y1="{top + height}" y2="{top + height}" stroke="#999"/>',
            _text(left - 3, top + 8, size_label(peak_count), "end")]
    for i, (count, text, fill) in enumerate(zip(valid, bar_titles, colours, strict=False)):
        if count is None:
            continue
        bar = math.log10(1 + count) / peak * height
        body.append(f'<rect class="bar" x="{left + i * 9 + 1}" y="{top + height - bar:.1f}" width="7" '
                    f'height="{bar:.1f}" fill="{fill}"><title>{escape(text)}</title></rect>')
    for i, text in enumerate(labels):
        if text:
            body.append(_text(left + i * 9 + 4.5, top + height + 12, text, "middle"))
    none = valid.count(None)
    notes = [note] if note else []
    notes += [f"{none} bin{'s' if none > 1 else ''} left out: not a count"] if none else []
    return _with_notes(body, notes, left + width + 14, top + height + 16, label, "histogram")


# The error-by-gap chart (reports/patterns.py): a linear axis of binades (k: 2^k <= |v| < 2^(k+1)),
# a log axis of ULP errors.
SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
# Binades past these are no binade of any float format (float64's run from -1074 to 1023).
BINADE_LIMIT = 1100
# An error this small or smaller (0: exact) is drawn on the bottom edge: a log axis has no 0.
ULP_FLOOR = 2.0**-6
OVER_FILL = "#fde2e1"


def power_of_two(k: int) -> str:
    """2^k as text: 2¹¹, 2⁻²⁴."""
    return "2" + str(k).translate(SUPERSCRIPT)


def binade_range(binade: int | None, quantity: str = "gap") -> str:
    """What a binade holds: '2¹¹ ≤ gap < 2¹²'; None is the value 0."""
    if binade is None:
        return f"{quantity} = 0"
    return f"{power_of_two(binade)} ≤ {quantity} < {power_of_two(binade + 1)}"


def is_binade(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and -BINADE_LIMIT <= value <= BINADE_LIMIT)


@dataclass(frozen=True)
class Bin:
    """One binade of one line: its largest ULP error (None: nothing measured), its largest error
    for its budget (over 1: over budget), its count of semantic differences, and a line of hover
    text. binade None is the value 0; anything else that is not an integer binade is left out."""

    binade: object
    ulp: object
    ratio: object = None
    semantic: object = 0
    title: str = ""


@dataclass(frozen=True)
class BinLine:
    name: str
    colour: str
    bins: Sequence[Bin]


def _ticks_of_binades(lo: int, hi: int, most: int = 6) -> list[int]:
    span = hi - lo
    steps = (1, 2, 4, 5, 8, 10, 16, 20, 25, 50, 100, 200, 250, 500)
    step = next((s for s in steps if span / s <= most), 1000)
    return [k for k in range(lo, hi + 1) if k % step == 0] or [lo]


def binade_chart(lines: Sequence[BinLine], title: str, quantity: str = "gap",
                 y_limit: float = 2.0**64) -> Markup:
    """Largest ULP error (log scale) against binade (linear), one line per BinLine joining
    neighbouring binades. A bin over its budget (ratio > 1) is a ringed dot and its column is
    shaded; a bin with semantic differences a ▼ in the line's colour in the band above the frame;
    the value 0 (binade None) its own column at the left. An error past the axis (infinite, or over
    y_limit) is a triangle on the top edge, counted under the chart; an error of 0 up to ULP_FLOOR
    sits on the bottom edge (its hover text keeps the value); one with no place (NaN, negative, not
    a number) is left out, counted under the chart. Where lines lie on each other the first ones
    are drawn widest, so each shows as a stripe. Each column's hover text lists every line's bin there."""
    bins: list[tuple[int, BinLine, Bin, float | None, str, bool, int]] = []
    left_out: Counter[str] = Counter()
    for index, line in enumerate(lines):
        for b in line.bins:
            if not is_binade(b.binade):
                left_out["not a binade"] += 1
                continue
            ulp = real(b.ulp) if not isinstance(b.ulp, str) else _text_number(b.ulp)
            ratio = real(b.ratio) if not isinstance(b.ratio, str) else _text_number(b.ratio)
            semantic = real(b.semantic)
            semantic = int(semantic) if semantic is not None and 0 < semantic < math.inf else 0
            if ulp is None:
                place = "with no value"
            elif math.isnan(ulp):
                place = "NaN"
                left_out["NaN"] += 1
            elif ulp < 0:
                place = "negative"
                left_out["negative"] += 1
            elif ulp == math.inf or ulp > y_limit:
                place = BEYOND
            else:
                place = ON
            over = ratio is not None and not math.isnan(ratio) and ratio > 1
            bins.append((index, line, b, ulp, place, over, semantic))
    binades = sorted({b.binade for _, _, b, *_ in bins if b.binade is not None})
    has_zero = any(b.binade is None for _, _, b, *_ in bins)
    if not binades and not has_zero:
        return _nothing_drawn(title, _notes(0, left_out), "binades")
    lo, hi = (binades[0], binades[-1]) if binades else (0, 0)
    columns: list[int | None] = ([None] if has_zero else []) + list(range(lo, hi + 1))
    if has_zero and binades:
        columns.insert(1, "gap")  # type: ignore[arg-type]  # a blank column between 0 and the binades
    semantic_lines = sorted({index for index, *_, semantic in bins if semantic})
    band = 6 * len(semantic_lines) + (4 if semantic_lines else 0)
    left, top, width, height = 52, 22 + band, 250, 130
    cw = width / len(columns)

    def cx(binade: int | None) -> float:
        return left + (columns.index(binade) + 0.5) * cw

    values = [max(ulp, ULP_FLOOR) for *_, ulp, place, _, _ in bins if place == ON]
    y_lo = min([*values, 0.5]) / 1.6
    y_hi = min(max([*values, 0.5]) * 1.6, sys.float_info.max)
    axes = Axes((1.0, 10.0), (y_lo, y_hi), left=left, top=top, width=width, height=height)
    body = [_text(left + width / 2, 13, title, "middle", 'font-weight="bold"')]
    # Shade the columns where any line is over its budget, under everything else.
    for binade in sorted({b.binade for _, _, b, _, _, over, _ in bins if over}, key=columns.index):
        body.append(f'<rect class="over-budget" x="{cx(binade) - cw / 2:.1f}" y="{top}" width="{cw:.1f}" '
                    f'height="{height}" fill="{OVER_FILL}"/>')
    body.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#bbb"/>')
    for tick in _log_ticks(y_lo, y_hi, 10):
        if y_lo <= tick <= y_hi:
            y = axes.y(tick)
            body.append(f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            body.append(_text(left - 4, y + 4, _power_of_ten(tick), "end"))
    half = axes.y(0.5)
    body.append(f'<line class="rounded" x1="{left}" x2="{left + width}" y1="{half:.1f}" y2="{half:.1f}" '
                'stroke="#1a9850" stroke-dasharray="4 3"><title>0.5 ULP: correctly rounded</title></line>')
    for k in _ticks_of_binades(lo, hi) if binades else []:
        if has_zero and cx(k) - cx(None) < 22:
            continue  # too near the 0 column's label
        body.append(f'<line x1="{cx(k):.1f}" x2="{cx(k):.1f}" y1="{top + height}" y2="{top + height + 3}" '
                    'stroke="#999"/>')
        body.append(_text(cx(k), top + height + 14, power_of_two(k), "middle"))
    if has_zero:
        body.append(_text(cx(None), top + height + 14, "0", "middle"))
    label = f"binade of {'the ' * (quantity == 'gap')}{quantity} (2ᵏ ≤ {quantity} < 2ᵏ⁺¹)"
    body.append(_text(left + width / 2, top + height + 28, label, "middle"))
    cy = top + height / 2
    body.append(_text(12, cy, "max ULP error", "middle", f'transform="rotate(-90 12 {cy:.1f})"'))
    # One hover column per binade with anything in it: every line's numbers there.
    for binade in sorted({b.binade for _, _, b, *_ in bins}, key=columns.index):
        here = [f"{line.name}: {b.title}" if b.title else line.name
                for _, line, b, *_ in bins if b.binade == binade]
        text = "\n".join([binade_range(binade, quantity), *here])
        body.append(f'<rect class="bin" x="{cx(binade) - cw / 2:.1f}" y="{top - band}" width="{cw:.1f}" '
                    f'height="{height + band}" fill="#000" fill-opacity="0">'
                    f"<title>{escape(text)}</title></rect>")

    def y_of(ulp: float) -> float:
        return axes.y(min(max(ulp, ULP_FLOOR), y_hi) if ulp >= y_lo else y_lo)

    for index, line in enumerate(lines):
        mine = sorted((item for item in bins if item[0] == index and item[2].binade is not None
                       and item[4] == ON), key=lambda item: item[2].binade)
        path, previous = [], None
        for _, _, b, ulp, *_ in mine:
            jump = "L" if previous is not None and b.binade == previous + 1 else "M"
            path.append(f"{jump}{cx(b.binade):.1f} {y_of(ulp):.1f}")
            previous = b.binade
        if path:
            # The first lines widest: where lines lie on each other, each shows as a stripe.
            stroke = 1.4 + 2.4 * (len(lines) - 1 - index) / max(len(lines) - 1, 1)
            body.append(f'<path class="line" d="{" ".join(path)}" fill="none" stroke="{line.colour}" '
                        f'stroke-width="{stroke:.1f}" stroke-linejoin="round" pointer-events="none"/>')
        drawn = {item[2].binade for item in mine}
        alone = {k for k in drawn if k - 1 not in drawn and k + 1 not in drawn}
        for _, _, b, ulp, place, over, semantic in (item for item in bins if item[0] == index):
            where = binade_range(b.binade, quantity)
            text = f"{line.name}, {where}: {b.title}" if b.title else f"{line.name}, {where}"
            if place == BEYOND:
                body.append(f'<path class="point beyond" d="M{cx(b.binade):.1f} {top:.1f}l5 9h-10z" '
                            f'fill="{line.colour}"><title>{escape(text)}; beyond the axis, drawn at its '
                            "edge</title></path>")
            elif place == ON and (over or b.binade is None or b.binade in alone):
                ring = ' stroke="#000" stroke-width="1.5" class="point over"' if over else ' class="point"'
                body.append(f'<circle{ring} cx="{cx(b.binade):.1f}" cy="{y_of(ulp):.1f}" '
                            f'r="{4 if over else 3}" fill="{line.colour}">'
                            f"<title>{escape(text)}</title></circle>")
            if semantic:
                y = 24 + 6 * semantic_lines.index(index)
                body.append(f'<path class="semantic" d="M{cx(b.binade) - 3.5:.1f} {y:.1f}h7l-3.5 5z" '
                            f'fill="{line.colour}" stroke="#333" stroke-width="0.5"><title>{escape(text)}: '
                            f"{semantic} semantic difference{'s' if semantic != 1 else ''}</title></path>")
    notes = _notes(sum(1 for *_, place, _, _ in bins if place == BEYOND), left_out, y_limit)
    return _with_notes(body, notes, left + width + 12, top + height + 34, title, "binades")


def _power_of_ten(value: float) -> str:
    """A log axis's tick: 0.01 to 1000 as written, beyond as 10⁵, 10⁻⁶."""
    if 1e-2 <= value <= 1e3:
        return f"{value:g}"
    return "10" + str(round(math.log10(value))).translate(SUPERSCRIPT)


def _text_number(text: str) -> float | None:
    """A record's non-finite number written as text ("nan", "inf", "-inf"); None for other text."""
    return float(text) if text in ("nan", "inf", "-inf") else None
