"""The HTML report (reports.html, reports.charts, `softmax-suite report`): what each section shows
for crafted records, that every string is escaped and nothing is fetched, and the command's exit
codes. tests/test_report_hostile.py feeds it any numbers; tests/test_report_browser.py opens a real
run's report in Chromium."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from softmax_suite.reports import charts, choice, html, packing
from softmax_suite.reports.gate import FAIL, NOTE, Finding
from softmax_suite.reports.results import SCHEMA_VERSION, end_line
from softmax_suite.runner.reproduce import snippet

REPO = Path(__file__).resolve().parents[1]
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def accuracy(backend: str = "numpy", dtype: str = "float32", op: str = "softmax", case: str = "glossary",
             status: str = "pass", max_ulp: float | None = 0.5, histogram: list[int] | None = None,
             digest: str = "d0", **extra) -> dict:
    metrics = {"max_ulp": max_ulp, "p50_ulp": max_ulp, "p99_ulp": max_ulp,
               "ulp_histogram": histogram if histogram is not None else [4]}
    return {"check": "accuracy", "backend": backend, "device": "cpu", "dtype": dtype, "op": op, "case": case,
            "status": status, "message": "", "metrics": metrics, "output_sha256": digest,
            "nodeid": f"suites/test_forward.py::test_{op}[{backend}-cpu-{dtype}-{case}]", "shape": [4],
            "layout": "contiguous", **extra}


def throughput(backend: str, elements: int, gb_per_s: float, copy: float, rows: int = 1) -> dict:
    return {"check": "throughput", "backend": backend, "device": "cpu", "dtype": "float32", "op": "softmax",
            "case": f"row_n{elements}", "status": "pass", "elements": elements,
            "shape": [rows, elements // rows], "gb_per_s": gb_per_s, "copy": {"gb_per_s": copy},
            "roofline_fraction": gb_per_s / copy, "timing": {"median_s": 1e-3},
            "nodeid": f"suites/test_throughput.py::test_softmax_throughput[{backend}]"}


HEADER = {"kind": "run", "schema": SCHEMA_VERSION, "command": ["softmax-suite", "run"], "python": "3.11.7",
          "backends": {"numpy": {"version": "2.0", "devices": ["cpu"], "absent_devices": {}}}}


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of every script element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def handle_endtag(self, tag):
        self._in_script = False


def parse(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


def render(results: list[dict], findings=None, headers=None) -> str:
    return html.render(html.build(headers or [HEADER], results, findings, reproducer=snippet))


def packs(text: str) -> dict:
    """The report's packed parts, unpacked: {"parts": {...}, "reproducers": {...}}."""
    found = re.search(r'<script type="application/json" id="packed">(.*?)</script>', text, re.S)
    return {name: packing.unpack(value) for name, value in json.loads(found.group(1)).items()}


def markup_of(text: str) -> list[str]:
    """The page and every part drawn on demand: all the markup a reader's browser may show."""
    return [text, *(fragment for pack in packs(text).values() for fragment in pack["markup"].values())]


def test_every_string_from_a_results_file_is_escaped() -> None:
    # A crafted results file: hostile backend, case, message and command. The report must have
    # exactly its own two scripts (the details table and the code) and no element or event
    # handler from the data.
    results = [accuracy(backend=HOSTILE, case=HOSTILE, status="fail", max_ulp=9.0, message=HOSTILE,
                        known_deviation={"reason": HOSTILE}),
               accuracy(backend=HOSTILE, status="error", max_ulp=None, message="</script>" + HOSTILE)]
    header = {**HEADER, "command": ["softmax-suite", HOSTILE], "cwd": HOSTILE}
    text = render(results, headers=[header])
    assert [tag for tag, _ in parse(text).tags].count("script") == 2
    # The page and the parts its script draws on demand (heatmaps, failures, reproducers): 3 of
    # them here, each with the hostile text escaped.
    fragments = markup_of(text)
    assert len(fragments) == 4
    for fragment in fragments:
        tags = parse(fragment)
        assert "script" not in [tag for tag, _ in tags.tags] or fragment is text
        assert "img" not in [tag for tag, _ in tags.tags]
        assert not any(name.startswith("on") for _, attrs in tags.tags for name in attrs)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert all("&lt;script&gt;alert(" in f for f in fragments[1:])
    # The packed data is base64 in JSON: no </script> can close its element early; the details
    # table in it holds the text as text.
    data = next(s for s in parse(text).scripts if s.lstrip().startswith("{"))
    assert re.fullmatch(r'\{"parts": "[A-Za-z0-9+/=]+", "reproducers": "[A-Za-z0-9+/=]+"\}', data)
    assert any(HOSTILE in entry[1] for entry in packs(text)["parts"]["details"]["entries"])


