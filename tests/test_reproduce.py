"""softmax_suite.runner.reproduce: each snippet, run alone in a fresh Python, rebuilds the run's input bits,
gets the run's output bits from the backend, shows the input, the output beside the exact values and the
suite's verdict, and exits 1 while the backend fails, 0 once it passes, 2 when it cannot run; hostile
record strings stay inert; what cannot be rebuilt is refused."""

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

import numpy as np
import pytest

from softmax_suite.backends.registry import load
from softmax_suite.reports.results import jsonable, rerun_command
from softmax_suite.runner.config import Settings
from softmax_suite.runner.reproduce import EMBED_LIMIT_BYTES, ReproduceError, snippet
from softmax_suite.suites import invariants
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
def record(backend: str, op: str, dtype: str, case: str, cotangent: str | None = None,
           check: str = "accuracy") -> dict:
    """The real path (case, backend, oracle, judge), then through JSON as a results file holds it."""
    target = Target(op, backend, "cpu", dtype, case, cotangent, check)
    measure = run if check == "accuracy" else invariants.run
    result = measure(target, load(backend), Settings())
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
    """The snippet of a passing result: the run's bits again, and exit status 0."""
    done = execute(code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"output: the same bits as the run (sha256 {result['output_sha256']})\n" in done.stdout
    assert "\npasses now: " in done.stdout
    return done.stdout


def has_row(stdout: str, *cells: str) -> bool:
    """Whether a table line holds these cells in order, separated by blanks only."""
    line = r"^ +" + r" +".join(map(re.escape, cells)) + r"\b"
    return re.search(line, stdout, flags=re.MULTILINE) is not None


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
    # Every record here was measured and the backend is deterministic: the judge finds the run's worst
    # element again, with the run's error, against the exact values of the suite's oracle (for a VJP fed
    # with the op's own cotangent only).
    worst = result["metrics"]["worst"]
    assert f"the run: pass, worst {worst['ulp']:.4g} ULP at index {worst['index']}" in stdout
    assert f"worst element {worst['index']}: {worst['ulp']:.4g} ULP, its budget " \
           f"{result['bound']['budget_ulp']:.4g} ULP" in stdout


def test_snippet_rebuilds_the_case_layout() -> None:
    # Strides matter to some bugs: the strided case comes back as every other element of a wider buffer
    # and the transposed one in Fortran order, exactly as Case.build makes them.
    def probed(code: str) -> str:
        # Before the backend is called, which ends the script.
        return code.replace("\nprint(f\"reproducing", "\nprint('layout', x.strides, x.flags.f_contiguous, "
                                                     "x.flags.writeable)\nprint(f\"reproducing")

    strided = execute(probed(snippet(record(*EMBEDDED["strided"]))))
    assert "layout (8000, 16) False False" in strided.stdout, strided.stderr  # (8, 500) float64 in (8, 1000)
    transposed = execute(probed(snippet(record(*EMBEDDED["transposed"]))))
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
    stdout = assert_reproduces(code, result)
    # Too big to print whole, and a record made by hand names no worst element whose row to show.
    shape = tuple(result["shape"])
    assert f"input x: {question[2]}, shape {shape}, reduced along axis 1\n  (too big" in stdout


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
    done = execute(code)
    assert done.returncode == 1, done.stdout + done.stderr
    stdout = done.stdout
    assert stdout.startswith("reproducing softmax of 'tests.bad_softmax:NoMaxShift' on cpu, float32, case "
                             "'equal_large'\nthe run: fail, worst 1.118e+07 ULP at index [2, 0] (got 0.0, "
                             "exact 0.16666666666666666)\n")
    # 24 elements: the whole input, each value exactly (88.72283172607422 is the float32 just below
    # log(FLT_MAX), whose exp is finite but six of them sum to inf).
    assert "input x: float32, shape (4, 6), reduced along axis 1\n" in stdout
    assert "x[0, :] = [10000.0, 10000.0, 10000.0, 10000.0, 10000.0, 10000.0]\n" in stdout
    assert "x[2, :] = [88.72283172607422, 88.72283172607422, " in stdout
    assert f"output: the same bits as the run (sha256 {result['output_sha256']})\n" in stdout
    # Row [2] beside the exact values: 0 for 1/6, whose float32 ULP is 2^-26, so 2^26 / 6 = 1.118e7 ULP,
    # where the budget allows (c0 + c_sum ceil(log2 6)) u relative, (3 + 2 * 3) 2^-24 (1/6) / 2^-26 = 6,
    # plus the half ULP of rounding; row [0], the first semantic difference, NaN for 1/6.
    assert has_row(stdout, "0", "88.72283172607422", "0.0", "0.1666666716337204", "1.118e+07", "6.5",
                   "<- worst")
    assert has_row(stdout, "0", "10000.0", "nan", "0.1666666716337204", "nan_unexpected", "6.5")
    assert ("worst element [2, 0]: 1.118e+07 ULP, its budget 6.5 ULP (the largest error for its budget)\n"
            "  got 0.0, exact 0.16666666666666666, correctly rounded to float32 0.1666666716337204\n"
            ) in stdout
    assert stdout.endswith(f"still fails: {result['message']}\n")
    # The correct implementation's bits are not the ones reproduced.
    assert record(CORRECT, "softmax", "float32", "equal_large")["output_sha256"] != result["output_sha256"]


def test_a_fixed_backend_passes_now() -> None:
    # The failed record of NoMaxShift, the backend fixed: numpy's softmax, and Float64Upcast given as the
    # --backend spec of a run that showed it as "fixed". Each rounds 1/6 correctly: 0.1666666716337204 is
    # 1/6 + 2^-26 / 3, a third of an ULP, in every row (the first, [0, 0], is the worst of equal ratios).
    failed = record(NO_SHIFT, "softmax", "float32", "equal_large")
    for changes, loaded in (({"backend": "numpy"}, "'numpy'"),
                            ({"backend": "fixed", "backend_spec": CORRECT}, repr(CORRECT))):
        code = snippet(copy(failed, **changes))
        assert ("#   shown as   'fixed'" in code) == ("backend_spec" in changes)
        done = execute(code)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"reproducing softmax of {loaded} on cpu, float32, case "
                                      "'equal_large'\n")
        assert f"output: sha256 {output_digest(np.full((4, 6), 1 / 6, np.float32))}, the run's " \
               f"{failed['output_sha256']}\n" in done.stdout
        assert has_row(done.stdout, "0", "88.72283172607422", "0.1666666716337204", "0.1666666716337204",
                       "0.3333", "6.5", "<- worst in the run")
        assert "worst element [0, 0]: 0.3333 ULP, its budget 6.5 ULP" in done.stdout
        assert done.stdout.endswith("passes now: every element within its error budget\n")


