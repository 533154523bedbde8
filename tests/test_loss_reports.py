"""The loss ops (cross_entropy and its VJP) through the parts that show a result: the reproducer scripts
(softmax_suite.runner.reproduce and what they print, runner.explain), the HTML report, the terminal
verdict and the gate. Each snippet runs alone in a fresh Python: it rebuilds the logits, the targets,
the class weights and the options, calls the backend with them, prints the targets and the exact value
beside what came back, and exits 1 while the backend fails, 0 once it passes.

ExactLoss below is a cross_entropy computed in float64 and rounded once: the fixed backend a failing
record is re-run with, and (moved PLANTED_LOSS_ERROR ULPs up) the regression the gate must catch."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends.registry import load
from softmax_suite.oracle.budget import BUDGET_FORMULAS
from softmax_suite.reports import html
from softmax_suite.reports.results import jsonable, loss_words
from softmax_suite.reports.semantics import format_semantics, semantics_table
from softmax_suite.reports.verdict import format_verdict
from softmax_suite.runner.config import Settings
from softmax_suite.runner.reproduce import ReproduceError, snippet
from softmax_suite.suites.accuracy import Target, run

REPO = Path(__file__).resolve().parents[1]
EXACT = "tests.test_loss_reports:ExactLoss"


class ExactLoss:
    """cross_entropy without options, in float64 and rounded once to x's dtype, then moved
    PLANTED_LOSS_ERROR ULPs up (0 by default: within every budget)."""

    name = "exact-loss"
    dtypes = ("float16", "float32")

    def cross_entropy(self, x: np.ndarray, axis: int, target: np.ndarray, reduction: str) -> np.ndarray:
        wide = np.moveaxis(x.astype(np.float64), axis, -1)
        rows = np.arange(wide.shape[0])
        picked = wide[rows, target]
        top = wide.max(axis=-1)
        with np.errstate(all="ignore"):
            # Where the target leads, log(1 + sum of the others' e^(x_j - x_t)) keeps a tiny loss's digits.
            others = np.exp(wide - picked[:, None])
            others[rows, target] = 0.0
            leading = np.log1p(others.sum(axis=-1))
            trailing = top - picked + np.log(np.exp(wide - top[:, None]).sum(axis=-1))
        losses = np.where(picked >= top, leading, trailing)
        value = {"none": losses, "mean": losses.mean(), "sum": losses.sum()}[reduction]
        y = np.asarray(value).astype(x.dtype)
        for _ in range(int(os.environ.get("PLANTED_LOSS_ERROR", "0"))):
            y = np.nextafter(y, np.asarray(np.inf, dtype=y.dtype))
        return y


@functools.cache
def record(backend: str, op: str, dtype: str, case: str, cotangent: str | None = None) -> dict:
    """The real path (case, backend, oracle, judge), through JSON as a results file holds it."""
    target = Target(op, backend, "cpu", dtype, case, cotangent)
    result = run(target, load(backend), Settings())
    test = "test_gradients" if cotangent else "test_forward"
    ident = f"{backend}-cpu-{dtype}-{case}" + (f"-{cotangent}" if cotangent else "")
    return json.loads(json.dumps(jsonable({**result, "nodeid": f"suites/{test}.py::test_{op}[{ident}]"})))


def copy(result: dict, **changes: object) -> dict:
    return {**json.loads(json.dumps(result)), **changes}


def execute(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


def flat(text: str) -> str:
    """The text with its wrapped lines joined: explain wraps long lines at 100 characters."""
    return " ".join(text.split())


def has_row(stdout: str, *cells: str) -> bool:
    line = r"^ +" + r" +".join(map(re.escape, cells)) + r"( |$)"
    return re.search(line, stdout, flags=re.MULTILINE) is not None


@pytest.fixture(scope="module")
def torch_backend():
    pytest.importorskip("torch")
    return "torch"


def test_a_reduced_loss_that_overflows_is_reproduced(torch_backend) -> None:
    # torch's float16 cross_entropy on vocab_128k (2 rows of 128256 logits N(0, 0.02^2), mean): the
    # sum of 128256 exponentials of about 1 passes float16's 65504, so the loss is inf where the exact
    # mean is 11.76. One value, of no row: the input is shown by its rows of the largest losses, each
    # with its target; 513 KB of logits are rebuilt with the catalogue, the targets digest-checked.
    result = record(torch_backend, "cross_entropy", "float16", "vocab_128k")
    assert result["status"] == "fail" and result["semantic"] == {"inf_vs_finite": 1}
    assert result["loss"] == {"reduction": "mean", "rows": 2}
    code = snippet(result)
    assert "x = CASES[CASE].build(DTYPE)" in code and 'LOSS_ARGUMENTS["target"]' in code
    assert "#   loss       'mean over 2 rows'" in code and "REDUCTION = 'mean'" in code
    assert 'OPTIONS = {"target": TARGET, "reduction": REDUCTION}' in code
    done = execute(code)
    assert done.returncode == 1, done.stdout + done.stderr
    stdout = done.stdout
    assert "input x: float16, shape (2, 128256), reduced along axis 1\n" in stdout
    assert "targets: 2 class indices (int64), one per row; reduction 'mean'\n" in stdout
    assert "target[:] = [8138, 60747]\n" in stdout
    assert "(a loss over 2 rows of 128256; shown: the rows of the largest losses, picked in float64)" \
        in stdout
    assert "target[0] = 8138, its logit x[0, 8138] = -0.0068359375 (0x9f00)\n" in stdout
    assert "target[1] = 60747, its logit x[1, 60747] = 0.0031986236572265625 (0x1a8d)\n" in stdout
    assert f"output: the same bits as the run (sha256 {result['output_sha256']})\n" in stdout
    # What came back beside the exact value (11.76 rounds to float16 11.765625), its error and budget.
    text = flat(stdout)
    assert re.search(r"cross_entropy\(x, reduction='mean'\): got inf \(0x7c00\), exact in float16 "
                     r"11\.765625 \(0x49e2\), error inf_vs_finite ULP, budget [0-9.]+ ULP exact "
                     r"11\.76368538227924 ", text)
    assert flat(BUDGET_FORMULAS["cross_entropy"]) in text
    assert stdout.endswith(f"still fails: {result['message']}\n")

    # The same record re-run on a correct loss (the run's backend given as another spec): it passes.
    fixed = execute(snippet(copy(result, backend="exact-loss", backend_spec=EXACT)))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert re.search(r"got 11\.765625 \(0x49e2\), exact in float16 11\.765625 \(0x49e2\), error 0\.\d+ ULP",
                     flat(fixed.stdout))
    assert re.search(r"^the loss: 0\.\d+ ULP, its budget [0-9.]+ ULP \(the largest error for its budget\)\n"
                     r"  got 11\.765625 \(0x49e2\), exact 11\.76368538227924, ", fixed.stdout,
                     flags=re.MULTILINE)
    assert fixed.stdout.endswith("passes now: every element within its error budget\n")


def test_a_per_row_loss_shows_each_rows_target(torch_backend) -> None:
    # torch's float32 cross_entropy on loss_confident_correct (16 rows of 8, the target leading by 1 to
    # past where exp rounds to 0, per row): -0.0 for a loss of 1.15e-9, 1.04e7 ULP off. Embedded.
    result = record(torch_backend, "cross_entropy", "float32", "loss_confident_correct")
    assert result["status"] == "fail" and result["metrics"]["worst"]["index"] == [3]
    code = snippet(result)
    assert "X_BITS = (" in code and "TARGET_BITS = (" in code and "CASES" not in code
    assert "TARGET = unpack(TARGET_BITS, (16,), np.int64)" in code
    done = execute(code)
    assert done.returncode == 1, done.stdout + done.stderr
    stdout = done.stdout
    assert stdout.startswith("reproducing cross_entropy of 'torch' on cpu, float32, case "
                             "'loss_confident_correct'\nthe run: fail, worst 1.04e+07 ULP at index [3] "
                             "(got -0.0, exact 1.1544111682013179e-09)\n")
    assert "targets: 16 class indices (int64), one per row; reduction 'none'\n" in stdout
    assert "x[3, :] = [0.0, -22.529457092285156, " in stdout
    assert "target[3] = 0, its logit x[3, 0] = 0.0\n" in stdout
    assert "cross_entropy(x[3, :]): got -0.0, exact in float32 1.1544111222505649e-09, error 1.04e+07 ULP, " \
           "budget 23.14 ULP" in flat(stdout)
    assert "worst element [3]: 1.04e+07 ULP, its budget 23.14 ULP" in stdout
    assert stdout.endswith(f"still fails: {result['message']}\n")
    fixed = execute(snippet(copy(result, backend="exact-loss", backend_spec=EXACT)))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.endswith("passes now: every element within its error budget\n")


def test_the_gradient_of_a_reduced_loss_takes_one_cotangent(torch_backend) -> None:
    # cross_entropy_vjp of a mean loss takes one value as its cotangent: the snippet builds that one
    # (before, the whole row of them, whose digest was not the run's: no snippet at all). torch's
    # float16 gradient on vocab_128k is 0 where the exact is 4.3e-6 (a float16 subnormal).
    result = record(torch_backend, "cross_entropy_vjp", "float16", "vocab_128k", "ones")
    assert result["status"] == "fail" and result["metrics"]["worst"]["index"] == [1, 115923]
    code = snippet(result)
    assert "g = cotangent_of(OP, *build_cotangents(" in code
    done = execute(code)
    assert done.returncode == 1, done.stdout + done.stderr
    stdout = done.stdout
    assert "g = 1.0 (0x3c00)  (the cotangent of the reduced loss)\n" in stdout
    assert "cross_entropy_vjp along x[1, :], cotangent g = 1.0 (0x3c00):\n" in stdout
    # The target's column (its gradient (p - 1) / 2) and the worst element's, each marked.
    assert has_row(stdout, "60747", "0.0031986236572265625 (0x1a8d)", "-0.5 (0xb800)", "-0.5 (0xb800)")
    assert re.search(r"^  60747 .*<- target$", stdout, flags=re.MULTILINE)
    assert has_row(stdout, "115923", "0.095703125 (0x2e20)", "0.0 (0x0000)", "4.291534423828125e-06 (0x0048)",
                   "71.97", "5.015", "<- worst")
    assert flat(BUDGET_FORMULAS["cross_entropy_vjp"]) in flat(stdout)
    assert stdout.endswith(f"still fails: {result['message']}\n")


# Passing torch results, one per thing a loss call carries: class weights (and a scalar loss),
# an ignore_index, label smoothing, a sum's random cotangent, a per-row loss's; each embedded or
# rebuilt with the catalogue (the arrays of either path, and both for the weights).
PASSING = {
    "weights-embedded": (("cross_entropy", "float32", "loss_weights", None), True),
    "weights-vjp-catalogue": (("cross_entropy_vjp", "float32", "loss_weights", "random"), False),
    "ignore-catalogue": (("cross_entropy", "float32", "loss_ignore_negative", None), False),
    "smoothing-vjp-embedded": (("cross_entropy_vjp", "float16", "loss_smoothing", "ones"), True),
    "sum-vjp-catalogue": (("cross_entropy_vjp", "float32", "loss_sum", "random"), False),
    "per-row-vjp-embedded": (("cross_entropy_vjp", "float32", "loss_confident_wrong", "random"), True),
}


@pytest.mark.parametrize(("question", "embed"), PASSING.values(), ids=PASSING.keys())
def test_a_passing_loss_result_reproduces_its_bits(torch_backend, question: tuple, embed: bool) -> None:
    result = record(torch_backend, *question)
    assert result["status"] == "pass", result["message"]
    code = snippet(result, 64 * 1024 if embed else 0)
    assert ("TARGET_BITS = (" in code) == embed and ("LOSS_ARGUMENTS" in code) != embed
    assert ("WEIGHT_SHA256" in code) == ("zero_weights" in result["loss"])
    done = execute(code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"output: the same bits as the run (sha256 {result['output_sha256']})\n" in done.stdout
    assert done.stdout.endswith("passes now: every element within its error budget\n")
    loss, text = result["loss"], flat(done.stdout)
    if "zero_weights" in loss:
        assert f"class weights: 30 in float32, {loss['zero_weights']} of them 0" in text
        assert re.search(r"its weight weight\[\d+\] = ", done.stdout)
    if "ignore_index" in loss:
        assert f"ignore_index -1 ({loss['ignored_rows']} rows ignored)" in text
    if "label_smoothing" in loss:
        assert "label_smoothing 0.1" in text


def test_other_targets_exit_2(torch_backend) -> None:
    # Targets edited in the script are not the run's: it says so before any call.
    result = record(torch_backend, "cross_entropy", "float32", "loss_weights")
    code = snippet(result)
    digest = re.search(r"^TARGET_SHA256 = '([0-9a-f]{64})'$", code, flags=re.MULTILINE)[1]
    done = execute(code.replace(digest, "0" * 64))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("cannot reproduce here: the rebuilt targets is not the run's")


def test_what_cannot_be_rebuilt_is_refused(torch_backend) -> None:
    result = record(torch_backend, "cross_entropy", "float32", "loss_weights")
    with pytest.raises(ReproduceError, match=r"loss is now .*'zero_weights': 10.*the run's was .*"
                                              r"'zero_weights': 3.*re-run"):
        snippet(copy(result, loss={**result["loss"], "zero_weights": 3}))
    with pytest.raises(ReproduceError, match=r"cross_entropy is asked on the loss cases only: the record "
                                              r"pairs cross_entropy with case 'glossary'"):
        snippet(copy(result, case="glossary", shape=[4], input_sha256=None))
    with pytest.raises(ReproduceError, match=r"loss_weights is a loss case"):
        snippet(copy(result, op="softmax"))


def loss_run(backend: str) -> list[dict]:
    return [record(backend, "cross_entropy", "float16", "vocab_128k"),
            record(backend, "cross_entropy", "float32", "loss_confident_correct"),
            record(backend, "cross_entropy", "float32", "loss_ignore_negative"),
            record(backend, "cross_entropy_vjp", "float16", "vocab_128k", "ones"),
            record(backend, "cross_entropy_vjp", "float32", "loss_weights", "random")]


def test_the_report_shows_loss_failures_with_their_loss(torch_backend) -> None:
    results = loss_run(torch_backend)
    header = {"kind": "run", "command": ["softmax-suite", "run"],
              "backends": {"torch": {"version": "2", "devices": ["cpu"], "absent_devices": {}}}}
    model = html.build([header], results, reproducer=snippet)
    failures = {f["nodeid"]: f for f in model["failures"]}
    assert len(failures) == 3
    vocab = failures["suites/test_forward.py::test_cross_entropy[torch-cpu-float16-vocab_128k]"]
    assert vocab["what"] == "cross_entropy vocab_128k: 1 x inf_vs_finite · loss mean over 2 rows"
    assert vocab["snippet"] and vocab["why_no_snippet"] is None
    assert vocab["rerun"].endswith("--softmax-suite-backend torch")
    per_row = failures["suites/test_forward.py::test_cross_entropy[torch-cpu-float32-loss_confident_correct]"]
    assert per_row["what"].endswith("· loss per row (16 rows)")
    assert [h["op"] for h in model["heatmaps"]] == ["cross_entropy", "cross_entropy_vjp"]
    # The click-to-explain table: the loss's summary, and a scalar's worst index said in words.
    labels = model["details"]["schemas"]["accuracy"]
    entries = {entry[1]: dict(zip(labels, entry[2], strict=True)) for entry in model["details"]["entries"]
               if entry[0] == "accuracy"}
    ignore = entries["cross_entropy · float32 · loss_ignore_negative · torch/cpu"]
    assert ignore["loss"] == "mean over 24 rows, ignore_index -1 (8 rows ignored)"
    assert ignore[html.WORST_FOR_BUDGET] == "[] (the loss: one value)"
    assert entries["cross_entropy_vjp · float32 · loss_weights / random · torch/cpu"]["loss"] == \
        "mean over 48 rows, class weights (10 zero)"
    page = html.render(model)
    assert "loss mean over 2 rows" in page and "loss per row (16 rows)" in page


def test_loss_words() -> None:
    assert loss_words(None) is None and loss_words({}) is None and loss_words("mean") is None
    assert loss_words({"reduction": "sum", "rows": 32}) == "sum over 32 rows"
    assert loss_words({"reduction": "none", "rows": 5, "label_smoothing": 0.1}) == \
        "per row (5 rows), label_smoothing 0.1"


def test_the_terminal_tables_name_the_loss_ops(torch_backend) -> None:
    results = loss_run(torch_backend)
    verdict = format_verdict(results)
    assert verdict.startswith("verdict: 3 unexpected (failed or erred); 2 passed, 0 known failures "
                              "(5 results)")
    assert "cross_entropy vocab_128k: 1 x inf_vs_finite" in verdict
    assert "cross_entropy loss_confident_correct: 1e+07 ulp (budget 23)" in verdict
    # The special-value grid's columns are the op table's short names.
    special = [record(torch_backend, op, "float32", "loss_special", kind)
               for op, kind in (("cross_entropy", None), ("cross_entropy_vjp", "ones"))]
    grid = format_semantics(semantics_table(special))
    assert grid.splitlines()[1].split() == ["input", "ce", "ce_vjp"]
    assert "ce cross_entropy" in grid


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          timeout=600)


def exact_loss_run(out: Path, error: int) -> str:
    # A scalar loss (sum) and a per-row one; the forward op's accuracy only.
    done = cli("run", "--backend", EXACT, "--op", "cross_entropy", "--dtype", "float32",
               "--case", "loss_sum,loss_confident_correct", "--throughput", "off", "--out", str(out),
               "-n", "0", "--", "-k", "not invariants", env={"PLANTED_LOSS_ERROR": str(error)})
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return str(out / "results.jsonl")


def test_a_planted_loss_regression_fails_the_gate(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    before = exact_loss_run(tmp_path / "before", 0)
    saved = cli("baseline", "save", before, "-o", str(baseline))
    assert saved.returncode == 0, saved.stderr
    entries = json.loads(baseline.read_text())["entries"]
    assert {entries[f"accuracy/exact-loss/cpu/float32/cross_entropy/{case}"]["status"]
            for case in ("loss_sum", "loss_confident_correct")} == {"pass"}
    same = cli("gate", exact_loss_run(tmp_path / "same", 0), "--baseline", str(baseline))
    assert same.returncode == 0, same.stdout + same.stderr
    # 64 float32 ULPs up: both losses fail, each gated as a regression.
    worse = cli("gate", exact_loss_run(tmp_path / "worse", 64), "--baseline", str(baseline))
    assert worse.returncode == 1, worse.stdout + worse.stderr
    for case in ("loss_sum", "loss_confident_correct"):
        key = re.escape(f"accuracy/exact-loss/cpu/float32/cross_entropy/{case}")
        assert re.search(rf"FAIL +{key} +newly failing", worse.stdout), worse.stdout
        assert re.search(rf"{key} +accuracy regressed", worse.stdout), worse.stdout