def test_the_report_fetches_nothing() -> None:
    # One file, offline: no src or href leaving the page, and a Content-Security-Policy that
    # forbids any request the page might still make.
    text = render([accuracy(), accuracy(status="fail", max_ulp=9.0),
                   accuracy(case="nan", status="known_failure", known_deviation={"reason": "why"}),
                   throughput("numpy", 4096, 1.0, 10.0)])
    for fragment in markup_of(text):
        for tag, attrs in parse(fragment).tags:
            assert "src" not in attrs, tag
            assert attrs.get("href", "#").startswith("#"), (tag, attrs)
    tags = parse(text)
    csp = next(a["content"] for t, a in tags.tags if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp
    # The only address is SVG's namespace name, which is never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}


def test_verdict_counts_statuses_and_regressions() -> None:
    passing = [accuracy(), accuracy(dtype="float16")]
    model = html.build([HEADER], passing)
    assert model["verdict"]["ok"] and model["verdict"]["counts"]["pass"] == 2
    failing = [*passing, accuracy(status="fail", max_ulp=40.0), accuracy(status="known_failure")]
    model = html.build([HEADER], failing)
    assert not model["verdict"]["ok"] and model["verdict"]["unexpected"] == 1
    regressed = [
        Finding("accuracy/numpy/cpu/float32/softmax/glossary", FAIL, "accuracy regressed", "1", "9", "3"),
        Finding("accuracy/numpy/cpu/float16/softmax/glossary", NOTE, "accuracy improved", "9", "1", "4")]
    model = html.build([HEADER], passing, regressed)
    assert not model["verdict"]["ok"] and model["verdict"]["regressed"] == 1
    assert model["baseline"]["counts"] == {"fail": 1, "warn": 0, "note": 1}
    assert "1 regressed against the baseline" in html.render(model)


def test_heatmap_cells_carry_colour_status_and_details() -> None:
    results = [accuracy(max_ulp=0.5),
               accuracy(backend="torch", max_ulp=1000.0, status="fail", message="far off",
                        metrics={"max_ulp": 1000.0, "worst": {"ulp": 800.0, "index": [1]}},
                        bound={"budget_ulp": 4.0, "ratio": 200.0}),
               accuracy(backend="jax", status="unsupported", max_ulp=None),
               accuracy(backend="jax", case="nan", max_ulp=1.0)]
    model = html.build([HEADER], results, reproducer=snippet)
    (softmax,) = model["heatmaps"]
    svg = str(softmax["svg"])
    # 0.5 ULP is the first stop (correctly rounded: green); the failure is the failure red, with a
    # glyph; jax answered one case, so its unsupported one is drawn blank.
    assert f'fill="{charts.ULP_STOPS[0][1]}"' in svg
    assert f'fill="{charts.FAIL_FILL}"' in svg
    assert 'class="cell unsupported"' in svg and ">×</text>" in svg
    keys = [int(k) for k in re.findall(r'data-k="(\d+)"', svg)]
    entries = model["details"]["entries"]
    labels = model["details"]["schemas"]["accuracy"]
    failed = next(entries[k] for k in keys if "torch" in entries[k][1])
    shown = dict(zip(labels, failed[2], strict=True))
    # The two "worst" numbers of one result, each under its own label: the element worst for its
    # budget (800 ULP, 200x its budget of 4: the message's) and the largest error of any (1000 ULP).
    assert shown["status"] == "fail" and shown[html.LARGEST] == "1000"
    assert shown["its error (ULP)"] == "800" and shown["its error / budget"] == "200"
    assert shown["message"] == "far off"
    assert failed[3] == "failure-0"  # the click leads to its reproducer


def test_every_unexpected_failure_is_the_same_red() -> None:
    # NaN where a number was expected is outside the ULP statistics: its max_ulp (0.5 here) is that
    # of the other elements. Failed, it is as red as a failure by 40 ULP; known, it is the scale's
    # darkest (the largest error), never the green of its finite elements.
    cells = {status_failure: charts.cell_fill(charts.Cell(ulp, status, "", None, failure))
             for status_failure, (ulp, status, failure) in {
                 "fail semantic": (0.5, "fail", "semantic"), "fail accuracy": (40.0, "fail", "accuracy"),
                 "fail invariant": (None, "fail", "invariant"),
                 "known semantic": (0.5, "known_failure", "semantic"),
                 "known accuracy": (40.0, "known_failure", "accuracy"), "error": (None, "error", "error"),
                 "pass": (0.5, "pass", None)}.items()}
    assert cells["fail semantic"] == cells["fail accuracy"] == cells["fail invariant"] == charts.FAIL_FILL
    assert cells["known semantic"] == charts.ULP_STOPS[-1][1] == charts.ulp_colour(math.inf)
    assert cells["known accuracy"] == charts.ulp_colour(40.0) and cells["pass"] == charts.ULP_STOPS[0][1]
    assert cells["error"] == charts.ERROR_FILL


def test_ops_and_dtypes_a_backend_does_not_offer_are_not_drawn() -> None:
    # scipy has no softmax_vjp (the capability table says so) and was asked nothing of it; an old
    # file's unsupported records count as asked nothing too.
    capabilities = [{"backend": "scipy", "device": "cpu", "op": "softmax_vjp", "dtype": "float32",
                     "reason": "scipy has no softmax_vjp"}]
    results = [accuracy(), accuracy(backend="scipy"),
               accuracy(op="softmax_vjp", cotangent="normal"),
               accuracy(backend="scipy", op="softmax_vjp", cotangent="normal", status="unsupported",
                        max_ulp=None)]
    model = html.build([{**HEADER, "capabilities": capabilities}], results)
    softmax, vjp = model["heatmaps"]
    assert "scipy/cpu" in str(softmax["svg"]) and "scipy/cpu" not in str(vjp["svg"])
    assert [(row["backend"], row["op"]) for row in model["grid"]["rows"]] == [
        ("numpy/cpu", "softmax"), ("numpy/cpu", "softmax_vjp"), ("scipy/cpu", "softmax")]
    (float32,) = model["choice"]["dtypes"]
    rows = {row["op"]: row for row in float32["rows"]}
    assert [e["label"] for e in rows["softmax_vjp"]["ranked"]] == ["numpy"]
    assert rows["softmax_vjp"]["absent"] == [("scipy", "scipy has no softmax_vjp")]


def test_a_one_column_heatmap_gives_its_headings_and_labels_room() -> None:
    # One backend: a panel is one 22 px column. Its heading ("bfloat16", bold) needs 60 px, and its
    # label, turned 60 degrees, runs 0.5 x 6.2 px x 22 characters = 68 px right of its column.
    panels = [charts.Panel(dtype, ["array_api_strict/cpu"], {("glossary", "array_api_strict/cpu"):
                                                             charts.Cell(0.5, "pass", "")})
              for dtype in ("float16", "bfloat16")]
    svg = str(charts.heatmap(["glossary"], panels, "one backend"))
    width = float(re.search(r'<svg[^>]* width="(\d+)"', svg).group(1))
    headings = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="12.0" text-anchor="middle" '
                                             r'class="heading"', svg)]
    # Panels as wide as their headings (7 and 8 bold characters of 7.5 px: 53 and 60 px, whole
    # pixels), 16 px apart: the centres are 53 / 2 + 16 + 60 / 2 = 72.5 px apart; the second
    # column's label ends inside the picture.
    assert headings[1] - headings[0] == 72.5
    label_x = max(float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="start" '
                                                r'transform="rotate', svg))
    assert width >= label_x + 0.5 * 6.2 * len("array_api_strict/cpu")


