"""The special-value semantics table and the cross-backend agreement matrix, from hand-written
records whose answer is known, and from a small real run (so the record fields line up)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softmax_suite.backends.custom import wrap
from softmax_suite.backends.registry import load
from softmax_suite.reports.agreement import agreement_matrix, format_agreement
from softmax_suite.reports.semantics import format_semantics, semantics_table
from softmax_suite.reports.summary import format_summary
from softmax_suite.reports.verdict import format_verdict
from softmax_suite.runner.config import Settings
from softmax_suite.suites.accuracy import Target, run


def record(backend: str, op: str = "softmax", dtype: str = "float32", case: str = "nan",
           status: str = "pass", **fields) -> dict:
    return {"kind": "result", "check": "accuracy", "op": op, "backend": backend, "device": "cpu",
            "dtype": dtype, "case": case, "status": status, **fields}


def special(label: str, *outcomes: tuple[str, str, int]) -> dict:
    return {"input": label, "shape": [4, 6],
            "outcomes": [{"expected": e, "got": g, "count": n} for e, g, n in outcomes]}


SUBNORMALS = "subnormal outputs"
# "exact" follows the policy; "flusher" returns 0 for subnormals in float32 only; "nanless"
# returns 0 where a VJP of a +inf row is NaN; "raiser" raises on empty rows.
RECORDS = [
    record("exact", case="underflow_gaps", dtype=d, output_sha256=f"u-{d}",
           special_values=special(SUBNORMALS, ("subnormal", "subnormal", 10), ("0", "0", 4)),
           metrics={"max_ulp": 0.5, "categories": {}})
    for d in ("float32", "float64")
] + [
    record("flusher", case="underflow_gaps", dtype="float32", output_sha256="u-flushed", flushes=True,
           special_values=special(SUBNORMALS, ("subnormal", "0", 10), ("0", "0", 4)),
           metrics={"max_ulp": 0.5, "categories": {"flushed_subnormal": 10}}),
    record("flusher", case="underflow_gaps", dtype="float64", output_sha256="u-float64",
           special_values=special(SUBNORMALS, ("subnormal", "subnormal", 10), ("0", "0", 4)),
           metrics={"max_ulp": 0.5, "categories": {}}),
    *(record(name, op="logsumexp_vjp", case="pos_inf", cotangent=kind, output_sha256=f"{name}-{kind}",
             special_values=special("+inf", ("nan", "0" if name == "nanless" else "nan", 14)))
      for name in ("exact", "nanless") for kind in ("ones", "random")),
    record("exact", case="empty", output_sha256="empty",
           special_values=special("empty", ("nan", "nan", 0))),
    record("raiser", case="empty", status="known_failure", failure="error",
           known_deviation={"reason": "no empty rows"},
           message="known deviation: no empty rows [softmax raised ValueError: zero-size array]"),
    record("raiser", case="nan", status="skip", message="not installed"),
]


def test_a_backend_that_flushes_subnormals_is_named_with_its_dtypes() -> None:
    table = semantics_table(RECORDS)
    assert table["flusher/cpu"]["flush_to_zero"] == ["float32"]
    assert table["exact/cpu"]["flush_to_zero"] == []
    cell = table["flusher/cpu"]["rows"][SUBNORMALS]["softmax"]
    # Only float32 flushes, so the cell names it: float64 ran as the policy says.
    assert cell == {"agrees": False, "cell": "subnormal flushed to 0 (x10, float32)",
                    "dtypes_differing": ["float32"]}
    assert "flush-to-zero backend (float32)" in format_semantics(table)


def test_a_semantic_difference_shows_in_its_cell_summed_over_cotangents() -> None:
    rows = semantics_table(RECORDS)["nanless/cpu"]["rows"]
    # 14 elements in each of two cotangent kinds; every dtype run (one) differs: none named.
    assert rows["+inf"]["logsumexp_vjp"] == {"agrees": False, "cell": "0 where NaN (x28)",
                                             "dtypes_differing": ["float32"]}
    assert semantics_table(RECORDS)["exact/cpu"]["rows"]["+inf"]["logsumexp_vjp"]["cell"] == "as policy"


def test_an_error_shows_the_backend_message_and_unrun_cells_show_a_dash() -> None:
    table = semantics_table(RECORDS)
    rows = table["raiser/cpu"]["rows"]
    # The error record has no special_values: its row comes from the exact backend's empty case.
    assert rows["empty"]["softmax"]["cell"] == "raises ValueError: zero-size array"
    assert rows["empty"]["softmax"]["agrees"] is False
    assert rows["+inf"]["logsumexp_vjp"] == {"agrees": None, "cell": "-", "dtypes_differing": []}
    text = format_semantics(table)
    assert "[1] raises ValueError: zero-size array" in text
    assert list(table["exact/cpu"]["rows"]) == ["+inf", "empty", SUBNORMALS]  # the policy's order
    json.dumps(table, allow_nan=False)


def test_a_vjp_cancelling_to_zero_is_error_not_semantics() -> None:
    # A ones cotangent has an exact softmax VJP of 0; a backend returns rounding noise there,
    # which its VJP error metrics judge. Only the forward op's flush names a flush-to-zero backend.
    noisy = record("noisy", op="softmax_vjp", case="underflow_gaps", cotangent="ones",
                   special_values=special(SUBNORMALS, ("0", "normal", 30), ("subnormal", "0", 3)))
    table = semantics_table([noisy])
    assert table["noisy/cpu"]["rows"][SUBNORMALS]["softmax_vjp"]["cell"] == "as policy"
    assert table["noisy/cpu"]["flush_to_zero"] == []


def test_equal_digests_group_backends_and_records_without_a_digest_are_left_out() -> None:
    matrix = agreement_matrix(RECORDS)
    by_key = {(e["op"], e["dtype"], e["case"], e["cotangent"]): e for e in matrix}
    float64 = by_key[("softmax", "float64", "underflow_gaps", None)]
    assert float64["groups"] == [["exact/cpu", "flusher/cpu"]]
    float32 = by_key[("softmax", "float32", "underflow_gaps", None)]
    assert float32["groups"] == [["exact/cpu"], ["flusher/cpu"]]
    assert float32["max_ulp"] == {"exact/cpu": 0.5, "flusher/cpu": 0.5}
    assert float32["status"] == {"exact/cpu": "pass", "flusher/cpu": "pass"}
    # Only one backend has an output for the empty case (raiser raised) and nan (raiser skipped).
    assert ("softmax", "float32", "empty", None) not in by_key
    assert all("raiser/cpu" not in e["status"] for e in matrix)
    assert len(by_key) == 4  # two underflow_gaps dtypes, two pos_inf cotangents
    text = format_agreement(matrix)
    assert "exact/cpu = flusher/cpu" in text and "exact/cpu = nanless/cpu" in text
    json.dumps(matrix, allow_nan=False)


def test_summary_counts_accuracy_and_invariants_apart() -> None:
    invariant = {**record("exact", dtype="float16"), "check": "invariants"}
    text = format_summary([*RECORDS, invariant])
    accuracy, _, invariants = text.partition("\ninvariants:\n")
    assert "float16" not in accuracy and "exact (cpu)" in accuracy and "worst 0.5 ulp" in accuracy
    assert invariants.splitlines()[0].split() == ["backend", "float16"]
    assert "1 ok" in invariants
    assert "invariants" not in format_summary(RECORDS)


class Flushing:
    """numpy's softmax with subnormal results set to 0, as a flush-to-zero unit would."""

    name = "flushing"

    def __init__(self) -> None:
        self.numpy = load("numpy")

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        y = np.asarray(self.numpy.ops["softmax"](x, axis))
        return np.where(np.abs(y) < np.finfo(y.dtype).tiny, np.zeros_like(y), y)


