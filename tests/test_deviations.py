"""Known deviations (suites.deviations): the project's entries match the behaviour of every library
version pyproject.toml allows, in every check; the stale report judges an entry only on results
that hold every check it covers."""

from __future__ import annotations

import pytest

from softmax_suite.backends.registry import Unavailable, load
from softmax_suite.runner.config import DEFAULT_DEVIATIONS, Settings
from softmax_suite.suites.accuracy import Target, run
from softmax_suite.suites.deviations import Deviation, load_deviations, stale
from softmax_suite.suites.judging import judged

DEVIATIONS = load_deviations(DEFAULT_DEVIATIONS)

# scipy.special.logsumexp on bfloat16, as the suite records it. ml_dtypes 0.6 promotes bfloat16 with
# a Python float to float64, so scipy 1.17 computes and returns float64, which the accuracy check
# refuses (the throughput check times it); ml_dtypes 0.7 keeps bfloat16, and scipy's array-API path
# then raises in numpy.isdtype, in every check.
PROMOTED = ("logsumexp returned float64 for bfloat16 input (a silent conversion; the suite compares like "
            "with like)")
REFUSED = ("logsumexp raised TypeError: dtype argument must be a NumPy dtype, but it is a "
           "<class 'ml_dtypes.bfloat16'>.")


@pytest.mark.parametrize(("check", "case", "message"), [
    ("accuracy", "glossary", PROMOTED),
    ("accuracy", "glossary", REFUSED),
    ("invariants", "random_n2", REFUSED),
    ("throughput", "row_n4k", REFUSED),
], ids=["accuracy-float64", "accuracy-TypeError", "invariants-TypeError", "throughput-TypeError"])
def test_the_scipy_bfloat16_logsumexp_entry_matches_both_behaviours(check, case, message) -> None:
    record = judged({"check": check, "backend": "scipy", "device": "cpu", "dtype": "bfloat16",
                     "op": "logsumexp", "case": case, "status": "error", "failure": "error",
                     "message": message}, DEVIATIONS)
    assert record["status"] == "known_failure"
    entry = record["known_deviation"]
    assert DEVIATIONS[entry["entry"] - 1].backend == ("scipy",)
    # The reason names both behaviours and the versions that show them.
    assert "float64" in entry["reason"] and "TypeError" in entry["reason"]
    assert "ml_dtypes 0.4 to 0.6" in entry["reason"] and "ml_dtypes 0.7" in entry["reason"]
    assert record["message"] == f"known deviation: {entry['reason']} [{message}]"


def test_the_installed_scipy_on_bfloat16_logsumexp_is_a_known_failure() -> None:
    # Whichever of the two behaviours the installed ml_dtypes shows, the run reports it as known.
    scipy = load("scipy")
    if isinstance(scipy, Unavailable):
        pytest.skip(scipy.reason)
    record = run(Target("logsumexp", "scipy", "cpu", "bfloat16", "glossary"), scipy, Settings(), DEVIATIONS)
    assert record["status"] == "known_failure", record["message"]
    assert record["message"].endswith(f"[{PROMOTED}]") or record["message"].endswith(f"[{REFUSED}]")


EVERYWHERE = Deviation(backend=("b",), op=("logsumexp",), dtype=("bfloat16",), case=("*",), check=("*",),
                       failure=("error",), reason="every check")
ACCURACY = Deviation(backend=("b",), op=("logsumexp",), dtype=("bfloat16",), case=("*",), failure=("error",),
                     reason="the accuracy check alone")


def result(check: str, status: str, entry: int | None = None) -> dict:
    record = {"check": check, "backend": "b", "device": "cpu", "dtype": "bfloat16", "op": "logsumexp",
              "case": "row_n4k" if check == "throughput" else "glossary", "status": status}
    return {**record, "known_deviation": {"entry": entry}} if entry else record


# softmax-suite run: one process runs the accuracy and invariants checks, another throughput.
ACCURACY_USED = [result("accuracy", "known_failure", 1), result("invariants", "pass")]
ACCURACY_PASSED = [result("accuracy", "pass"), result("invariants", "pass")]
THROUGHPUT_PASSED = [result("throughput", "pass")]


def test_an_entry_of_every_check_is_judged_only_with_every_check_at_hand() -> None:
    # Each process alone cannot tell: the other may have used the entry.
    assert stale((EVERYWHERE,), THROUGHPUT_PASSED) == []
    assert stale((EVERYWHERE,), ACCURACY_PASSED) == []
    # Used by the accuracy pass and by no throughput result: still in use.
    assert stale((EVERYWHERE,), ACCURACY_USED + THROUGHPUT_PASSED) == []
    # Used by neither: stale.
    assert stale((EVERYWHERE,), ACCURACY_PASSED + THROUGHPUT_PASSED) == [EVERYWHERE]


def test_an_entry_of_the_accuracy_check_is_judged_by_the_accuracy_pass() -> None:
    assert stale((ACCURACY,), ACCURACY_PASSED) == [ACCURACY]
    assert stale((ACCURACY,), ACCURACY_USED) == []
    # A throughput pass never sees results of the accuracy check, so it says nothing of the entry.
    assert stale((ACCURACY,), THROUGHPUT_PASSED) == []