def test_ulp_colour_scale() -> None:
    assert charts.ulp_colour(0.1) == charts.ulp_colour(0.5) == "#1a9850"
    assert charts.ulp_colour(8.0) == "#fee08b"
    # Halfway between the 2 and 8 stops on log2 (4 ULP): each channel halfway, rounded.
    halfway = [round((a + b) / 2) for a, b in ((0xa6, 0xfe), (0xd9, 0xe0), (0x6a, 0x8b))]
    assert charts.ulp_colour(4.0) == "#" + "".join(f"{channel:02x}" for channel in halfway)
    assert charts.ulp_colour(1e9) == "#67001f" and charts.ulp_colour(None) == charts.NO_VALUE


def test_distributions_sum_histograms_per_backend_and_dtype() -> None:
    results = [accuracy(histogram=[5, 2]), accuracy(case="nan", histogram=[3, 0, 1]),
               accuracy(op="softmax_vjp", cotangent="normal", histogram=[7])]
    forward, gradients = html.distributions(results)
    (cell,) = forward["rows"][0]["cells"]
    # 5 + 3 elements correctly rounded, 2 in (0.5, 1], 1 in (1, 2]: 11 elements, 8/11 rounded.
    assert cell["elements"] == 11 and cell["rounded"] == pytest.approx(8 / 11)
    assert "8 elements (72.727%) with error ≤ 0.5 ULP" in str(cell["svg"])
    assert gradients["vjp"] and gradients["rows"][0]["cells"][0]["elements"] == 7


