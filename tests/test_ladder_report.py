"""The report's length ladder (reports/ladder.py: the safe-length table) and every-bit-pattern
(reports/patterns.py: the error-by-gap plot) sections, from made-up results carrying the `ladder`
and `pattern` fields; tests/test_report_browser.py opens them in Chromium."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest

from softmax_suite.records import json_schema
from softmax_suite.reports import charts, html, ladder, patterns
from softmax_suite.runner.reproduce import snippet
from tests.test_report import HEADER, accuracy, parse

LENGTHS = (256, 257, 2048, 2049, 4096, 8192, 65504, 65519, 65520, 65536, 2**17, 2**20)
ROWS = ("uniform", "near_uniform", "random")
OPS = ("softmax", "log_softmax", "logsumexp", "softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")
SEMANTIC_MESSAGE = ("semantic difference: 1 x inf_vs_finite, e.g. at index [0] got -inf, the policy "
                    "expects 11.090354888959125")
NNBSP = "\u202f"


def rung(length: int, rows: str = "uniform", status: str = "pass", backend: str = "torch",
         dtype: str = "float16", op: str = "logsumexp", **extra) -> dict:
    """A ladder result: status pass, or a failure of the kind extra says (semantic by default)."""
    record = accuracy(backend=backend, dtype=dtype, op=op, case=f"ladder_{rows}_n{length}", status=status,
                      max_ulp=0.4, ladder={"length": length, "rows": rows}, **extra)
    if status in ("fail", "known_failure") and "failure" not in extra:
        record.update(failure="semantic", semantic={"inf_vs_finite": 1}, message=SEMANTIC_MESSAGE)
    if status == "known_failure":
        record.setdefault("known_deviation", {"reason": "float16 sum overflows"})
        record["message"] = f"known deviation: float16 sum overflows [{record['message']}]"
    return record


def too_far(length: int, rows: str = "random", ulp: float = 12.0, budget: float = 4.6, **extra) -> dict:
    return rung(length, rows, "fail", failure="accuracy", bound={"budget_ulp": budget, "ratio": ulp / budget},
                message=f"{ulp} ULP at index [3] exceeds its budget of {budget} ULP", **extra,
                metrics={"max_ulp": ulp, "worst": {"ulp": ulp, "index": [3]}})


def ladder_of(statuses: dict[int, str]) -> list[dict]:
    """Every rung of LENGTHS that statuses names, its uniform row with that status, the other two passing."""
    return [record for length, status in statuses.items()
            for record in (rung(length, "uniform", status), rung(length, "near_uniform"),
                           rung(length, "random"))]


def passing(*lengths: int) -> dict[int, str]:
    return dict.fromkeys(lengths, "pass")


# The safe-length rule.

def test_monotone_safe_up_to_and_fails_at() -> None:
    found = ladder.safety(ladder_of({**passing(*LENGTHS[:8]), 65520: "fail", 65536: "fail", 2**17: "fail"}))
    assert (found.safe_up_to, found.fails_at, found.right_again, found.longest) == (65519, 65520, [], 2**17)
    assert found.state == "fail"
    assert found.verdict() == (f"safe up to 65{NNBSP}519, fails at 65{NNBSP}520 (uniform: -inf where 11.09)")


def test_every_rung_passes_is_safe_to_the_longest_tried() -> None:
    found = ladder.safety(ladder_of(passing(*LENGTHS)))
    assert (found.safe_up_to, found.fails_at, found.state) == (2**20, None, "pass")
    assert found.verdict() == f"safe to the longest tried (1{NNBSP}048{NNBSP}576)"


def test_the_first_rung_failing_leaves_nothing_safe() -> None:
    found = ladder.safety([too_far(256), *ladder_of(passing(*LENGTHS[1:]))])
    assert (found.safe_up_to, found.fails_at) == (None, 256)
    # ... and the rungs above it that pass make it not monotone.
    assert found.right_again == list(LENGTHS[1:])
    assert found.verdict().startswith("fails at 256 (random: 12 ULP, budget 4.6): no length tried is right; "
                                      "right again at 257, 2")
    assert found.verdict().endswith("(not monotone)")


def test_a_ladder_that_passes_again_above_a_failure() -> None:
    found = ladder.safety(ladder_of({**passing(*LENGTHS[:9]), 65536: "fail", 2**17: "pass", 2**20: "fail"}))
    assert (found.safe_up_to, found.fails_at, found.right_again) == (65520, 65536, [2**17])
    assert found.verdict().endswith(f"; right again at 131{NNBSP}072 (not monotone)")


def test_a_known_failure_is_a_wrong_rung_marked_known() -> None:
    found = ladder.safety(ladder_of({**passing(*LENGTHS[:2]), 2048: "known_failure", 2049: "pass"}))
    assert (found.safe_up_to, found.fails_at, found.state) == (257, 2048, "known")
    assert found.first_wrong.state == "known"
    assert found.verdict().startswith(f"safe up to 257, fails at 2{NNBSP}048 (a known deviation) "
                                      "(uniform: -inf where 11.09 (known))")
    # An unexpected failure anywhere makes the cell unexpected, whatever the first wrong rung was.
    assert ladder.safety([*ladder_of({256: "known_failure"}), too_far(257)]).state == "fail"


def test_unsupported_and_skipped_rungs_are_not_measured() -> None:
    records = [*ladder_of(passing(256, 257)), rung(2048, status="unsupported"), rung(2048, "random", "skip"),
               *ladder_of({2049: "fail"})]
    found = ladder.safety(records)
    assert [r.length for r in found.rungs] == [256, 257, 2049]
    assert (found.safe_up_to, found.fails_at) == (257, 2049)
    # A rung where some results are unsupported is judged by the measured ones.
    mixed = ladder.safety([rung(256), rung(256, "random", "unsupported"), rung(257, "random", "unsupported")])
    assert [r.length for r in mixed.rungs] == [256] and mixed.safe_up_to == 256
    nothing = ladder.safety([rung(256, status="unsupported")])
    assert (nothing.rungs, nothing.state, nothing.safe_up_to) == ((), "none", None)
    assert nothing.verdict() == "not measured (unsupported or skipped at every length)"


def test_an_error_is_a_wrong_rung() -> None:
    error = rung(4096, "random", "error", failure="timeout", message="softmax timed out after 600 s; ...")
    found = ladder.safety([*ladder_of(passing(256, 257, 2048, 2049)), error, *ladder_of(passing(8192))])
    assert (found.safe_up_to, found.fails_at, found.right_again) == (2049, 4096, [8192])
    assert found.first_wrong.why() == "random: error: softmax timed out after 600 s"


def test_every_row_kind_and_cotangent_must_pass() -> None:
    # The VJP's random cotangent passes at 8192, its one_hot one does not.
    one_hot = {"op": "softmax_vjp", "cotangent": "one_hot"}
    records = [rung(8192, "random", op="softmax_vjp", cotangent="random"),
               {**too_far(8192, "near_uniform", ulp=30.0, budget=8.0), **one_hot},
               {**too_far(8192, "random", ulp=9.0, budget=8.0), **one_hot},
               rung(4096, "uniform", op="softmax_vjp", cotangent="random")]
    found = ladder.safety(records)
    assert (found.safe_up_to, found.fails_at) == (4096, 8192)
    assert found.first_wrong.why() == "near_uniform: 30 ULP, budget 8; random: 9 ULP, budget 8"


def test_the_why_of_each_kind_of_wrong_result() -> None:
    assert ladder.why(rung(65520, status="fail")) == "-inf where 11.09"
    assert ladder.why(too_far(257, ulp=1.5e4, budget=6.0)) == "1.5e+04 ULP, budget 6"
    assert ladder.why({"status": "fail", "failure": "semantic", "semantic": {"nan_unexpected": 3}}) == \
        "3 x nan_unexpected"
    raised = {"status": "error", "failure": "error", "message": "softmax raised MemoryError; x"}
    assert ladder.why(raised) == "error: softmax raised MemoryError"


def test_results_without_a_usable_ladder_field_are_left_out() -> None:
    old = accuracy()  # an older file's result: no ladder field at all
    broken = [accuracy(ladder=value) for value in (None, "65520", {"length": "65520"}, {"length": True},
                                                   {"length": -1}, {"rows": "uniform"}, [65520])]
    assert ladder.groups([old, *broken]) == {}
    assert ladder.ladder([old, *broken]) == {"tables": [], "headline": [], "lengths": [], "unmeasured": [],
                                             "results": 0}


# The safe-length table.

def made_up_ladder() -> list[dict]:
    """Seven backends' ladders: numpy right everywhere; torch's float16 logsumexp wrong at 65 520
    (-inf) and its bfloat16 log_softmax at the first rung; jax's bfloat16 softmax 12 ULP off from 257;
    mlx's float16 known deviations from 2049; onnxruntime's float32 logsumexp wrong at 65 536, right at
    2^17, wrong at 2^20; scipy's float64 softmax_vjp timing out at 2^20; array_api_strict unsupported
    in float16 and bfloat16."""
    backends = ("array_api_strict", "jax", "mlx", "numpy", "onnxruntime", "scipy", "torch")
    records = []
    for backend in backends:
        for dtype in ("float16", "bfloat16", "float32", "float64"):
            for op in OPS:
                for length in LENGTHS:
                    for rows in ROWS:
                        records.append(_made_up(backend, dtype, op, length, rows))
    return records


def _made_up(backend: str, dtype: str, op: str, length: int, rows: str) -> dict:
    where = dict(backend=backend, dtype=dtype, op=op)
    if op.endswith("_vjp"):
        where["cotangent"] = "random"
    if backend == "array_api_strict" and dtype in ("float16", "bfloat16"):
        return rung(length, rows, "unsupported", **where)
    if (backend, dtype, op) == ("torch", "float16", "logsumexp") and length >= 65520 and rows == "uniform":
        return rung(length, rows, "fail", **where)
    if (backend, dtype, op) == ("torch", "bfloat16", "log_softmax") and rows == "uniform":
        return too_far(length, rows, ulp=40.0, budget=5.0, **where)
    if (backend, dtype, op) == ("jax", "bfloat16", "softmax") and length >= 257 and rows != "random":
        return too_far(length, rows, **where)
    if backend == "mlx" and dtype == "float16" and length >= 2049:
        return rung(length, rows, "known_failure", **where)
    if (backend, dtype, op) == ("onnxruntime", "float32", "logsumexp") and length in (65536, 2**20) \
            and rows == "random":
        return too_far(length, rows, ulp=20.0, budget=5.0, **where)
    if (backend, dtype, op) == ("scipy", "float64", "softmax_vjp") and length == 2**20:
        return rung(length, rows, "error", failure="timeout", message="softmax_vjp timed out after 600 s",
                    **where)
    return rung(length, rows, **where)


@pytest.fixture(scope="module")
def table() -> dict:
    details = html.Details()
    return ladder.ladder(made_up_ladder(), details.add) | {"details": details}


def cell_of(table: dict, backend: str, dtype: str, op: str) -> dict:
    found = next(t for t in table["tables"] if t["backend"] == backend)
    row = next(r for r in found["rows"] if r["dtype"] == dtype)
    return row["cells"][found["ops"].index(op)]


def test_the_table_has_a_matrix_per_backend(table: dict) -> None:
    assert [t["backend"] for t in table["tables"]] == [
        "array_api_strict/cpu", "jax/cpu", "mlx/cpu", "numpy/cpu", "onnxruntime/cpu", "scipy/cpu",
        "torch/cpu"]
    assert table["lengths"] == list(LENGTHS)
    assert table["results"] == 6 * 6 * 4 * 12 * 3 + 6 * 2 * 12 * 3  # 7 backends' less array_api's unsupported
    numpy = next(t for t in table["tables"] if t["backend"] == "numpy/cpu")
    assert numpy["ops"] == list(OPS) and [r["dtype"] for r in numpy["rows"]] == [
        "float16", "bfloat16", "float32", "float64"]
    assert numpy["state"] == "pass"
    assert [t["state"] for t in table["tables"]] == ["pass", "fail", "known", "pass", "fail", "fail", "fail"]


def test_the_cells_say_safe_up_to_and_fails_at(table: dict) -> None:
    torch = cell_of(table, "torch/cpu", "float16", "logsumexp")
    assert (torch["state"], torch["first"], torch["second"], torch["again"]) == (
        "fail", f"≤ 65{NNBSP}519", f"✗ 65{NNBSP}520", False)
    assert torch["title"] == (f"float16 logsumexp on torch/cpu: safe up to 65{NNBSP}519, fails at "
                              f"65{NNBSP}520 (uniform: -inf where 11.09)")
    assert [r["state"] for r in torch["rungs"]] == ["pass"] * 8 + ["fail"] * 4
    assert torch["rungs"][8]["title"] == f"65{NNBSP}520: wrong: uniform: -inf where 11.09"
    first = cell_of(table, "torch/cpu", "bfloat16", "log_softmax")
    assert (first["first"], first["second"], first["again"]) == ("none right", "✗ 256", False)
    mlx = cell_of(table, "mlx/cpu", "float16", "softmax")
    assert (mlx["state"], mlx["first"], mlx["second"]) == ("known", f"≤ 2{NNBSP}048", f"⚑ 2{NNBSP}049")
    onnx = cell_of(table, "onnxruntime/cpu", "float32", "logsumexp")
    assert (onnx["first"], onnx["second"], onnx["again"]) == (f"≤ 65{NNBSP}520", f"✗ 65{NNBSP}536", True)
    numpy = cell_of(table, "numpy/cpu", "float64", "logsumexp_vjp")
    assert (numpy["state"], numpy["first"], numpy["second"]) == ("pass", "✓ ≤ 2²⁰", "all right")
    assert "safe to the longest tried (1\u202f048\u202f576)" in numpy["title"]
    scipy = cell_of(table, "scipy/cpu", "float64", "softmax_vjp")
    assert (scipy["first"], scipy["second"]) == ("≤ 2¹⁷", "✗ 2²⁰")
    # The dtypes a backend was measured in at no length have no row: the caption names them.
    strict = next(t for t in table["tables"] if t["backend"] == "array_api_strict/cpu")
    assert [r["dtype"] for r in strict["rows"]] == ["float32", "float64"]
    assert strict["unmeasured"] == ["float16", "bfloat16"] and table["unmeasured"] == []
    assert [ladder.short_length(n) for n in (256, 65536, 2**17, 2**24 + 1, 2**20 + 2)] == [
        "256", f"65{NNBSP}536", "2¹⁷", "2²⁴+1", f"1{NNBSP}048{NNBSP}578"]


def test_a_click_explains_a_cell(table: dict) -> None:
    cell = cell_of(table, "onnxruntime/cpu", "float32", "logsumexp")
    details = table["details"].as_dict()
    kind, title, values, _ = details["entries"][cell["key"]]
    rows = dict(zip(details["schemas"][kind], values, strict=True))
    assert title == "float32 · logsumexp · onnxruntime/cpu: how long a row"
    assert rows["safe up to"] == f"65{NNBSP}520" and rows["fails at"] == f"65{NNBSP}536"
    assert rows["wrong there"] == "random: 20 ULP, budget 5"
    assert rows["right again above it (not monotone)"] == f"131{NNBSP}072"
    assert rows["every length measured"].endswith(f"65{NNBSP}536 ✗, 131{NNBSP}072 ✓, 1{NNBSP}048{NNBSP}576 ✗")
    assert rows["results"] == "36 measured over 12 lengths"


def test_the_headline_names_the_shortest_wrong_length_per_dtype(table: dict) -> None:
    assert table["headline"] == [
        f"float16: the shortest row gotten wrong has 2{NNBSP}049 elements (6 backend/ops: mlx/cpu softmax ⚑, "
        "log_softmax ⚑, logsumexp ⚑, softmax_vjp ⚑, log_softmax_vjp ⚑, logsumexp_vjp ⚑); 29 of 36 right at "
        "every length tried.",
        "bfloat16: the shortest row gotten wrong has 256 elements (1 backend/op: torch/cpu log_softmax); "
        "34 of 36 right at every length tried.",
        f"float32: the shortest row gotten wrong has 65{NNBSP}536 elements (1 backend/op: onnxruntime/cpu "
        "logsumexp); 41 of 42 right at every length tried.",
        f"float64: the shortest row gotten wrong has 1{NNBSP}048{NNBSP}576 elements (1 backend/op: scipy/cpu "
        "softmax_vjp); 41 of 42 right at every length tried."]
    assert ladder._headline("float16", ladder.groups(ladder_of(passing(256, 2**20)))) == (
        f"float16: every backend and op right at every length tried (up to 1{NNBSP}048{NNBSP}576).")


# The error-by-gap plot.

FLOAT16_BINADES = range(-24, 16)


def pattern_result(backend: str, op: str, row: str, dtype: str = "float16", binades=FLOAT16_BINADES,
                   ulp=lambda k: 0.3, ratio=lambda k: 0.1, semantic=lambda k: 0, **extra) -> dict:
    bins = [{"binade": None, "count": 1, "max_ulp": 0.0, "max_ratio": 0.0, "semantic": 0}]
    bins += [{"binade": k, "count": 2048 if k > -15 else 2 ** max(k + 24, 0), "max_ulp": ulp(k),
              "max_ratio": ratio(k), "semantic": semantic(k)} for k in binades]
    name = {"[0, x]": "zero_x", "[x, 0, 0, 0]": "x000", "[x, x-1, x-2, x-3]": "x_down"}[row]
    return accuracy(backend=backend, dtype=dtype, op=op, case=f"patterns_{name}_{dtype}", max_ulp=0.5,
                    pattern={"row": row, "by_gap": bins}, **extra)


def made_up_patterns() -> list[dict]:
    """numpy within budget everywhere; torch's float16 softmax on [0, x] 8 to 2e4 ULP off from gap 2^11
    (over budget from 2^12: ratio 2 and up) with NaN at 2^15; jax's float16 logsumexp on [x, 0, 0, 0]
    infinite at 2^15; bfloat16 too (262 binades), numpy alone."""
    records = []
    for backend in ("jax", "numpy", "torch"):
        for op in OPS[:4]:
            for row in patterns.ROW_KINDS:
                extra = {"cotangent": "random"} if op.endswith("_vjp") else {}
                if (backend, op, row) == ("torch", "softmax", "[0, x]"):
                    records.append(pattern_result(
                        backend, op, row, ulp=lambda k: 0.3 if k < 11 else 8.0 * 2.0 ** (k - 11) * 100,
                        ratio=lambda k: 0.1 if k < 12 else 2.0 ** (k - 11),
                        semantic=lambda k: 3 if k == 15 else 0, status="fail"))
                elif (backend, op, row) == ("jax", "logsumexp", "[x, 0, 0, 0]"):
                    records.append(pattern_result(backend, op, row, ulp=lambda k: "inf" if k == 15 else 0.4,
                                                  ratio=lambda k: "inf" if k == 15 else 0.2, status="fail"))
                else:
                    records.append(pattern_result(backend, op, row, **extra))
    records += [pattern_result("numpy", op, row, dtype="bfloat16", binades=range(-133, 128))
                for op in OPS[:2] for row in patterns.ROW_KINDS]
    return records


def test_where_each_backend_breaks() -> None:
    model = patterns.patterns(made_up_patterns())
    assert [d["dtype"] for d in model["dtypes"]] == ["float16", "bfloat16"]
    assert model["legend"] == [("jax/cpu", charts.colour(0)), ("numpy/cpu", charts.colour(1)),
                               ("torch/cpu", charts.colour(2))]
    float16 = model["dtypes"][0]
    assert [r["row"] for r in float16["rows"]] == list(patterns.ROW_KINDS)
    assert [c["op"] for c in float16["rows"][0]["charts"]] == list(OPS[:4]) and float16["count"] == 12
    assert float16["breaks"] == [
        "torch/cpu softmax on [0, x]: over budget at 2¹² ≤ gap < 2¹⁶; semantic differences (3) at "
        "2¹⁵ ≤ gap < 2¹⁶",
        "jax/cpu logsumexp on [x, 0, 0, 0]: over budget at 2¹⁵ ≤ gap < 2¹⁶"]
    softmax = float16["rows"][0]["charts"][0]
    assert softmax["breaks"] == [("torch/cpu", float16["breaks"][0].split(": ", 1)[1])]
    assert model["dtypes"][1]["breaks"] == [] and model["dtypes"][1]["count"] == 6
    assert model["results"] == 3 * 4 * 3 + 6


def test_bins_merge_over_cotangents_and_files() -> None:
    a = pattern_result("torch", "softmax_vjp", "[0, x]", binades=[3], ulp=lambda k: 2.0, ratio=lambda k: 0.5,
                       cotangent="random")
    b = pattern_result("torch", "softmax_vjp", "[0, x]", binades=[3, 4], ulp=lambda k: "nan",
                       ratio=lambda k: 1.5, semantic=lambda k: 2, cotangent="one_hot")
    bins = patterns.merged([a, b])
    assert sorted(bins, key=str) == [3, 4, None]
    three = bins[3]
    assert (three.count, three.ulp, three.ratio, three.semantic, three.results) == (4096, 2.0, 1.5, 2, 2)
    assert three.title() == ("max 2 ULP, 1.5 of its budget, OVER BUDGET, 2 semantic differences, "
                             "4096 patterns, the worst of 2 cotangents")
    assert math.isnan(bins[4].ulp)
    assert patterns.breaks(bins) == "over budget at 2³ ≤ gap < 2⁵; semantic differences (4) at 2³ ≤ gap < 2⁵"
    assert patterns.breaks(patterns.merged([pattern_result("numpy", "softmax", "[0, x]")])) is None


def test_results_without_a_usable_pattern_field_are_left_out() -> None:
    broken = [accuracy(pattern=value) for value in (None, "x", {"row": "[0, x]"}, {"by_gap": "none"})]
    assert patterns.patterns([accuracy(), *broken]) == {"dtypes": [], "legend": [], "results": 0}


ANY_NUMBER = (0, 0.0, -0.0, 1e-300, 5e-324, 0.5, 1e300, 1.7976931348623157e308, math.inf, -math.inf, math.nan,
              "inf", "-inf", "nan", "text", None, True, 10**400, -3)


def test_the_chart_survives_any_number() -> None:
    bins = [charts.Bin(k % 40 - 20, value, ratio, semantic, "t")
            for k, (value, ratio, semantic) in enumerate(
                (v, r, s) for v in ANY_NUMBER for r in (None, 2.0, "inf", math.nan)
                for s in (0, 3, math.nan, -1))]
    bins += [charts.Bin(b, 1.0) for b in (None, 10**9, 11.5, True, "3", -1100, 1100)]
    svg = str(charts.binade_chart([charts.BinLine("<b>x</b>", "#000", bins)], "any <number>"))
    assert "nan" not in re.sub(r"<title>.*?</title>|<text.*?</text>", "", svg).lower()
    assert "inf" not in re.findall(r'(?:x|y|cx|cy|width|height|d)="([^"]*)"', svg).__str__()
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "<b>" not in svg
    assert "beyond the axis" in svg and "left out (no place on a log axis): " in svg
    assert "4 not a binade" in svg  # 10**9, 11.5, True, "3"
    for nothing in ([], [charts.BinLine("a", "#000", [])],
                    [charts.BinLine("a", "#000", [charts.Bin("x", 1.0)])]):
        out = str(charts.binade_chart(nothing, "empty"))
        assert out == "" or "1 not a binade" in out


def test_one_binade_and_only_zero() -> None:
    one = str(charts.binade_chart([charts.BinLine("a", "#123456", [charts.Bin(7, 3.0)])], "one"))
    assert 'class="point"' in one and ">2⁷<" in one
    zero = str(charts.binade_chart([charts.BinLine("a", "#123456", [charts.Bin(None, 0.0)])], "zero"))
    # An exact 0 sits on the bottom edge (the frame's top 22 px + 130 px), in its own column "0".
    assert ">0<" in zero and 'cy="152.0"' in zero


# The report.

def test_the_report_shows_both_sections_and_packs_the_charts() -> None:
    model = html.build([HEADER], [*made_up_ladder(), *made_up_patterns()], reproducer=snippet)
    page = html.render(model)
    assert '<section id="ladder">' in page and '<section id="patterns">' in page
    assert 'href="#ladder">Row length</a>' in page and 'href="#patterns">Bit patterns</a>' in page
    assert page.index('id="distributions"') < page.index('id="ladder"') < page.index('id="patterns"') \
        < page.index('id="semantics"')
    assert f"safe up to 65{NNBSP}519, fails at 65{NNBSP}520 (uniform: -inf where 11.09)" in page
    assert page.count('<table class="ladder') == 7
    # The charts are drawn on demand from the packed parts: none in the page itself.
    assert 'data-lazy="patterns-float16"' in page and "svg class=\"chart binades\"" not in page
    packed = json.loads(parse(page).scripts[0])
    from softmax_suite.reports.packing import unpack
    markup = unpack(packed["parts"])["markup"]
    assert markup["patterns-float16"].count('class="chart binades"') == 12
    assert markup["patterns-bfloat16"].count('class="chart binades"') == 6
    assert "2¹² ≤ gap &lt; 2¹⁶" in markup["patterns-float16"]


def test_a_report_without_either_shows_neither() -> None:
    page = html.render(html.build([HEADER], [accuracy()]))
    assert 'id="ladder"' not in page and 'id="patterns"' not in page
    assert "Row length" not in page and "Bit patterns" not in page


def test_the_schema_names_both_fields() -> None:
    schema = json_schema()
    result = next(v for v in schema["oneOf"] if v["title"] == "Result")
    assert result["properties"]["ladder"] == {"type": "object"}
    assert result["properties"]["pattern"] == {"type": "object"}
    validator = jsonschema.Draft202012Validator(schema)
    for record in (rung(65520, status="fail"), made_up_patterns()[0]):
        assert not [e.message for e in validator.iter_errors({"kind": "result", **record})]
