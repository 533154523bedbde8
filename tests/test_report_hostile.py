"""The report survives any numbers (reports.charts, reports.html): infinite, NaN, 1e308, negative,
zero and missing metrics, empty lists, odd statuses, throughput results without their fields, and
names in any script. A chart draws what lies on its log axes, draws what lies past an axis at its
edge as a triangle pointing out, and counts under itself what has no place there; the whole report
is built, rendered and written, each of its SVGs is XML, and no coordinate is NaN or infinite."""

from __future__ import annotations

import json
import math
import re
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from softmax_suite.records import STATUSES
from softmax_suite.reports import charts, html
from softmax_suite.reports.packing import unpack
from softmax_suite.reports.semantics import DTYPES, OPS
from softmax_suite.runner.reproduce import snippet
from tests.test_report import HEADER, HOSTILE, accuracy, cli, throughput, write_results

# The attributes that hold coordinates and sizes: not one may say nan or inf.
GEOMETRY = ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "width", "height", "d", "transform", "viewBox")
SVG = re.compile(r"<svg\b.*?</svg>", re.S)
NOTE = re.compile(r'class="note">(.*?)</text>')


def well_formed(markup: object) -> list[ElementTree.Element]:
    """Every SVG in markup, parsed as XML; each coordinate checked to be a finite number."""
    roots = []
    for svg in SVG.findall(str(markup)):
        root = ElementTree.fromstring(svg)
        for element in root.iter():
            for name in GEOMETRY:
                value = element.get(name, "")
                assert not re.search("nan|inf", value, re.IGNORECASE), (element.tag, name, value)
        roots.append(root)
    return roots


def left_out(svg: str) -> int:
    """How many points the note under a chart says it left out."""
    notes = [note for note in NOTE.findall(svg) if note.startswith("left out")]
    return sum(int(n) for note in notes for n in re.findall(r"(\d+) (?:NaN|with no value|≤ 0)", note))


# A measured value as a chart gets it: any float (NaN, infinities, 1e308, subnormals, -0.0), none,
# or a Python int past any float (JSON reads one).
REAL = st.one_of(st.none(), st.floats(), st.sampled_from([1.7e308, 5e-324, -0.0]),
                 st.integers(min_value=-(10**400), max_value=10**400))
# A number as a results file holds it: that, or text (non-finite floats are written "nan", "inf", "-inf").
NUMBER = st.one_of(REAL, st.sampled_from(["nan", "inf", "-inf", "", "12"]))
NAME = st.one_of(st.text(max_size=8),
                 st.sampled_from([HOSTILE, "\x00\x1b\x7f", "\ud800", "名前 ÿ", "\u202eevil", "a/b"]))
STATUS = st.sampled_from([*STATUSES, "odd"])
HISTOGRAM = st.one_of(st.lists(st.integers(min_value=0, max_value=10**6), max_size=30),
                      st.lists(NUMBER, max_size=4), st.just("not a list"))


def placed(x: object, y: object) -> bool:
    """Whether a point has a place on both log axes, on them or past their far edge."""
    return all((v := charts.real(value)) is not None and v > 0 for value in (x, y))


def beyond(x: object, y: object, y_limit: float = math.inf) -> bool:
    return placed(x, y) and (charts.real(x) == math.inf or charts.real(y) > y_limit
                             or charts.real(y) == math.inf)


