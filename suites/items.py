"""The pytest functions of the checks, made from the op table: one per op and check, each
carrying its op and check, so that the table, not a function's name, says what an item asks.

A test module of the suite is one line: globals().update(check_functions("accuracy", FORWARD_OPS)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from softmax_suite.ops import op_named
from softmax_suite.suites.accuracy import Target

# The attribute the runner's pytest plugin reads: (op, check).
MARK = "softmax_suite_target"
CHECKS = ("accuracy", "invariants", "throughput")


def _accuracy() -> Callable:
    def test(target: Target, check_accuracy) -> None:
        check_accuracy(target)
    return test


def _invariants() -> Callable:
    def test(target: Target, check_invariants) -> None:
        check_invariants(target)
    return test


def _throughput() -> Callable:
    def test(target: Target, check_throughput) -> None:
        check_throughput(target)
    return test


MAKERS = {"accuracy": _accuracy, "invariants": _invariants, "throughput": _throughput}


def check_functions(check: str, ops: Iterable[str]) -> dict[str, Callable]:
    """test_<op> (accuracy) or test_<op>_<check> for each op, by name: the ids read
    `test_softmax[torch-cpu-float32-glossary]` and `test_softmax_invariants[...]`."""
    functions = {}
    for name in ops:
        op = op_named(name)
        if check == "invariants" and op.vjp:
            raise ValueError(f"the invariants are a forward op's; {name} is a VJP")
        test = MAKERS[check]()
        test.__name__ = test.__qualname__ = f"test_{name}" + ("" if check == "accuracy" else f"_{check}")
        test.__doc__ = f"{check} of {name}"
        setattr(test, MARK, (name, check))
        functions[test.__name__] = test
    return functions