@pytest.fixture(scope="module")
def real_records() -> list[dict]:
    backends = {"numpy": load("numpy"), "flushing": wrap(Flushing, "flushing")}
    return [run(Target("softmax", name, "cpu", "float32", case), backend, Settings())
            for case in ("underflow_gaps", "nan", "empty") for name, backend in backends.items()]


def test_the_tables_read_real_records(real_records: list[dict]) -> None:
    table = semantics_table(real_records)
    assert table["flushing/cpu"]["flush_to_zero"] == ["float32"]
    assert table["numpy/cpu"]["flush_to_zero"] == []
    assert table["numpy/cpu"]["rows"][SUBNORMALS]["softmax"]["cell"] == "as policy"
    assert table["flushing/cpu"]["rows"][SUBNORMALS]["softmax"]["cell"].startswith("subnormal flushed to 0")
    assert table["flushing/cpu"]["rows"]["NaN"]["softmax"]["agrees"] is True
    matrix = {e["case"]: e for e in agreement_matrix(real_records)}
    # Flushing changes nothing where no output is subnormal: the same bits as numpy.
    assert matrix["nan"]["groups"] == [["flushing/cpu", "numpy/cpu"]]
    assert matrix["underflow_gaps"]["groups"] == [["flushing/cpu"], ["numpy/cpu"]]
    numpy_record = next(r for r in real_records if r["backend"] == "numpy" and r["case"] == "underflow_gaps")
    assert matrix["underflow_gaps"]["max_ulp"]["numpy/cpu"] == numpy_record["metrics"]["max_ulp"]
    assert matrix["underflow_gaps"]["status"] == {"flushing/cpu": "pass", "numpy/cpu": "pass"}
    # Both answer the empty case (an empty output): one group, the same bits.
    assert matrix["empty"]["groups"] == [["flushing/cpu", "numpy/cpu"]]