def test_agreement_counts_bitwise_equal_answers() -> None:
    # numpy and scipy agree on both cases, torch on one of the two.
    results = [accuracy(backend="numpy", digest="a"), accuracy(backend="scipy", digest="a"),
               accuracy(backend="torch", digest="a"),
               accuracy(backend="numpy", case="nan", digest="b"),
               accuracy(backend="scipy", case="nan", digest="b"),
               accuracy(backend="torch", case="nan", digest="c")]
    (table,) = html.agreement(results)
    cells = {(row["backend"], name): cell["text"]
             for row in table["rows"] for name, cell in zip(table["names"], row["cells"], strict=True)}
    assert cells[("numpy/cpu", "scipy/cpu")] == "2/2"
    assert cells[("numpy/cpu", "torch/cpu")] == cells[("torch/cpu", "scipy/cpu")] == "1/2"


def test_throughput_draws_the_copy_as_the_roofline() -> None:
    results = [throughput("numpy", 4096, 2.0, 20.0), throughput("numpy", 2**20, 4.0, 10.0),
               throughput("numpy", 2**20, 5.0, 10.0, rows=4096)]
    (device,) = html.throughput(results, html.Details())
    (chart,) = device["charts"]
    svg = str(chart)
    # The row line, its dashed roofline (copy), and the batch point with its own roofline.
    assert svg.count('stroke-dasharray="5 3"') == 2
    assert svg.count('class="point"') == 3
    assert "numpy rows, 4K elements: 2 GB/s" in svg


def test_accuracy_against_speed_pairs_the_worst_error_with_the_median_fraction() -> None:
    results = [accuracy(max_ulp=3.0), accuracy(case="nan", max_ulp=12.0),
               throughput("numpy", 4096, 2.0, 20.0), throughput("numpy", 2**20, 4.0, 10.0)]
    details = html.Details()
    trade = html.trade_off(results[:2], results[2:], details)
    (entry,) = details.entries
    values = dict(zip(details.schemas["trade_off"], entry[2], strict=True))
    # Fractions 0.1 and 0.4: the median is 0.25; the worst error over the two cases is 12 ULP.
    assert values["median fraction of the copy"] == "0.25" and values["max ULP over the cases"] == "12"
    assert 'class="point"' in str(trade["svg"])


def test_accuracy_against_speed_leaves_known_deviations_out() -> None:
    # A float64 known deviation of 1e15 ULP would put the axis at 1e15 and every other point at
    # its bottom: the point is the worst of the rest (3 ULP), the deviation counted in its details.
    results = [accuracy(max_ulp=3.0), accuracy(case="nan", max_ulp=1e15, status="known_failure"),
               throughput("numpy", 4096, 2.0, 20.0)]
    details = html.Details()
    html.trade_off(results[:2], results[2:], details)
    (entry,) = details.entries
    values = dict(zip(details.schemas["trade_off"], entry[2], strict=True))
    assert values["max ULP over the cases"] == "3" and values["known deviations left out"] == "1"


def invariant(ok: bool | None, backend: str = "numpy", status: str = "pass", dtype: str = "float32") -> dict:
    outcome = {"ok": ok, "value": None if ok is None else 0.0, "budget": None if ok is None else 1.0}
    return {**accuracy(backend=backend, status=status, dtype=dtype), "check": "invariants",
            "invariants": {"shift_invariance": outcome}}