def test_a_known_deviation_says_so() -> None:
    # A known deviation still deviating is a failure reproduced (exit 1); fixed, its entry can go (exit 0).
    known = copy(record(NO_SHIFT, "softmax", "float32", "equal_large"), status="known_failure",
                 known_deviation={"entry": 1, "reason": "no max shift", "link": None})
    done = execute(snippet(known))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "\nstill fails: 1.118e+07 ULP at index [2, 0]" in done.stdout
    assert done.stdout.endswith("a known deviation, still there: no max shift\n")
    done = execute(snippet(copy(known, backend="numpy")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("passes now: every element within its error budget\nthe known deviation no "
                                "longer reproduces (its entry can go): no max shift\n")


def test_a_vjp_is_reproduced_with_its_cotangent() -> None:
    # WrongSign returns -dx: on glossary with the random cotangent every element is off by 2 |dx_j|.
    # The judge's worst (largest error for its budget) is dx_2 = -0.0628, in [2^-4, 2^-3): its float32
    # ULP is 2^-27 and 2 * 0.0628 / 2^-27 = 1.687e7 ULP, against a budget of 10.88.
    result = record("tests.bad_softmax:WrongSign", "softmax_vjp", "float32", "glossary", "random")
    assert result["metrics"]["worst"]["index"] == [2]
    code = snippet(result)
    done = execute(code)
    assert done.returncode == 1, done.stdout + done.stderr
    stdout = done.stdout
    assert stdout.startswith("reproducing softmax_vjp of 'tests.bad_softmax:WrongSign' on cpu, float32, case "
                             "'glossary', cotangent 'random'\n")
    # The input and the cotangent the backend was given, whole (4 elements each).
    assert "x[:] = [1.5, 2.200000047683716, -0.30000001192092896, 0.800000011920929]\n" in stdout
    assert "g[:] = [-0.3186975419521332, 1.1331285238265991, -0.9113789796829224, -0.053289078176021576]\n" \
        in stdout
    assert has_row(stdout, "2", "-0.30000001192092896", "-0.9113789796829224", "0.06283819675445557",
                   "-0.06283819675445557", "1.687e+07", "10.88", "<- worst")
    assert "worst element [2]: 1.687e+07 ULP, its budget 10.88 ULP" in stdout
    assert stdout.endswith(f"still fails: {result['message']}\n")
    # The verdict is the run's, by the run's budget constants: with c0 = 2^40 the budget takes in 2 |dx|.
    constants = {"c0": 2.0**40, "c_exp": 1.0, "c_sum": 2.0}
    lenient = copy(result, bound={**result["bound"], "constants": constants})
    assert "BudgetConstants(c0=1099511627776.0, c_exp=1.0, c_sum=2.0)" in snippet(lenient)
    done = execute(snippet(lenient))
    assert done.returncode == 0 and "passes now" in done.stdout, done.stdout + done.stderr


def test_a_backend_that_raises_still_fails() -> None:
    # math.fsum(x, axis) raises TypeError (it takes one argument): exit 1, the traceback's end printed.
    raising = record("math:fsum", "softmax", "float32", "glossary")
    assert raising["status"] == "error" and "output_sha256" not in raising
    done = execute(snippet(raising))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "\nTypeError: math.fsum() takes exactly one argument (2 given)\n" in done.stdout
    assert done.stdout.endswith("still fails: softmax raised TypeError: math.fsum() takes exactly one "
                                "argument (2 given)\n")
    # numpy.sum as a softmax returns a scalar: the suite's shape check fails it again.
    scalar = record("numpy:sum", "softmax", "float32", "glossary")
    assert scalar["status"] == "error" and "returned shape ()" in scalar["message"]
    done = execute(snippet(scalar))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.endswith("still fails: softmax returned shape (), expected (4,)\n")


@pytest.mark.parametrize(("changes", "why"), [
    ({"backend": "array-api:no_such_module"},
     "backend 'array-api:no_such_module' is unavailable here: cannot import 'no_such_module'"),
    ({"backend": "tests.no_such_module:Softmax"},
     "backend 'tests.no_such_module:Softmax' cannot be loaded: SpecError: cannot import "
     "'tests.no_such_module'"),
    ({"device": "cuda"}, "numpy has no device 'cuda' here (it has cpu)"),
    ({"backend": "tests.planted_backend:Softmax"}, "planted does not support float64"),
], ids=["unavailable", "not-importable", "no-device", "no-dtype"])
def test_what_cannot_run_here_exits_2(changes: dict, why: str) -> None:
    # numpy's record on glossary float64, loaded elsewhere: the planted backend runs float32 only.
    done = execute(snippet(copy(record("numpy", "softmax", "float64", "glossary"), **changes)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"cannot reproduce here: {why}")
    assert "still fails" not in done.stdout and "passes now" not in done.stdout


def test_without_softmax_suite_exits_2(tmp_path: Path) -> None:
    # python -S has no site-packages: neither numpy nor softmax-suite imports.
    done = subprocess.run([sys.executable, "-S", "-c", snippet(record(*EMBEDDED["float16"]))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "cannot reproduce here: No module named 'numpy'; this script needs softmax-suite " \
                          "installed\n"


def test_other_input_bits_exit_2() -> None:
    # A script whose embedded bits were edited no longer reproduces the run: it says so before any call.
    result = record(*EMBEDDED["float16"])
    done = execute(snippet(result).replace(result["input_sha256"], "0" * 64))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"cannot reproduce here: the rebuilt input is not the run's: sha256 "
                                  f"{result['input_sha256']}, recorded {'0' * 64}")


def test_an_invariants_result_is_measured_again() -> None:
    # A crafted invariants record of numpy on glossary (numpy keeps its invariants): the snippet
    # rebuilds the input, checks its digest, measures the invariants as the suite does, and passes.
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
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\nshift_invariance holds: " in done.stdout
    assert done.stdout.endswith("passes now: every invariant holds\n")
    # NoMaxShift on equal_large: row [0] (1e4 six times) comes out NaN, whose sum is no 1.
    broken = record(NO_SHIFT, "softmax", "float32", "equal_large", check="invariants")
    assert broken["status"] == "fail"
    done = execute(snippet(broken))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "\nsum_to_one BROKEN: " in done.stdout
    assert done.stdout.endswith(f"still fails: {broken['message']}\n")


def test_rerun_command_quotes_what_it_embeds() -> None:
    result = {"nodeid": "suites/test_forward.py::test_softmax[x-cpu-float32-glossary]", "backend": "a b;rm"}
    assert rerun_command(result) == ("python -m pytest 'suites/test_forward.py::test_softmax[x-cpu-float32-"
                                     "glossary]' --softmax-suite-backend 'a b;rm'")
    assert rerun_command({"backend": "numpy"}) is None
    # A backend known by its own name is loaded again by its spec.
    named = {**result, "backend": "fused", "backend_spec": "torch:kernels:Fused"}
    assert rerun_command(named).endswith("--softmax-suite-backend torch:kernels:Fused")


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
    # Run: the backend spec cannot be imported, and nothing the strings say is executed (the strings are
    # printed, but no line is what echo or print would write).
    done = execute(code)
    assert done.returncode == 2 and "pwned" not in (done.stdout + done.stderr).splitlines()
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
    ({"backend_spec": ["numpy"]}, r"'backend_spec' is \['numpy'\], not a name"),
    ({"check": "invariants"}, r"softmax_vjp has no invariants"),
])
def test_what_cannot_be_rebuilt_is_refused(changes: dict, match: str) -> None:
    # A record of random_n31_s3 (64 x 31) with a cotangent, made by hand: no oracle is needed to refuse.
    base = direct("numpy", "softmax_vjp", "float32", "random_n31_s3", "random")
    with pytest.raises(ReproduceError, match=match):
        snippet(copy(base, **changes))