# -- the verdict ------------------------------------------------------------------------------------

def judged(backend: str, dtype: str, status: str, op: str = "softmax", case: str = "glossary",
           **fields) -> dict:
    """A record as the verdict reads it: its status, and for a failure what went wrong."""
    return {**record(backend, op=op, dtype=dtype, case=case, status=status),
            "nodeid": f"suites/test_forward.py::test_{op}[{backend}-cpu-{dtype}-{case}]", **fields}


def beyond(ulp: float, budget: float, **where) -> dict:
    """An accuracy failure: the worst element is ulp ULP off, its budget budget ULP."""
    return judged(status="fail", failure="accuracy", metrics={"worst": {"ulp": ulp}},
                  bound={"budget_ulp": budget, "ratio": ulp / budget}, **where)


def timed(backend: str, dtype: str, fraction: float, status: str = "pass") -> dict:
    return {**record(backend, dtype=dtype, case="row_n1M", status=status), "check": "throughput",
            "sweep": "quick", "roofline_fraction": fraction}


TORCH_BF16 = {"backend": "torch", "dtype": "bfloat16"}
VERDICT_RECORDS = [
    *(judged("torch", "bfloat16", "pass") for _ in range(4)),
    judged("torch", "bfloat16", "known_failure"),
    # Ratios 262 and 10: the first is the worse though its error is the smaller.
    beyond(2100, 8, op="log_softmax_vjp", case="random_n1k_s1", cotangent="ones", **TORCH_BF16),
    beyond(5000, 500, op="softmax", case="random_n2", **TORCH_BF16),
    judged("torch", "bfloat16", "unsupported"),
    timed("torch", "bfloat16", 0.42), timed("torch", "bfloat16", 0.61),
    *(judged("numpy", dtype, "pass") for dtype in ("float32", "float16")),
    timed("numpy", "float32", 0.2), timed("numpy", "float32", 0.1, status="unsupported"),
    judged("numpy", "bfloat16", "unsupported"),
    {**judged("cupy", "any", "skip"), "device": "any"},
]


