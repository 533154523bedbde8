"""softmax_suite.runner.reproduce: each snippet, run alone in a fresh Python, rebuilds the run's input bits
and gets the run's output bits from the backend; hostile record strings stay inert; what cannot be rebuilt
is refused."""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from softmax_suite.backends.registry import load
from softmax_suite.reports.html import rerun_command
from softmax_suite.reports.results import jsonable
from softmax_suite.runner.config import Settings
from softmax_suite.runner.reproduce import EMBED_LIMIT_BYTES, ReproduceError, snippet
from softmax_suite.suites.accuracy import (
    Target,
    bits_digest,
    call_backend,
    case_cotangents,
    case_input,
    output_digest,
    run,
)
from softmax_suite.suites.cases import CASES

REPO = Path(__file__).resolve().parents[1]
NO_SHIFT = "tests.bad_softmax:NoMaxShift"
CORRECT = "tests.bad_softmax:Float64Upcast"


@functools.cache
def record(backend: str, op: str, dtype: str, case: str, cotangent: str | None = None) -> dict:
    """The real path (case, backend, oracle, judge), then through JSON as a results file holds it."""
    result = run(Target(op, backend, "cpu", dtype, case, cotangent), load(backend), Settings())
    nodeid = f"suites/test_forward.py::test_{op}[{backend}-cpu-{dtype}-{case}]"
    return json.loads(json.dumps(jsonable({**result, "nodeid": nodeid})))


def copy(result: dict, **changes: object) -> dict:
    return {**json.loads(json.dumps(result)), **changes}


def direct(backend: str, op: str, dtype: str, case: str, cotangent: str | None = None) -> dict:
    """A record made by hand from a direct backend call (no oracle: too slow for a big input), with
    the digests the suite would write."""
    x = case_input(case, dtype)
    inputs = [x]
    extra = {}
    if cotangent is not None:
        inputs.append(case_cotangents(case, cotangent, dtype)[1 if op == "logsumexp_vjp" else 0])
        extra = {"cotangent": cotangent, "cotangent_sha256": bits_digest(inputs[1])}
    expected = x.shape[:-1] if op == "logsumexp" else x.shape
    got = call_backend(load(backend), op, "cpu", CASES[case].axis, inputs, expected)
    return {"check": "accuracy", "op": op, "backend": backend, "device": "cpu", "dtype": dtype,
            "case": case, "axis": CASES[case].axis, "layout": CASES[case].layout, "shape": list(x.shape),
            "status": "pass", "message": "", "input_sha256": bits_digest(x),
            "output_sha256": output_digest(got), **extra}


def execute(code: str) -> subprocess.CompletedProcess:
    # From the checkout's root, as a user pastes it: tests.bad_softmax is importable from there.
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def assert_reproduces(code: str, result: dict) -> str:
    done = execute(code)
    assert done.returncode == 0, done.stderr
    assert f"output sha256:   {result['output_sha256']}\n" in done.stdout
    assert "the same bits as the run" in done.stdout
    return done.stdout


# One record per feature the snippet must rebuild; the oracle runs on small inputs only (about a second
# in all). The sizes decide embedding: glossary float16 is 8 bytes, random_n31_s3 bfloat16 3968 + 128
# (the per-row cotangent), strided float64 32000 (its buffer twice that, but only x's own bytes
# travel), transposed float32 19200 and random_n2 float32 2048 + 2048: all under 64 KiB.
EMBEDDED = {
    "float16": ("numpy", "softmax", "float16", "glossary", None),
    "bfloat16_logsumexp_vjp": ("torch", "logsumexp_vjp", "bfloat16", "random_n31_s3", "random"),
    "softmax_vjp": ("numpy", "softmax_vjp", "float32", "random_n2", "mixed"),
    "strided": ("numpy", "log_softmax", "float64", "strided", None),
    "transposed": ("numpy", "softmax", "float32", "transposed", None),
}


@pytest.mark.parametrize("question", EMBEDDED.values(), ids=EMBEDDED.keys())
def test_embedded_snippet_reproduces_the_output_bits(question: tuple) -> None:
    if question[0] == "torch":
        pytest.importorskip("torch")
    result = record(*question)
    code = snippet(result)
    assert "X_BITS = (" in code and "CASES" not in code
    assert ("G_BITS = (" in code) == (question[4] is not None)
    # The implicitly concatenated base64 literal: one quoted chunk per line, none over 100 characters.
    literal = re.findall(r'^    "[A-Za-z0-9+/=]*"$', code, flags=re.MULTILINE)
    assert literal and max(map(len, literal)) <= 100
    stdout = assert_reproduces(code, result)
    # Every record here was measured, so the worst element is printed, and the backend is deterministic.
    worst = result["metrics"]["worst"]
    assert f"got in the run:    {worst['got']!r}" in stdout
    assert f"got now:           {worst['got']!r}" in stdout