def test_invariants_that_do_not_apply_are_not_broken() -> None:
    # numpy held shift invariance in the 2 cases it applies to (a third has no exact shift: ok is
    # null); torch broke it once unexpectedly, jax once in a known deviation; in float16 none applied.
    results = [invariant(True), invariant(True), invariant(None), invariant(None, dtype="float16"),
               invariant(True, "torch"), invariant(False, "torch", "fail"),
               invariant(False, "jax", "known_failure")]
    table = html.invariants(results)
    cells = {row["backend"]: dict(zip(table["dtypes"], row["cells"], strict=True)) for row in table["rows"]}
    numpy = cells["numpy/cpu"]
    assert (numpy["float32"]["text"], numpy["float32"]["state"]) == ("2/2 (1 n/a)", "agrees")
    assert (numpy["float16"]["text"], numpy["float16"]["state"]) == ("n/a", "na")
    torch, jax = cells["torch/cpu"]["float32"], cells["jax/cpu"]["float32"]
    assert (torch["text"], torch["state"], jax["text"], jax["state"]) == ("1/2", "differs", "0/1", "known")


def test_the_first_screen_ranks_backends_by_accuracy_beside_their_speed() -> None:
    # float32 softmax: torch and numpy pass every case, numpy with more budget to spare (its closest
    # case used 0.25 of its budget, torch's 0.5); jax has a known deviation; mlx an unexpected
    # failure, whose worst is named. Speed: the median fraction of the copy (numpy 0.1 and 0.3: 0.2).
    def judged(backend: str, ratio: float, status: str = "pass", **extra) -> dict:
        return accuracy(backend=backend, status=status, bound={"ratio": ratio, "budget_ulp": 8.0}, **extra)

    results = [judged("torch", 0.5), judged("torch", 0.1), judged("numpy", 0.25), judged("numpy", 0.2),
               judged("jax", 0.1), judged("jax", 9.0, "known_failure", case="nan"),
               judged("mlx", 0.1), judged("mlx", 40.0, "fail", case="nan", failure="accuracy",
                                          metrics={"worst": {"ulp": 320.0}})]
    timings = [throughput("numpy", 4096, 1.0, 10.0), throughput("numpy", 2**20, 3.0, 10.0),
               throughput("torch", 4096, 5.0, 10.0)]
    (float32,) = choice.choices(results, timings)["dtypes"]
    (softmax,) = float32["rows"]
    ranked = [(e["label"], e["state"], e["within"], e["results"], e["fraction"]) for e in softmax["ranked"]]
    assert ranked == [("numpy", "pass", 2, 2, pytest.approx(0.2)), ("torch", "pass", 2, 2, 0.5),
                      ("jax", "known", 1, 2, None), ("mlx", "fail", 1, 2, None)]
    assert softmax["ranked"][3]["worst"] == "softmax nan: 3.2e+02 ulp (budget 8)"


def test_known_deviations_are_grouped_by_their_entry() -> None:
    # Three results of one entry (two backends), one of another: two groups, the larger first, each
    # holding its results' anchors.
    def known(case: str, reason: str, backend: str = "numpy", link: str = "") -> dict:
        return accuracy(status="known_failure", case=case, backend=backend,
                        known_deviation={"reason": reason, "link": link})

    results = [known("a", "sums"), known("b", "sums"), known("c", "sums", "torch"),
               known("d", "raises", link="L")]
    model = html.build([HEADER], results)
    assert [(g["reason"], g["count"], g["backends"], g["link"]) for g in model["known"]] == [
        ("sums", 3, ["numpy", "torch"], ""), ("raises", 1, ["numpy"], "L")]
    assert model["verdict"]["ok"] and model["verdict"]["entries"] == 2
    text = html.render(model)
    assert text.count('<details class="deviation"') == 2
    groups = packs(text)["parts"]["markup"]
    assert groups["known-0"].count('<details class="failure known_failure"') == 3


def test_a_known_deviation_adds_little_to_the_page() -> None:
    # A full default run has ~1000 known failures: each added ~8 KB of page (its message and its
    # reproducer, all in the page). Now its markup is packed: 200 results of one entry with
    # 300-character messages add 86 bytes each (measured; under 150 allowed: the messages differ
    # in a number only, and deflate keeps one copy). A real run's sizes are in docs/report.md.
    def report(count: int) -> int:
        results = [accuracy(status="known_failure", case=f"case{i}", known_deviation={"reason": "r" * 300},
                            message="known deviation: " + "r" * 300 + f" [{i} ULP]") for i in range(count)]
        return len(html.render(html.build([HEADER], results)).encode())

    assert report(201) - report(1) < 200 * 150


