"""The report as a person sees it: Debian's Chromium, headless and driven by Playwright, opens the
report of a real run with the network cut off; no console errors, the charts are drawn, a click
explains a cell, and a screenshot is kept in test-artifacts/ (or $SOFTMAX_SUITE_ARTIFACTS).

Without Chromium or Playwright these tests skip, unless SOFTMAX_SUITE_REQUIRE_BROWSER=1 (set by
.ci/run, which installs both): there a missing browser fails.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from softmax_suite.reports import charts, html
from softmax_suite.runner.reproduce import snippet
from tests.test_report import HEADER, HOSTILE, accuracy, throughput

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SOFTMAX_SUITE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SOFTMAX_SUITE_ARTIFACTS") or REPO / "test-artifacts")
# Chromium as root in a container, with nothing of its own reaching out: no background
# networking, no component updates, no name resolution at all.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--host-resolver-rules=MAP * ~NOTFOUND"]
HEIGHT = 900


def _chromium():
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install -e '.[test]')"
    if why is None and not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SOFTMAX_SUITE_CHROMIUM)"
    if why:
        if os.environ.get("SOFTMAX_SUITE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return sync_playwright


class Page:
    """A page opened offline, with every request, console error and dialog it caused."""

    def __init__(self, browser, path: Path, width: int = 1400) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        context = browser.new_context(offline=True, viewport={"width": width, "height": HEIGHT})
        self.page = context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.goto(path.as_uri(), wait_until="load")

    def outside(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(("file:", "data:"))]


def open_heatmaps(page) -> None:
    """Open every heatmap and wait until each is drawn (from the report's packed data)."""
    for heatmap in page.locator("details.heatmap").all():
        heatmap.locator("summary").click()
        heatmap.locator("svg.heatmap").wait_for()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def test_a_real_runs_report_in_chromium(browser, tmp_path: Path) -> None:
    # numpy, torch and a softmax without the max shift (NaN on equal_large: an unexpected
    # failure with a reproducer), accuracy and the quick throughput sweep.
    done = subprocess.run(
        [sys.executable, "-m", "softmax_suite.runner.cli",
         "run", "--backend", "numpy,torch,tests.bad_softmax:NoMaxShift",
         "--case", "glossary,equal_large,nan,random_n31_s3", "--dtype", "float16,float32",
         "--out", str(tmp_path), "-n", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    report = tmp_path / "report.html"
    assert f"report in {report}" in done.stdout

    shown = Page(browser, report)
    page = shown.page
    assert shown.errors == [] and shown.outside() == []
    assert page.locator("header.verdict h1").inner_text().startswith("FAIL")
    # The heatmaps are drawn when opened; then every chart has elements with a size on screen.
    assert page.locator("svg.heatmap rect.cell").count() == 0
    open_heatmaps(page)
    for selector, least in (("svg.heatmap rect.cell", 40), ("svg.histogram rect.bar", 8),
                            ("svg.lines path.line", 4), ("svg.scatter .point", 4)):
        assert page.locator(selector).count() >= least, selector
        box = page.locator(selector).first.bounding_box()
        assert box and box["width"] > 0 and box["height"] >= 0, selector
    # Clicking the failing cell explains it and leads to its reproducer.
    cell = page.locator("svg.heatmap rect.cell.fail").first
    cell.scroll_into_view_if_needed()
    cell.click()
    assert page.locator("#details").is_visible()
    assert "NoMaxShift" in page.locator("#details-title").inner_text()
    # NaN where numbers are due: as red as any unexpected failure, and said so.
    assert cell.get_attribute("fill") == charts.FAIL_FILL
    assert "nan_unexpected" in page.locator("#details-rows").inner_text()
    page.locator("#details-anchor").click()
    failure = page.locator("details.failure.fail").first
    assert failure.get_attribute("open") is not None
    assert "softmax_suite.backends.registry" in failure.locator("pre.snippet").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-failure.png"))
    page.goto(report.as_uri())
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert shown.errors == [] and shown.outside() == []


def test_a_hostile_results_file_runs_no_script(browser, tmp_path: Path) -> None:
    # Names and messages made of markup: in a browser nothing runs (no alert dialog) and the
    # text shows as text.
    results = [accuracy(backend=HOSTILE, case=HOSTILE, status="fail", max_ulp=9.0, message=HOSTILE),
               accuracy(backend=HOSTILE, status="error", max_ulp=None, message="</script>" + HOSTILE)]
    path = tmp_path / "hostile.html"
    html.write_report([{**HEADER, "command": [HOSTILE]}], results, path, reproducer=snippet)
    shown = Page(browser, path)
    open_heatmaps(shown.page)
    shown.page.locator("svg.heatmap rect.cell").first.click()
    assert shown.dialogs == [] and shown.errors == [] and shown.outside() == []
    assert HOSTILE in shown.page.locator("#details-title").inner_text()
    assert HOSTILE in shown.page.locator("#environment").inner_text()


# A made-up run of eight backends, each of its results chosen to show one of the report's past
# defects (issue 22): an unexpected NaN beside an unexpected 32 ULP, float64 known deviations of
# 1e15 ULP, invariants that do not apply, a backend without an op and one without two dtypes.
BACKENDS = ("array_api_strict", "example", "jax", "mlx", "numpy", "onnxruntime", "scipy", "torch")
# Largest error per backend, in ULP of a budget of 8: the ranking's order among backends that pass.
ULP = {"numpy": 0.5, "array_api_strict": 0.55, "scipy": 0.6, "example": 0.7, "onnxruntime": 0.8, "torch": 0.9,
       "jax": 1.0, "mlx": 1.2}
SPEED = {name: 0.1 * (i + 1) for i, name in enumerate(BACKENDS)}
DTYPES = ("float16", "bfloat16", "float32", "float64")
OPS = ("softmax", "log_softmax", "logsumexp", "softmax_vjp")
CASES = ("glossary", "random_n2", "nan", "equal_large", "long_random_n65k", "empty")
MLX_FLOAT64 = "mlx computes float64 exp in float32"
JAX_LOG = "log_softmax is computed as (x - max) - log(sum)"


def offered(backend: str, op: str, dtype: str) -> bool:
    return not (backend == "scipy" and op == "softmax_vjp") and not (
        backend == "array_api_strict" and dtype in ("float16", "bfloat16"))


def made_up(backend: str, dtype: str, op: str, case: str) -> dict:
    ulp = ULP[backend]
    extra: dict = {"bound": {"budget_ulp": 8.0, "ratio": ulp / 8}}
    if op == "softmax_vjp":
        extra["cotangent"] = "normal"
    if (backend, dtype, op, case) == ("torch", "float16", "softmax", "nan"):
        # NaN where numbers are due: outside the ULP statistics, whose largest is then 0.5.
        extra.update(status="fail", failure="semantic", semantic={"nan_unexpected": 3},
                     message="3 NaN where the policy wants numbers")
    elif (backend, dtype, op, case) == ("mlx", "float32", "softmax", "equal_large"):
        ulp = 40.0
        extra.update(status="fail", failure="accuracy", bound={"budget_ulp": 8.0, "ratio": 4.0},
                     message="32 ULP at index [2, 0] exceeds its budget of 8 ULP",
                     metrics={"max_ulp": 40.0, "worst": {"ulp": 32.0, "index": [2, 0]},
                              "ulp_histogram": [4]})
    elif backend == "mlx" and dtype == "float64" and case != "empty":
        ulp = 1e15
        extra.update(status="known_failure", failure="accuracy", bound={"budget_ulp": 8.0, "ratio": 1.25e14},
                     known_deviation={"reason": MLX_FLOAT64}, message=f"known deviation: {MLX_FLOAT64}")
    elif (backend, op, dtype) == ("jax", "log_softmax", "float16") and case in ("random_n2", "equal_large"):
        ulp = 60.0
        extra.update(status="known_failure", failure="accuracy", bound={"budget_ulp": 8.0, "ratio": 7.5},
                     known_deviation={"reason": JAX_LOG}, message=f"known deviation: {JAX_LOG}")
    return accuracy(backend=backend, dtype=dtype, op=op, case=case, max_ulp=ulp, **extra)


def made_up_run(backends: tuple[str, ...]) -> tuple[dict, list[dict]]:
    results = [made_up(backend, dtype, op, case) for backend in backends for dtype in DTYPES for op in OPS
               for case in CASES if offered(backend, op, dtype)]
    # numpy's invariants: shift invariance held where it applies, and does not apply to "nan".
    results += [{**accuracy(case=case), "check": "invariants",
                 "invariants": {"shift_invariance": {"ok": None if case == "nan" else True}}}
                for case in CASES if "numpy" in backends]
    for backend in backends:
        for dtype in DTYPES:
            for op in OPS:
                if offered(backend, op, dtype):
                    timing = throughput(backend, 4096, SPEED[backend] * 10, 10.0)
                    results.append({**timing, "op": op, "dtype": dtype})
    capabilities = [{"backend": b, "device": "cpu", "op": op, "dtype": dtype,
                     "reason": f"{b} has no {op} in {dtype}"}
                    for b in backends for op in OPS for dtype in DTYPES if not offered(b, op, dtype)]
    header = {**HEADER, "capabilities": capabilities,
              "backends": {b: {"version": "1.0", "devices": ["cpu"], "absent_devices": {}} for b in backends}}
    return header, results


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, Path]:
    """The made-up run's report with all eight backends, and with numpy alone, by backend count."""
    folder = tmp_path_factory.mktemp("reports")
    made = {}
    for backends in (BACKENDS, ("numpy",)):
        header, results = made_up_run(backends)
        made[len(backends)] = html.write_report([header], results, folder / f"{len(backends)}.html")
    return made


def words_broken(page, selector: str) -> list[str]:
    """The words of these elements' text that the browser broke across two lines."""
    return page.evaluate("""selector => {
      const broken = [];
      for (const element of document.querySelectorAll(selector)) {
        const text = element.firstChild;
        let at = 0;
        for (const word of text.textContent.split(" ")) {
          const range = document.createRange();
          range.setStart(text, at);
          range.setEnd(text, at + word.length);
          const lines = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => r.top));
          if (lines.size > 1) { broken.push(word); }
          at += word.length + 1;
        }
      }
      return broken;
    }""", selector)


def boxes(page, selector: str) -> list[dict]:
    return page.evaluate("""selector => Array.from(document.querySelectorAll(selector), element => {
      const box = element.getBoundingClientRect();
      return {left: box.left, right: box.right, top: box.top, bottom: box.bottom};
    })""", selector)


def heatmap_fits(page, op: str) -> None:
    """Within one opened heatmap: dtype headings do not overlap, every column label is inside the picture."""
    svg = boxes(page, f"#heatmap-{op} svg.heatmap")[0]
    headings = boxes(page, f"#heatmap-{op} svg.heatmap text.heading")
    assert all(a["right"] <= b["left"] for a, b in itertools.pairwise(headings)), headings
    for label in boxes(page, f"#heatmap-{op} svg.heatmap text[transform]"):
        assert svg["left"] <= label["left"] and label["right"] <= svg["right"] + 0.5, (label, svg)
        assert svg["top"] <= label["top"], (label, svg)


def opened_at(browser, report: Path, width: int, name: str) -> Page:
    """The report opened at width, its first screen kept as test-artifacts/report-NAME-WIDTH.png;
    nothing overflows the page sideways (wide heatmaps scroll in their own box)."""
    shown = Page(browser, report, width)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shown.page.screenshot(path=str(ARTIFACTS / f"report-{name}-{width}.png"))
    assert shown.page.evaluate("document.documentElement.scrollWidth") <= width
    return shown


@pytest.mark.parametrize("width", [1400, 800])
def test_eight_backends_first_screen_and_defects(browser, reports, width: int) -> None:
    shown = opened_at(browser, reports[8], width, "8-backends")
    page = shown.page
    assert shown.errors == [] and shown.outside() == []

    # The verdict counts the unexpected only: the NaN and the 32 ULP; the 20 + 2 known deviations of
    # 2 entries are said apart, as not failing the run.
    assert page.locator("header.verdict h1").inner_text().startswith("FAIL")
    answer = page.locator("header.verdict .answer").inner_text()
    assert answer.startswith("2 unexpected failures or errors")
    assert "22 known deviations from 2 entries" in page.locator("header.verdict .counts").inner_text()

    # The first screen decides: float16's ranking is in view without scrolling. For softmax: the
    # six that pass everything by the budget they spare (their largest errors 0.5 .. 1.2 ULP), then
    # torch with its unexpected NaN (array_api_strict has no float16). The speed is beside each.
    card = page.locator("#choice-float16")
    assert card.bounding_box()["y"] + 120 < HEIGHT
    softmax = card.locator("tr", has=page.locator("th", has_text="softmax")).first
    assert [li.get_attribute("data-backend") for li in softmax.locator("li").all()] == [
        "numpy", "scipy", "example", "onnxruntime", "jax", "mlx", "torch"]
    torch = softmax.locator("li[data-backend='torch']")
    assert torch.get_attribute("class") == "fail" and "✗ 1" in torch.inner_text()
    assert "softmax nan: 3 x nan_unexpected" in torch.inner_text()
    assert softmax.locator("li[data-backend='numpy'] .speed").inner_text() == "0.5"
    # jax's two known log_softmax deviations are marked, and link to their entry.
    log_softmax = card.locator("tr", has=page.locator("th", has_text="log_softmax")).first
    jax = log_softmax.locator("li[data-backend='jax']")
    mark = jax.locator("a.mark.known")
    assert jax.get_attribute("class") == "known" and mark.inner_text() == "⚑ 2"
    # An op a backend lacks is named, not drawn.
    vjp = card.locator("tr", has=page.locator("th", has_text="softmax_vjp")).first
    assert "scipy" not in vjp.locator("ol").inner_text() and "not offered: scipy" in vjp.inner_text()
    assert page.locator("#choice-float16 .absent", has_text="array_api_strict").count() == 1

    # Known deviations: one line per entry with its reason and count, not one per result.
    groups = page.locator("details.deviation")
    assert groups.count() == 2
    assert groups.nth(0).locator(".count").inner_text() == "20 results"
    assert MLX_FLOAT64 in groups.nth(0).locator(".reason").inner_text()
    assert page.locator("#known").bounding_box()["height"] < 400
    mark.click()  # opens jax's entry and draws its two results
    assert groups.nth(1).get_attribute("open") is not None
    groups.nth(1).locator("details.failure").nth(1).wait_for()
    assert groups.nth(1).locator("details.failure").count() == 2

    # Heatmaps are drawn when opened: none at first.
    assert page.locator("svg.heatmap rect.cell").count() == 0
    open_heatmaps(page)
    # Honest colours: the NaN failure (largest finite error 0.5 ULP) is as red as the 32 ULP one.
    fails = page.locator("#heatmap-softmax rect.cell.fail")
    assert fails.count() == 2
    assert {fails.nth(i).get_attribute("fill") for i in range(2)} == {charts.FAIL_FILL}
    # No column for scipy where it has no op.
    labels = page.locator("#heatmap-softmax_vjp svg text[transform]").all_text_contents()
    assert "scipy/cpu" not in labels and "numpy/cpu" in labels
    assert "scipy/cpu" in page.locator("#heatmap-softmax svg text[transform]").all_text_contents()
    for op in OPS:
        heatmap_fits(page, op)

    # Invariants that do not apply are grey, not broken: numpy's row has no pink cell.
    numpy_row = page.locator("table.invariants tr", has=page.locator("th", has_text="numpy/cpu"))
    assert numpy_row.locator("td.differs").count() == 0
    assert numpy_row.locator("td.agrees").inner_text() == "5/5 (1 n/a)"

    # The scatter's error axis ends near the unexpected and passing errors (40 ULP), not at the
    # known deviations' 1e15.
    ticks = [float(t) for t in page.locator("svg.scatter text[text-anchor='end']").all_text_contents()]
    assert max(ticks) <= 100

    # One result, two "worst" numbers, each labelled: mlx's largest error (40 ULP) and its element
    # worst for its budget (32 ULP, 4x); labels break between words only.
    cell = page.locator("#heatmap-softmax rect.cell.fail", has=page.locator("title", has_text="mlx/cpu"))
    cell.scroll_into_view_if_needed()
    cell.click()
    rows = dict(zip(page.locator("#details-rows th").all_inner_texts(),
                    page.locator("#details-rows td").all_inner_texts(), strict=True))
    assert rows[html.LARGEST] == "40" and rows[html.WORST_FOR_BUDGET] == "[2, 0]"
    assert rows["its error (ULP)"] == "32" and rows["its error / budget"] == "4"
    assert rows["message"].startswith("32 ULP")
    assert words_broken(page, "#details-rows th") == []
    page.screenshot(path=str(ARTIFACTS / f"report-8-backends-{width}-details.png"))
    assert shown.errors == [] and shown.outside() == []


@pytest.mark.parametrize("width", [1400, 800])
def test_one_backend(browser, reports, width: int) -> None:
    shown = opened_at(browser, reports[1], width, "1-backend")
    page = shown.page
    assert page.locator("header.verdict h1").inner_text().startswith("PASS")
    assert page.locator("#choice-float16 li").count() == len(OPS)
    # One column per panel: headings apart, labels whole, in every heatmap.
    open_heatmaps(page)
    for op in OPS:
        heatmap_fits(page, op)
    page.locator("#heatmap-softmax").scroll_into_view_if_needed()
    page.locator("#heatmap-softmax rect.cell").first.click()
    assert words_broken(page, "#details-rows th") == []
    page.screenshot(path=str(ARTIFACTS / f"report-1-backend-{width}-heatmap.png"))
    assert shown.errors == [] and shown.outside() == []


@pytest.fixture(scope="module")
def attention_report(tmp_path_factory) -> Path:
    # numpy (declares "nan") and a model of a fused kernel with the max taken before the mask
    # (declares "zero"; its logsumexp of a fully masked row is NaN, not -inf): float32.
    out = tmp_path_factory.mktemp("attention")
    done = subprocess.run(
        [sys.executable, "-m", "softmax_suite.runner.cli", "run", "--backend",
         "numpy,tests.online_softmax:MaxBeforeMask", "--case", "attention_fully_masked,online_tile_aligned",
         "--dtype", "float32", "--throughput", "off", "--out", str(out), "-n", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "report.html"


@pytest.mark.parametrize("width", [1400, 800])
def test_the_attention_section_shows_conventions_and_cases(browser, attention_report, width: int) -> None:
    shown = opened_at(browser, attention_report, width, "attention")
    page = shown.page
    section = page.locator("#attention")
    section.scroll_into_view_if_needed()
    section.screenshot(path=str(ARTIFACTS / f"report-attention-section-{width}.png"))
    rows = {row.locator("th").inner_text(): row for row in section.locator("table.conventions tr").all()[1:]}
    assert set(rows) == {"numpy", "online-max-before-mask"}
    numpy = rows["numpy"].locator("td").all_inner_texts()
    assert numpy[0] == "nan" and "softmax: NaN" in numpy[1] and "logsumexp: -inf" in numpy[1]
    assert rows["numpy"].locator("span.differs").count() == 0
    planted = rows["online-max-before-mask"]
    assert planted.locator("td").first.inner_text() == "zero"
    assert planted.locator("span.differs").all_inner_texts() == ["logsumexp: NaN"]
    # The cases by backend: numpy passes both, the planted kernel fails both.
    cells = section.locator("table.attention td")
    assert cells.count() == 4
    assert [c.get_attribute("class") for c in cells.all()] == ["pass", "fail", "pass", "fail"]
    assert "2 rows fully masked" in section.locator("table.attention").inner_text()
    assert shown.errors == []


@pytest.fixture(scope="module")
def loss_report(tmp_path_factory) -> Path:
    # torch's cross_entropy and its VJP on four loss cases, beside a loss computed in float64 and
    # rounded once (tests.test_loss_reports.ExactLoss, no VJP): torch's float16 mean over a 128k
    # vocabulary is inf (a scalar result), its per-row losses of confident rows -0.0. With no known
    # deviations (the catalogue's file lists these): unexpected failures, shown open.
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("loss")
    (out / "none.toml").write_text("")
    (out / "pyproject.toml").write_text('[tool.softmax-suite]\nknown_deviations = "none.toml"\n')
    done = subprocess.run(
        [sys.executable, "-m", "softmax_suite.runner.cli", "run", "--backend",
         "torch,tests.test_loss_reports:ExactLoss", "--op", "cross_entropy,cross_entropy_vjp",
         "--case", "vocab_128k,loss_confident_correct,loss_ignore_negative,loss_weights",
         "--dtype", "float16,float32", "--throughput", "off", "--out", str(out), "-n", "0",
         "--", "--suite-config", str(out / "pyproject.toml")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cross_entropy vocab_128k: 1 x inf_vs_finite" in done.stdout
    return out / "report.html"


def details_rows(page) -> dict[str, str]:
    return dict(zip(page.locator("#details-rows th").all_inner_texts(),
                    page.locator("#details-rows td").all_inner_texts(), strict=True))


@pytest.mark.parametrize("width", [1400, 800])
def test_a_report_with_loss_results(browser, loss_report, width: int) -> None:
    shown = opened_at(browser, loss_report, width, "loss")
    page = shown.page
    assert shown.errors == [] and shown.outside() == []
    assert page.locator("header.verdict h1").inner_text().startswith("FAIL")
    # The ranking has a row per loss op, torch's failure named in it.
    card = page.locator("#choice-float16")
    assert "cross_entropy vocab_128k: 1 x inf_vs_finite" in card.inner_text()

    # The scalar loss that overflowed: open on the first screen's list of failures, with what its loss
    # was, the reproducer and the command that re-runs its test.
    test = "suites/test_forward.py::test_cross_entropy[torch-cpu-float16-vocab_128k]"
    failure = page.locator("details.failure.fail", has=page.locator("summary code", has_text=test))
    assert failure.count() == 1 and failure.get_attribute("open") is not None
    failure.scroll_into_view_if_needed()
    assert failure.is_visible() and failure.bounding_box()["x"] + failure.bounding_box()["width"] <= width
    assert "· loss mean over 2 rows" in failure.locator("summary").inner_text()
    rerun = f"python -m pytest '{test}' --softmax-suite-backend torch"
    assert failure.locator("code.command").inner_text() == rerun
    assert "#   loss       'mean over 2 rows'" in failure.locator("pre.snippet").inner_text()
    failure.screenshot(path=str(ARTIFACTS / f"report-loss-failure-{width}.png"))

    # Heatmaps of both loss ops; a click on a cell explains it with its loss. A scalar loss's worst
    # element is the loss itself.
    open_heatmaps(page)
    for op in ("cross_entropy", "cross_entropy_vjp"):
        heatmap_fits(page, op)
    def cell(title: str):
        return page.locator("#heatmap-cross_entropy rect.cell", has=page.locator("title", has_text=title))

    passed = cell("exact-loss/cpu cross_entropy float16 vocab_128k")
    passed.scroll_into_view_if_needed()
    passed.click()
    rows = details_rows(page)
    assert rows["status"] == "pass" and rows["loss"] == "mean over 2 rows"
    assert rows[html.WORST_FOR_BUDGET] == "[] (the loss: one value)"
    failed = cell("torch/cpu cross_entropy float16 vocab_128k")
    assert failed.get_attribute("fill") == charts.FAIL_FILL
    failed.click()
    assert details_rows(page)["semantic differences"] == "inf_vs_finite: 1"
    cell("torch/cpu cross_entropy float32 loss_ignore_negative").click()
    assert details_rows(page)["loss"] == "mean over 24 rows, ignore_index -1 (8 rows ignored)"
    assert words_broken(page, "#details-rows th") == []
    page.screenshot(path=str(ARTIFACTS / f"report-loss-{width}-details.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert shown.errors == [] and shown.outside() == []


@pytest.fixture(scope="module")
def ladder_report(tmp_path_factory) -> Path:
    # tests/test_ladder_report.py's made-up run: seven backends' length ladders in four dtypes, and
    # every float16 and bfloat16 bit pattern of three backends.
    from tests.test_ladder_report import made_up_ladder, made_up_patterns

    path = tmp_path_factory.mktemp("ladder") / "report.html"
    return html.write_report([HEADER], [*made_up_ladder(), *made_up_patterns()], path, reproducer=snippet)


NNBSP = "\u202f"


@pytest.mark.parametrize("width", [1400, 800])
def test_the_length_ladder_and_the_bit_patterns(browser, ladder_report, width: int) -> None:
    shown = opened_at(browser, ladder_report, width, "ladder")
    page = shown.page
    page.locator("nav a[href='#ladder']").click()
    section = page.locator("#ladder")
    assert section.locator("ul.ladder-headline li").count() == 4
    # A matrix per backend (array_api_strict measured in two dtypes only), each inside the window,
    # two side by side where there is room; no cell's text cut.
    tables = boxes(page, "#ladder table.ladder")
    assert len(tables) == 7 and all(t["left"] >= 0 and t["right"] <= width for t in tables)
    assert (tables[0]["top"] == tables[1]["top"]) == (width == 1400)
    cut = page.evaluate("""() => Array.from(document.querySelectorAll('#ladder td > span'),
        e => e.scrollWidth > e.clientWidth + 0.5 ? e.textContent : null).filter(Boolean)""")
    assert cut == []
    # torch's float16 logsumexp: right up to 65 519, wrong at 65 520, the sentence on hover.
    cell = section.locator("td[title^='float16 logsumexp on torch/cpu']")
    assert cell.get_attribute("class") == "fail"
    assert cell.inner_text().split("\n") == [f"≤ 65{NNBSP}519", f"✗ 65{NNBSP}520"]
    assert cell.get_attribute("title") == (f"float16 logsumexp on torch/cpu: safe up to 65{NNBSP}519, "
                                           f"fails at 65{NNBSP}520 (uniform: -inf where 11.09)")
    assert cell.locator(".rungs i.fail").count() == 4 and cell.locator(".rungs i.pass").count() == 8
    cell.scroll_into_view_if_needed()
    cell.hover()
    hovered = "td[title^='float16 logsumexp on torch/cpu']"
    assert page.evaluate(f'getComputedStyle(document.querySelector("{hovered}")).outlineStyle') == "solid"
    # A click explains it.
    cell.click()
    assert page.locator("#details").is_visible()
    assert page.locator("#details-title").inner_text() == "float16 · logsumexp · torch/cpu: how long a row"
    rows = details_rows(page)
    assert rows["fails at"] == f"65{NNBSP}520" and rows["wrong there"] == "uniform: -inf where 11.09"
    assert words_broken(page, "#details-rows th") == []
    page.screenshot(path=str(ARTIFACTS / f"report-ladder-{width}-details.png"))
    page.keyboard.press("Escape")
    # Not monotone: onnxruntime's float32 logsumexp is right again at 2^17.
    again = section.locator("td[title^='float32 logsumexp on onnxruntime/cpu']")
    assert again.locator(".again").inner_text() == "↺"
    section.screenshot(path=str(ARTIFACTS / f"report-ladder-section-{width}.png"))

    # The bit patterns: float16's charts drawn open, bfloat16's when opened.
    page.locator("nav a[href='#patterns']").click()
    float16 = page.locator("#patterns-float16")
    float16.locator("svg.binades").first.wait_for()
    assert float16.locator("svg.binades").count() == 12
    assert all(box["right"] <= width for box in boxes(page, "#patterns-float16 figure"))
    # torch's softmax on [0, x] is over budget from gap 2^12: four ringed points in four shaded
    # columns, its NaN at 2^15 marked; the hover column of 2^12 holds every backend's numbers.
    softmax = float16.locator("svg.binades").first
    assert softmax.locator("circle.point.over").count() == 4
    assert softmax.locator("rect.over-budget").count() == 4 and softmax.locator("path.semantic").count() == 1
    column = softmax.locator("rect.bin", has=page.locator("title", has_text="2¹² ≤ gap < 2¹³"))
    text = column.locator("title").text_content()
    assert "torch/cpu: max 1.6e+03 ULP, 2 of its budget, OVER BUDGET, 2048 patterns" in text
    assert "numpy/cpu: max 0.3 ULP, 0.1 of its budget, 2048 patterns" in text
    column.hover()
    assert "over budget at 2¹² ≤ gap < 2¹⁶" in float16.locator("figcaption").first.inner_text()
    page.locator("#patterns").screenshot(path=str(ARTIFACTS / f"report-patterns-section-{width}.png"))
    bfloat16 = page.locator("#patterns-bfloat16")
    assert bfloat16.locator("svg.binades").count() == 0
    bfloat16.locator("summary").click()
    bfloat16.locator("svg.binades").first.wait_for()
    assert bfloat16.locator("svg.binades").count() == 6
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert shown.errors == [] and shown.outside() == []