def test_an_error_of_1e308_or_inf_ulp_is_drawn_at_the_top_edge_of_the_trade_off() -> None:
    # The measured defect: a non-zero where the exact value is 0 scores 1.8e308 ULP or inf (written
    # "inf" in a results file) and the accuracy-against-speed chart raised OverflowError. Both now
    # sit at the top edge as triangles titled with their value; 3 ULP stays a point on the axis.
    results = [accuracy(backend="numpy", max_ulp=1.7e308), accuracy(backend="scipy", max_ulp="inf"),
               accuracy(backend="torch", max_ulp=3.0)]
    speed = [throughput(name, 4096, 2.0, 20.0) for name in ("numpy", "scipy", "torch")]
    svg = str(html.trade_off(results, speed, html.Details())["svg"])
    well_formed(svg)
    assert svg.count('class="point beyond"') == 2 and svg.count('class="point"') == 1
    assert "max 1.70e+308 ULP; beyond the axis, drawn at its edge" in svg
    assert "max inf ULP; beyond the axis, drawn at its edge" in svg
    # The axis ends at html.ULP_AXIS_LIMIT, 2^64 = 1.84e19 ULP.
    assert NOTE.findall(svg) == ["▲ ▶ 2 beyond the axis (infinite or over 1.84e+19): drawn at its edge"]


def test_softmax_suite_report_writes_a_report_of_infinite_errors_and_timings(tmp_path: Path) -> None:
    # The same file left no report at all before: `report` died in the trade-off chart.
    results = write_results(tmp_path / "results.jsonl", [
        accuracy(max_ulp=1.7e308), accuracy(backend="scipy", max_ulp="inf", status="fail"),
        accuracy(backend="torch", max_ulp="nan"),
        {**throughput("numpy", 4096, 2.0, 20.0), "gb_per_s": "inf", "roofline_fraction": "inf"},
        throughput("scipy", 4096, 2.0, 20.0)])
    done = cli("report", str(results), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    well_formed(text)
    # At their edges: numpy's inf GB/s on the throughput chart; on the trade-off numpy (inf of the
    # copy, 1.7e308 ULP) and scipy (0.1 of the copy, inf ULP). torch's NaN is no error: no point.
    assert text.count('class="point beyond"') == 3


def test_points_with_no_place_on_a_log_axis_are_counted_under_the_chart() -> None:
    points = [(4096, math.nan), (8192, -1.0), (None, 1.0), (16384, 2.0), (32768, 4.0), (65536, math.inf)]
    svg = str(charts.line_chart([charts.Series("numpy rows", points, "#0072B2", keys=range(6))],
                                "softmax float32", "elements", "GB/s"))
    well_formed(svg)
    # 16K and 32K are on both axes, joined by one segment; inf GB/s at 64K is drawn at the top edge
    # and keeps its details (data-k 5); NaN, -1 and the missing size have no place on a log axis.
    assert svg.count('class="point"') == 2 and svg.count('class="point beyond"') == 1
    assert 'class="point beyond" data-k="5"' in svg
    assert re.search(r'class="line" d="M[\d.]+ [\d.]+ L[\d.]+ [\d.]+"', svg)
    assert NOTE.findall(svg) == ["▲ ▶ 1 beyond the axis (infinite): drawn at its edge",
                                 "left out (no place on a log axis): 1 NaN, 1 with no value, 1 ≤ 0"]


def test_a_chart_with_nothing_to_draw_says_why() -> None:
    points = [charts.Point(math.nan, 1.0, "#000", "circle", "a"),
              charts.Point(0.5, 0.0, "#000", "circle", "b")]
    svg = str(charts.scatter(points, "accuracy against speed", "x", "y"))
    well_formed(svg)
    assert "accuracy against speed" in svg and 'class="point' not in svg
    assert NOTE.findall(svg) == ["left out (no place on a log axis): 1 NaN, 1 ≤ 0"]
    assert charts.scatter([], "t", "x", "y") == "" and charts.line_chart([], "t", "x", "y") == ""


def test_the_largest_and_smallest_floats_keep_every_coordinate_finite() -> None:
    # 1.7e308 x 1.6 overflows and 5e-324 / 1.6 rounds back to 5e-324: the axes end at the largest
    # float, and their ticks stop before 10^309, which is no float.
    points = [charts.Point(5e-324, 1.7e308, "#000", "circle", "a"),
              charts.Point(1.0, 5e-324, "#000", "square", "b")]
    svg = str(charts.scatter(points, "t", "x", "y"))
    well_formed(svg)
    assert svg.count('class="point"') == 2 and 'class="note"' not in svg


def test_a_histogram_draws_no_bar_for_what_is_not_a_count() -> None:
    counts = [5, -2, math.nan, None, math.inf, 0]
    svg = str(charts.histogram(counts, [""] * 6, ["#000"] * 6, "h", ["t"] * 6))
    well_formed(svg)
    # 5 and 0 are counts (0 a bar of height 0); -2, NaN, None and inf are not.
    assert svg.count('class="bar"') == 2 and NOTE.findall(svg) == ["4 bins left out: not a count"]


def test_distributions_add_up_only_histograms_of_counts() -> None:
    results = [accuracy(histogram=[3, 1]), accuracy(case="nan", histogram=[1, -2]),
               accuracy(case="x", histogram=[0.5]), accuracy(case="long", histogram=[1] * 40),
               accuracy(dtype="float16", histogram=[0, 0])]
    (forward,) = html.distributions(results)
    cells = dict(zip(forward["dtypes"], forward["rows"][0]["cells"], strict=True))
    float32, float16 = cells["float32"], cells["float16"]
    # 3 + 1 elements from the one histogram of counts; a negative count, a fraction and 40 bins
    # (there are 23) are no histogram of this report's bins.
    assert float32["elements"] == 4 and float32["rounded"] == 0.75
    assert NOTE.findall(str(float32["svg"])) == ["3 result(s) left out: a histogram not of counts"]
    # Histograms of no element: no share to divide, and none rounded to say.
    assert float16["elements"] == 0 and float16["rounded"] is None


def test_a_max_ulp_written_as_text_or_out_of_range_colours_its_cell() -> None:
    # "inf" as a results file writes it is the darkest red, as is an integer past any float; NaN,
    # a negative, text and no metric are no measured error: the colour of nothing measured, never
    # the green of a correctly rounded answer.
    values = {"inf": "inf", "big": 10**400, "nan": "nan", "negative": -3.0, "text": "x", "none": None}
    results = [accuracy(case=case, max_ulp=value) for case, value in values.items()]
    (softmax,) = html.heatmaps(results, html.Details(), {})
    fills = [cell.get("fill") for root in well_formed(softmax["svg"]) for cell in root.iter()
             if "cell" in (cell.get("class") or "")]
    assert fills == [charts.ULP_STOPS[-1][1]] * 2 + [charts.NO_VALUE] * 4


def test_labels_of_any_number() -> None:
    assert charts.number(10**400) == "inf" and charts.number(-(10**400)) == "-inf"
    assert charts.number(math.nan) == "nan" and charts.number(None) == "-" and charts.number("x") == "-"
    assert charts.size_label(math.inf) == "inf" and charts.size_label(2**20) == "1M"
    assert charts.size_label(1e15) == "1.00e+15"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(REAL, REAL), max_size=8), st.lists(st.tuples(REAL, REAL), max_size=4),
       st.booleans(), NAME)
