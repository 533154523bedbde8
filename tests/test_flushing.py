"""The flush-to-zero probe (suites.flushing): a backend gets the flush allowance only where it is
measured to flush, in the run that judges it, and the evidence reaches the header and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends.custom import load_spec
from softmax_suite.backends.registry import load
from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # float8: tests/test_float8.py
from softmax_suite.oracle import cache
from softmax_suite.runner.config import Settings
from softmax_suite.suites import flushing
from softmax_suite.suites.accuracy import call_backend, flush_evidence

REPO = Path(__file__).resolve().parents[1]
PROBED = ("softmax", "softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")


@pytest.mark.parametrize("name", DTYPES)
def test_the_probe_row_has_only_subnormal_outputs_besides_its_maximum(name):
    # exp(-d) for d from -emin ln2 + 0.5 to -(emin - p) ln2 - 1.5: from about 0.6 of the smallest
    # normal down to about 2.2 units of the smallest subnormal; nothing overflows or cancels.
    fmt = FORMATS[name]
    x = flushing.probe_row(fmt)[None]
    y = cache.reference("softmax", x, -1).rounded.astype(np.float64)[0]
    assert y[0] == 1.0
    assert np.all((y[1:] >= 2 * fmt.min_subnormal) & (y[1:] < fmt.min_normal))
    for op in PROBED[1:]:
        inputs = flushing.probe_inputs(op, fmt)
        g, g_row = (inputs[1], np.zeros(1, fmt.np_dtype)) if op != "logsumexp_vjp" \
            else (np.zeros_like(x), inputs[1])
        exact = cache.reference(op, x, -1, (g, g_row)).rounded.astype(np.float64)[0, 1:]
        assert np.all((exact != 0) & (np.abs(exact) < fmt.min_normal)), op  # all subnormal


def evidence(spec: str, dtype: str, op: str) -> dict:
    backend = load_spec(spec) if ":" in spec else load(spec)
    return flush_evidence(backend, "cpu", dtype, op, Settings())


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_keeps_subnormals_and_a_flushing_backend_is_measured_to_flush(dtype):
    for op in PROBED:
        kept = evidence("numpy", dtype, op)
        assert kept["flushes"] is False and kept["returned_zero"] == 0, (op, kept)
        flushed = evidence("tests.bad_softmax:FlushToZero", dtype, op)
        assert flushed["flushes"] is True and flushed["returned_zero"] == flushed["subnormal"] == 7, op
    # log_softmax and logsumexp take softmax's verdict (their subnormals come from log1p(t) only).
    assert evidence("tests.bad_softmax:FlushToZero", dtype, "logsumexp")["measured_on"] == "softmax"


def test_a_wrong_gradient_is_not_mistaken_for_a_flush():
    # g - y g drops y_j (sum(g) - g_j): with the probe's cotangent -m/4 at every probed entry it
    # returns -m/4 (1 - y_j), not 0: its log_softmax VJP is wrong, and judged without allowance.
    record = evidence("tests.bad_softmax:LogSoftmaxVjpTimesG", "float16", "log_softmax_vjp")
    assert record["flushes"] is False and record["returned_zero"] == 0
    assert record["softmax_flushes"] is False  # it has no softmax: nothing flushes its y


def test_a_backend_that_fails_the_probe_is_judged_strictly():
    backend = load_spec("tests.bad_softmax:Float64Upcast")

    def raising(op, inputs, shape):
        raise RuntimeError("device lost")

    record = flushing.probe(raising, "softmax", "float32")
    assert record == {"flushes": False, "probe": "softmax raised: device lost"}
    # A probe that runs through the suite's own call path measures the backend itself.
    ran = flushing.probe(lambda op, inputs, shape: call_backend(backend, op, "cpu", -1, inputs, shape),
                         "softmax", "float32")
    assert ran == {"flushes": False, "subnormal": 7, "returned_zero": 0}


def test_jax_flushes_on_the_cpu_except_in_float16():
    # Measured with jax 0.10: XLA's CPU kernels flush float32 and float64 (and bfloat16, computed in
    # float32) to zero; float16 is computed in float32 and rounded, which keeps its subnormals.
    pytest.importorskip("jax")
    verdicts = {dtype: evidence("jax", dtype, "softmax")["flushes"] for dtype in DTYPES}
    assert verdicts == {"float16": False, "bfloat16": True, "float32": True, "float64": True}


def test_the_run_header_and_the_report_carry_the_probe(tmp_path: Path):
    out = tmp_path / "out"
    flusher = "tests.bad_softmax:FlushToZero"
    done = subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli",
                           "run", "--backend", f"numpy,{flusher}",
                           "--case", "underflow_gaps", "--op", "softmax", "--dtype", "float32",
                           "--throughput", "off", "-n", "0", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    probe = lines[0]["flush_probe"]
    assert probe["numpy/cpu"]["float32"]["softmax"] == {"flushes": False, "subnormal": 7, "returned_zero": 0}
    assert probe[f"{flusher}/cpu"]["float32"]["softmax"]["flushes"] is True
    records = {r["backend"]: r for r in lines if r.get("kind") == "result" and r["check"] == "accuracy"}
    assert records["numpy"]["flushes"] is False and records[flusher]["flushes"] is True
    # The special-value table names it (in the results file; in the terminal with -v only).
    semantics = next(line["table"] for line in lines if line.get("name") == "semantics")
    assert semantics[f"{flusher}/cpu"]["flush_to_zero"] == ["float32"]
    html = (out / "report.html").read_text()
    assert "Flush-to-zero probe" in html
    assert "float32: flushes (softmax 7/7 subnormal results returned as 0)" in html
