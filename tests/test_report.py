"""The HTML report (reports.html, reports.charts, `softmax-suite report`): what each section shows
for crafted records, that every string is escaped and nothing is fetched, and the command's exit
codes. tests/test_report_hostile.py feeds it any numbers; tests/test_report_browser.py opens a real
run's report in Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from softmax_suite.reports import charts, html
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


def test_every_string_from_a_results_file_is_escaped() -> None:
    # A crafted results file: hostile backend, case, message and command. The report must have
    # exactly its own two scripts (the details table and the code) and no element or event
    # handler from the data.
    results = [accuracy(backend=HOSTILE, case=HOSTILE, status="fail", max_ulp=9.0, message=HOSTILE,
                        known_deviation={"reason": HOSTILE}),
               accuracy(backend=HOSTILE, status="error", max_ulp=None, message="</script>" + HOSTILE)]
    header = {**HEADER, "command": ["softmax-suite", HOSTILE], "cwd": HOSTILE}
    text = render(results, headers=[header])
    tags = parse(text)
    assert [tag for tag, _ in tags.tags].count("script") == 2
    assert "img" not in [tag for tag, _ in tags.tags]
    assert not any(name.startswith("on") for _, attrs in tags.tags for name in attrs)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    # Inside the JSON script, < and > are \u003c and \u003e: no </script> can close it early.
    data = next(s for s in tags.scripts if s.lstrip().startswith("{"))
    assert "<" not in data and json.loads(data)["entries"]


def test_the_report_fetches_nothing() -> None:
    # One file, offline: no src or href leaving the page, and a Content-Security-Policy that
    # forbids any request the page might still make.
    text = render([accuracy(), throughput("numpy", 4096, 1.0, 10.0)])
    tags = parse(text)
    for tag, attrs in tags.tags:
        assert "src" not in attrs, tag
        assert attrs.get("href", "#").startswith("#"), (tag, attrs)
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
               accuracy(backend="torch", max_ulp=1000.0, status="fail", message="far off"),
               accuracy(backend="jax", status="unsupported", max_ulp=None)]
    model = html.build([HEADER], results, reproducer=snippet)
    (softmax,) = model["heatmaps"]
    svg = str(softmax["svg"])
    # 0.5 ULP is the first stop (correctly rounded: green); 1000 ULP lies between the 64 and
    # 1024 stops on the log2 scale; the failure is outlined, the unsupported cell drawn blank.
    assert f'fill="{charts.ULP_STOPS[0][1]}"' in svg
    assert f'fill="{charts.ulp_colour(1000.0)}" stroke="#b00020"' in svg
    assert 'class="cell unsupported"' in svg
    keys = [int(k) for k in re.findall(r'data-k="(\d+)"', svg)]
    entries = model["details"]["entries"]
    labels = model["details"]["schemas"]["accuracy"]
    failed = next(entries[k] for k in keys if "torch" in entries[k][1])
    shown = dict(zip(labels, failed[2], strict=True))
    assert shown["status"] == "fail" and shown["max ULP"] == "1000" and shown["message"] == "far off"
    assert failed[3] == "failure-0"  # the click leads to its reproducer


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


def test_failures_list_unexpected_first_with_reproducers() -> None:
    results = [accuracy(status="known_failure", case="nan"), accuracy(status="fail", case="glossary"),
               {**accuracy(status="fail"), "check": "invariants", "nodeid": "inv"}]
    listed, anchors = html.failures(results, snippet)
    assert [(f["status"], f["check"]) for f in listed] == [
        ("fail", "accuracy"), ("fail", "invariants"), ("known_failure", "accuracy")]
    assert listed[0]["snippet"] and "softmax_suite.backends.registry" in listed[0]["snippet"]
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