def test_a_line_chart_draws_or_counts_every_point(solid, other, dashed, name) -> None:
    series = [charts.Series(name, solid, "#000000", keys=range(len(solid))),
              charts.Series("b", other, "#E69F00", dashed=dashed)]
    svg = str(charts.line_chart(series, name, "elements", "GB/s"))
    well_formed(svg)
    points = [*solid, *other]
    assert svg.count('class="point beyond"') == sum(beyond(x, y) for x, y in points)
    assert left_out(svg) == sum(not placed(x, y) for x, y in points)
    markers = [*solid, *([] if dashed else other)]
    assert svg.count('class="point"') == sum(placed(x, y) and not beyond(x, y) for x, y in markers)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(REAL, REAL, st.booleans()), max_size=10),
       st.sampled_from([math.inf, html.ULP_AXIS_LIMIT, 1.0]), NAME)
def test_a_scatter_draws_or_counts_every_point(points, y_limit, name) -> None:
    svg = str(charts.scatter([charts.Point(x, y, "#000000", "diamond", name, hollow=hollow)
                              for x, y, hollow in points], name, "x", "y", y_limit))
    well_formed(svg)
    assert svg.count('class="point beyond"') == sum(beyond(x, y, y_limit) for x, y, _ in points)
    assert svg.count('class="point"') == sum(placed(x, y) and not beyond(x, y, y_limit) for x, y, _ in points)
    assert left_out(svg) == sum(not placed(x, y) for x, y, _ in points)


