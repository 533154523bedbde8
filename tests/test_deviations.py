"""Known deviations (suites.deviations): the stale report judges an entry only on results that hold
every check it covers."""

from __future__ import annotations

from suites.deviations import Deviation, stale

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