def test_the_verdict_counts_each_backend_and_dtype_and_names_its_worst_unexpected_result() -> None:
    lines = format_verdict(VERDICT_RECORDS).splitlines()
    # 4 + 2 + 2 + 1 passed (torch's two timings, numpy's three results and one timing); the
    # two failures; the unsupported op of torch, numpy's unsupported timing and bfloat16, cupy.
    assert lines[0] == ("verdict: 2 unexpected (failed or erred); 9 passed, 1 known failures, 4 not run "
                        "(16 results)")
    assert lines[1:6] == [
        "backend  dtype     passed  known  unexpected  not run  copy  worst unexpected",
        "-------  --------  ------  -----  ----------  -------  ----  " + "-" * 58,
        # Rows in dtype order, float16 first; a timing is a result too; copy is the best fraction.
        "numpy    float16        1      0           0        0     -",
        "numpy    float32        2      0           0        1  0.20",
        "torch    bfloat16       6      1           2        1  0.61  "
        "log_softmax_vjp random_n1k_s1/ones: 2.1e+03 ulp (budget 8)",
    ]
    # numpy's bfloat16 ran nothing, cupy is not installed: one line for both.
    assert lines[6] == "not run: cupy; numpy (bfloat16) (the report says why)"
    assert lines[7] == ("throughput (quick sweep): 3 timed; copy: the best fraction of the copy bandwidth "
                        "among them")
    assert lines[8:] == ["unexpected:",
                         "  suites/test_forward.py::test_log_softmax_vjp[torch-cpu-bfloat16-random_n1k_s1]",
                         "  suites/test_forward.py::test_softmax[torch-cpu-bfloat16-random_n2]",
                         # how pytest runs one alone (torch's spec is its name)
                         "one alone: python -m pytest 'ID' --softmax-suite-backend torch"]
    # pytest lists the failures itself where it prints the verdict: the plugin leaves them out.
    assert format_verdict(VERDICT_RECORDS, list_unexpected=False).splitlines() == lines[:8]


def test_a_wrong_kind_of_answer_is_worse_than_an_exception_which_is_worse_than_any_error() -> None:
    cell = {"backend": "jax", "dtype": "float32"}
    inaccurate = beyond(1e15, 4, case="random_n2", **cell)
    raised = judged(status="error", failure="error", case="empty",
                    message="softmax raised ValueError: zero-size array to reduction operation maximum "
                            "which has no identity", **cell)
    semantic = judged(status="fail", failure="semantic", case="nan", semantic={"nan_unexpected": 3}, **cell)
    broken = judged(status="fail", failure="invariant", case="tied_max", invariants={
        "sum_to_one": {"ok": False, "value": 40.0, "budget": 4.0}, "argmax_preserved": {"ok": True}}, **cell)

    def worst(*records: dict) -> str:
        return format_verdict(records).splitlines()[3].split("  ")[-1]

    assert worst(inaccurate, raised, semantic) == "softmax nan: 3 x nan_unexpected"
    # The message is cut to a few words; the report has all of it.
    assert worst(inaccurate, raised) == "softmax empty: softmax raised ValueError: zero-size array to..."
    # An invariant 10 times its budget against an error 2.5e14 times it.
    assert worst(broken, inaccurate) == "softmax random_n2: 1e+15 ulp (budget 4)"
    assert worst(broken) == "softmax tied_max: sum_to_one"


def test_the_verdict_of_eight_backends_fits_a_screen() -> None:
    names = ["array_api_strict", "example", "jax", "mlx", "numpy", "onnxruntime", "scipy", "torch"]
    dtypes = ("float16", "bfloat16", "float32", "float64")
    clean = [r for name in names for dtype in dtypes
             for r in ([judged(name, dtype, "pass")] * 400 + [judged(name, dtype, "known_failure")] * 20
                       + [timed(name, dtype, 0.5)] * 18)]
    lines = format_verdict(clean).splitlines()
    # A headline, the header and its rule, 32 rows, the throughput line.
    assert len(lines) == 1 + 2 + 32 + 1
    assert max(map(len, lines)) <= 100
    # The columns line up: every row is as long as the header row (the copy column ends them).
    assert {len(line) for line in lines[1:35]} == {len(lines[1])}
    failing = [*clean, *(beyond(2100, 8, backend=name, dtype=dtype, case=f"random_n1k_s{k}")
                         for name in names for dtype in dtypes for k in range(3))]
    lines = format_verdict(failing).splitlines()
    # 96 unexpected results: the table leaves room for 2 of their ids and how to run one within 40 lines.
    assert lines[-4] == "unexpected (the first 2; all 96 in the report):"
    assert len(lines) == 40
    # The worst unexpected result widens the rows: 61 columns to it, with array_api_strict's name.
    assert max(map(len, lines)) == 61 + len("softmax random_n1k_s0: 2.1e+03 ulp (budget 8)")


def test_no_results_is_a_verdict_too() -> None:
    assert format_verdict([]) == "verdict: no results"