def test_failures_list_unexpected_first_with_reproducers() -> None:
    results = [accuracy(status="known_failure", case="nan"), accuracy(status="fail", case="glossary"),
               {**accuracy(status="fail"), "check": "invariants", "nodeid": "inv"}]
    listed, anchors = html.failures(results, snippet)
    assert [(f["status"], f["check"]) for f in listed] == [
        ("fail", "accuracy"), ("fail", "invariants"), ("known_failure", "accuracy")]
    assert listed[0]["snippet"] and "softmax_suite.backends.registry" in listed[0]["snippet"]
    # The unexpected failure's small input is embedded; the known deviation's is rebuilt from the
    # catalogue (a default run has ~2000 of them: embedded, their bits were half the report).
    assert "X_BITS" in listed[0]["snippet"]
    known, _ = html.failures([accuracy(status="known_failure", case="glossary")], snippet)
    assert "X_BITS" not in known[0]["snippet"] and "CASES[CASE].build(DTYPE)" in known[0]["snippet"]
    assert len(anchors) == 3
    # Without the runner's reproducer (a report made from files alone) each failure says why it has none.
    listed, _ = html.failures(results)
    assert all(f["snippet"] is None and "without softmax-suite's catalogue" in f["why_no_snippet"]
               for f in listed)


def test_devices_skipped_as_a_whole_stay_out_of_the_grid() -> None:
    results = [accuracy(), {"check": "accuracy", "backend": "torch", "device": "cuda", "dtype": "any",
                            "case": "any", "op": "softmax", "status": "skip", "message": "no CUDA device"}]
    model = html.build([HEADER], results, reproducer=snippet)
    assert model["not_run"] == [("torch/cuda", "no CUDA device")]
    assert [row["backend"] for row in model["grid"]["rows"]] == ["numpy/cpu"]
    assert model["verdict"]["counts"]["skip"] == 1


def test_merged_files_list_every_run_in_the_environment() -> None:
    merged = {"kind": "run", "schema": SCHEMA_VERSION, "file": "all.jsonl",
              "merged_from": [{**HEADER, "file": "cpu.jsonl"},
                              {**HEADER, "file": "gpu.jsonl", "command": ["x"]}]}
    runs = html.environments([merged])
    assert [run["file"] for run in runs] == ["cpu.jsonl", "gpu.jsonl"]
    assert runs[0]["command"] == "softmax-suite run"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def write_results(path: Path, results: list[dict]) -> Path:
    # A finished run's file: the end line counts its results.
    lines = [HEADER, *({"kind": "result", **r} for r in results), end_line(results)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_report_command_writes_the_file(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results.jsonl", [accuracy(), accuracy(status="fail", max_ulp=40.0)])
    done = cli("report", str(results), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "r.html").read_text()
    assert ">FAIL <" in text and "1 fail" in text


def test_report_command_with_a_baseline_shows_the_deltas(tmp_path: Path) -> None:
    before = write_results(tmp_path / "before.jsonl", [accuracy(max_ulp=1.0)])
    after = write_results(tmp_path / "after.jsonl", [accuracy(max_ulp=40.0)])
    assert cli("baseline", "save", str(before), "-o", str(tmp_path / "base.json")).returncode == 0
    done = cli("report", str(after), "--baseline", str(tmp_path / "base.json"),
               "-o", str(tmp_path / "r.html"))
    # 40 > 2 x 1 + 1 ULP: a regression, shown in the report; exit 0 all the same, since the report
    # was written (the verdict is `gate`'s, which exits 1 on it).
    assert done.returncode == 0, done.stderr
    assert "`softmax-suite gate` is the verdict that fails on them" in done.stdout
    text = (tmp_path / "r.html").read_text()
    assert 'id="baseline"' in text and "accuracy regressed" in text
    gated = cli("gate", str(after), "--baseline", str(tmp_path / "base.json"))
    assert gated.returncode == 1 and "accuracy regressed" in gated.stdout


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read results file"),
    ('{"kind": "run", "schema": 999}\n', "results schema 999"),
    ('{"kind": "run"\n{"kind": "result"}\n', ":1: not a JSON line"),
])
def test_report_command_rejects_bad_results_files(tmp_path: Path, content, expected) -> None:
    path = tmp_path / "results.jsonl"
    if content is not None:
        path.write_text(content)
    done = cli("report", str(path), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 2 and expected in done.stderr
    assert not (tmp_path / "r.html").exists()