@settings(max_examples=100, deadline=None)
@given(st.lists(REAL, max_size=30), NAME)
def test_a_histogram_draws_any_counts(counts, name) -> None:
    n = len(counts)
    svg = str(charts.histogram(counts, [name] * n, ["#000000"] * n, name, [name] * n))
    well_formed(svg)
    counted = [c for c in map(charts.real, counts) if c is not None and 0 <= c < math.inf]
    assert svg.count('class="bar"') == len(counted)


@settings(max_examples=100, deadline=None)
# A cell's error is a float or None, as html._ulp reads it from any record.
@given(st.lists(st.tuples(NAME, NAME, st.one_of(st.none(), st.floats()), STATUS), max_size=12),
       st.lists(NAME, max_size=3))
def test_a_heatmap_draws_any_cells(cells, columns) -> None:
    rows = list(dict.fromkeys(row for row, *_ in cells))
    panel = charts.Panel("float32", [*columns, *(column for _, column, *_ in cells)],
                         {(row, column): charts.Cell(ulp, status, f"{row} {ulp}", 0)
                          for row, column, ulp, status in cells})
    (root,) = well_formed(charts.heatmap(rows, [panel], "max ULP error"))
    assert root.get("class") == "chart heatmap"


@st.composite
def accuracy_results(draw) -> dict:
    metrics = draw(st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "max_ulp": NUMBER, "p50_ulp": NUMBER, "p99_ulp": NUMBER, "ulp_histogram": HISTOGRAM})))
    record = accuracy(backend=draw(NAME), dtype=draw(st.sampled_from([*DTYPES, "any"])),
                      op=draw(st.sampled_from(OPS)), case=draw(NAME), status=draw(STATUS),
                      digest=draw(st.sampled_from(["a", "b", ""])), message=draw(NAME))
    return {**record, "metrics": metrics}


@st.composite
def throughput_results(draw) -> dict:
    record = {**throughput(draw(NAME), 4096, 1.0, 10.0), "dtype": draw(st.sampled_from(DTYPES)),
              "status": draw(STATUS)}
    record.update(draw(st.fixed_dictionaries({}, optional={
        "elements": NUMBER, "gb_per_s": NUMBER, "roofline_fraction": NUMBER,
        "shape": st.sampled_from([[], [0], ["x"], [4096, 128], [1, 10**400]]),
        "copy": st.one_of(st.just({}), st.fixed_dictionaries({"gb_per_s": NUMBER}))})))
    for field in draw(st.sets(st.sampled_from(["elements", "gb_per_s", "roofline_fraction", "shape", "copy",
                                               "timing", "nodeid"]))):
        del record[field]
    return record


@settings(max_examples=60, deadline=None)
@given(st.lists(accuracy_results(), max_size=6), st.lists(throughput_results(), max_size=6))
def test_any_results_make_a_report(measured, timed) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = html.write_report([HEADER], [*measured, *timed], Path(folder) / "report.html",
                                 reproducer=snippet)
        text = path.read_text(encoding="utf-8")
    well_formed(text)
    assert text.rstrip().endswith("</html>")
    # The parts drawn on demand unpack: their charts well formed too, and the details table (one
    # entry per result explained) a list.
    packed = re.search(r'<script type="application/json" id="packed">(.*?)</script>', text, re.S)
    packs = json.loads(packed[1])
    parts = unpack(packs["parts"])
    for markup in parts["markup"].values():
        well_formed(markup)
    assert isinstance(parts["details"]["entries"], list)