def test_snippet_rebuilds_the_case_layout() -> None:
    # Strides matter to some bugs: the strided case comes back as every other element of a wider buffer
    # and the transposed one in Fortran order, exactly as Case.build makes them.
    probe = "\nprint('layout', x.strides, x.flags.f_contiguous, x.flags.writeable)"
    strided = execute(snippet(record(*EMBEDDED["strided"])) + probe)
    assert "layout (8000, 16) False False" in strided.stdout, strided.stderr  # (8, 500) float64 in (8, 1000)
    transposed = execute(snippet(record(*EMBEDDED["transposed"])) + probe)
    assert "layout (4, 64) True False" in transposed.stdout, transposed.stderr  # (16, 300) float32, F order


@pytest.mark.parametrize("question", [
    # 65536 float16 = 128 KiB of x (the per-row cotangent adds 2 bytes).
    ("numpy", "logsumexp_vjp", "float16", "long_random_n65k", "constant"),
    # 8000 float64 = 64000 bytes of x, under the limit alone; with the full cotangent 128000.
    ("numpy", "softmax_vjp", "float64", "random_n1k_s10", "random"),
], ids=["logsumexp_vjp-65k", "softmax_vjp-1k"])
def test_big_input_is_rebuilt_with_the_catalogue(question: tuple) -> None:
    result = direct(*question)
    code = snippet(result)
    assert "X_BITS" not in code and "G_BITS" not in code
    assert f"over {EMBED_LIMIT_BYTES} bytes, too big to embed" in code
    assert "x = CASES[CASE].build(DTYPE)" in code
    assert f"format_of(DTYPE))[{1 if question[1] == 'logsumexp_vjp' else 0}]" in code
    assert_reproduces(code, result)


def test_failure_of_a_bad_backend_is_reproduced() -> None:
    # NoMaxShift on equal_large float32: exp(1e4) and exp(max) overflow, so 12 outputs are inf / inf =
    # NaN and the six -max entries 0 / 0 = NaN; the six exp(exp_overflow) sum to inf and come out 0
    # where the exact value is 1/6: the worst element, index [2, 0], 1.1e7 ULP off.
    result = record(NO_SHIFT, "softmax", "float32", "equal_large")
    assert result["status"] == "fail" and result["metrics"]["worst"]["index"] == [2, 0]
    code = snippet(result)
    assert "# The run recorded status 'fail' and the message:" in code
    assert "#   '1.118e+07 ULP at index [2, 0] exceeds its budget" in code
    # The message (190 characters) is commented in pieces cut at spaces, at most 80 each: joined, the whole.
    pieces = [ast.literal_eval(line[4:]) for line in code.splitlines() if line.startswith("#   '")]
    assert len(pieces) > 2 and "".join(pieces) == result["message"]
    stdout = assert_reproduces(code, result)
    assert "got now:           0.0\n" in stdout and "exact:             0.16666666666666666\n" in stdout
    # The correct implementation's bits are not the ones reproduced.
    assert record(CORRECT, "softmax", "float32", "equal_large")["output_sha256"] != result["output_sha256"]


def test_error_records_still_call_the_backend() -> None:
    # math.fsum(x, axis) raises TypeError (it takes one argument): the snippet's call shows it.
    raising = record("math:fsum", "softmax", "float32", "glossary")
    assert raising["status"] == "error" and "output_sha256" not in raising
    done = execute(snippet(raising))
    assert done.returncode == 1 and "TypeError: math.fsum() takes exactly one argument" in done.stderr
    # numpy.sum as a softmax returns a scalar: the suite's shape check failed; the snippet shows why.
    scalar = record("numpy:sum", "softmax", "float32", "glossary")
    assert scalar["status"] == "error" and "returned shape ()" in scalar["message"]
    done = execute(snippet(scalar))
    assert done.returncode == 0, done.stderr
    assert "output: shape (), dtype float32 (the suite expects (4,) and float32)" in done.stdout
    assert "the run recorded no output; its status: error\n" in done.stdout


def test_an_invariants_result_names_what_it_broke() -> None:
    # A crafted invariants record of numpy on glossary (numpy keeps its invariants): the snippet
    # rebuilds the input, checks its digest, calls the op, and lists the broken invariant.
    x = case_input("glossary", "float32")
    result = {"check": "invariants", "op": "softmax", "backend": "numpy", "device": "cpu",
              "dtype": "float32", "case": "glossary", "axis": -1, "layout": "contiguous", "shape": [4],
              "status": "fail", "message": "shift invariance broken", "input_sha256": bits_digest(x),
              "invariants": {"shift_invariance": {"ok": False, "value": 12.0, "budget": 9.9, "units": "ulp"},
                             "sum_to_one": {"ok": True, "value": 0.5, "budget": 4.4, "units": "ulp of 1"}}}
    code = snippet(result)
    assert "# Reproduces one softmax-suite invariants result" in code
    assert "#   'shift_invariance': 12.0 'ulp', budget 9.9" in code and "sum_to_one" not in code
    done = execute(code)
    assert done.returncode == 0, done.stderr
    assert "the run recorded no output; its status: fail\n" in done.stdout


def test_rerun_command_quotes_what_it_embeds() -> None:
    result = {"nodeid": "suites/test_forward.py::test_softmax[x-cpu-float32-glossary]", "backend": "a b;rm"}
    assert rerun_command(result) == ("python -m pytest 'suites/test_forward.py::test_softmax[x-cpu-float32-"
                                     "glossary]' --backend 'a b;rm'")
    assert rerun_command({"backend": "numpy"}) is None


def test_older_record_without_digests_skips_the_checks() -> None:
    result = copy(record(*EMBEDDED["softmax_vjp"]))
    del result["input_sha256"], result["cotangent_sha256"]
    code = snippet(result)
    assert "# The record carries no input sha256" in code and "no cotangent sha256" in code
    assert "INPUT_SHA256 = None" in code and "COTANGENT_SHA256 = None" in code
    assert_reproduces(code, result)


HOSTILE = 'evil" + __import__("os").system("echo pwned") + "\n\r\u2028import os; print("pwned") #<script>'


def _without_strings(code: str) -> str:
    """The snippet's syntax tree with every string constant blanked: what the code does, not what it says."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree)


def test_hostile_strings_stay_in_literals_and_comments() -> None:
    benign = record(*EMBEDDED["float16"])
    hostile = copy(benign, backend=f"tests.{HOSTILE}:x", device=HOSTILE, nodeid=HOSTILE,
                   status=HOSTILE, message=f"{HOSTILE}\n'''\"\"\"</script>\n" + "long " * 400)
    code = snippet(hostile)
    compile(code, "<snippet>", "exec")
    # Same program as for the benign record: the strings changed no statement.
    assert _without_strings(code) == _without_strings(snippet(benign))
    assert HOSTILE not in code  # its raw newlines never reach the source
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    carriers = {token.type for token in tokens if "pwned" in token.string or "<script>" in token.string}
    assert carriers == {tokenize.COMMENT, tokenize.STRING}
    # The 2000-character tail of the message is cut after 12 pieces of 80 characters.
    assert "more characters cut; the results file has the whole message)" in code
    # Run: the backend spec cannot be imported, and nothing the strings say is executed.
    done = execute(code)
    assert done.returncode != 0 and "pwned" not in done.stdout
    assert "SpecError" in done.stderr


@pytest.mark.parametrize(("changes", "match"), [
    ({"case": "no_such_case"}, r"case 'no_such_case' is not in this softmax-suite's catalogue.*"
                               r"softmax-suite cases"),
    ({"case": HOSTILE}, re.escape(repr(HOSTILE))),
    ({"input_sha256": "0" * 64}, r"catalogue's input bits .* differ from the run's.*re-run"),
    ({"cotangent_sha256": "0" * 64}, r"catalogue's cotangent bits .* differ from the run's.*re-run"),
    ({"shape": [64, 30]}, r"now has shape \[64, 31\], the run had \[64, 30\].*re-run"),
    ({"check": "throughput"}, r"a 'throughput' result has no reproducer script"),
    ({"status": "unsupported"}, r"status is 'unsupported': nothing was run"),
    ({"cotangent": "sideways"}, r"needs a cotangent kind, one of random, one_hot.*'sideways'"),
    ({"cotangent": ["random"]}, r"needs a cotangent kind.*\['random'\]"),
    ({"dtype": "float8"}, r"unknown dtype 'float8'"),
    ({"backend": None}, r"'backend' is None, not a name"),
])
def test_what_cannot_be_rebuilt_is_refused(changes: dict, match: str) -> None:
    # A record of random_n31_s3 (64 x 31) with a cotangent, made by hand: no oracle is needed to refuse.
    base = direct("numpy", "softmax_vjp", "float32", "random_n31_s3", "random")
    with pytest.raises(ReproduceError, match=match):
        snippet(copy(base, **changes))
