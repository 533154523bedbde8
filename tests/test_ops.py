"""The op table (softmax_suite.ops): every room knows every op it holds, the shapes and traffic it
derives are the ones the checks use, and the pytest items come from it."""

from __future__ import annotations

import numpy as np
import pytest

from softmax_suite import ops
from softmax_suite.backends.registry import load
from softmax_suite.oracle import budget, cache, theory
from softmax_suite.protocol import Backend
from softmax_suite.reports.semantics import SHORT_OPS
from softmax_suite.suites import invariants, throughput
from softmax_suite.suites.items import MARK, check_functions
from softmax_suite.suites.throughput import Shape


def test_every_room_has_a_formula_for_every_op() -> None:
    # required of every op: a budget (and its text); optional: an a-priori bound, invariants
    assert set(budget.BUDGET_FORMULAS) == set(ops.OPS)
    assert set(budget.VJP_BUDGETS) == set(ops.VJP_OPS)
    assert set(theory.FORMULAS) <= set(ops.OPS) and set(invariants.OP_INVARIANTS) <= set(ops.FORWARD_OPS)
    # today's ops have invariants; the softmax family has an a-priori bound, the loss ops not (their
    # budget is log_softmax's, summed: oracle.losses)
    assert set(theory.FORMULAS) == set(ops.SOFTMAX_FORWARD_OPS + ops.SOFTMAX_VJP_OPS)
    assert set(invariants.OP_INVARIANTS) == set(ops.FORWARD_OPS)
    assert {op.name: op.short for op in ops.TABLE} == SHORT_OPS
    # the oracle answers every op, the VJPs from their forward op's row
    x = np.array([[1.5, 2.2, -0.3, 0.8]])
    g = np.array([[0.5, -1.0, 0.25, 2.0]])
    for op in ops.TABLE:
        cotangents = (g, g[:, 0]) if op.vjp else None
        for reduction in ops.REDUCTIONS if op.loss else ("none",):
            loss = {"target": np.array([1]), "reduction": reduction} if op.loss else {}
            reference = cache.reference(op.name, x, -1, cotangents, **loss)
            assert reference.rounded.shape == ops.output_shape(op.name, x.shape, -1, reduction), op.name


def test_the_numpy_backend_has_every_op() -> None:
    numpy_backend = load("numpy")
    assert isinstance(numpy_backend, Backend) and set(numpy_backend.ops) == set(ops.OPS)


@pytest.mark.parametrize(("name", "output", "cotangent", "moved"), [
    # 4 rows of 8: x 32 elements, one output per row for logsumexp; the VJPs read g and write dx.
    ("softmax", (4, 8), None, 64),
    ("logsumexp", (4,), None, 36),
    ("softmax_vjp", (4, 8), (4, 8), 96),
    ("logsumexp_vjp", (4, 8), (4,), 68),
    # a loss reads x and the targets (one per row) and writes a loss per row ("none")
    ("cross_entropy", (4,), None, 40),
    ("cross_entropy_vjp", (4, 8), (4,), 72),
])
def test_shapes_and_traffic_follow_the_table(name: str, output: tuple, cotangent: tuple | None,
                                             moved: int) -> None:
    assert ops.output_shape(name, (4, 8), -1) == output
    rule = ops.op_named(name).cotangent
    assert (None if rule is None else ops.shaped(rule, (4, 8), 1)) == cotangent
    assert throughput.traffic_bytes(name, Shape("s", 4, 8), 2) == 2 * moved
    full, per_row = np.zeros((4, 8)), np.zeros(4)
    picked = ops.cotangent_of(name, full, per_row)
    assert (None if picked is None else picked.shape) == cotangent


def test_the_pytest_items_carry_their_op_and_check() -> None:
    made = check_functions("throughput", ops.OPS)
    assert list(made) == [f"test_{name}_throughput" for name in ops.OPS]
    assert getattr(made["test_logsumexp_vjp_throughput"], MARK) == ("logsumexp_vjp", "throughput")
    assert list(check_functions("accuracy", ["softmax"])) == ["test_softmax"]
    with pytest.raises(ValueError, match="forward op"):
        check_functions("invariants", ["softmax_vjp"])


def test_an_unknown_op_is_named_with_the_ops() -> None:
    with pytest.raises(KeyError, match="the ops are softmax, log_softmax"):
        ops.op_named("softmax_grad")
    assert ops.is_vjp("softmax_vjp") and not ops.is_vjp("softmax") and not ops.is_vjp("softmax_grad")


def test_the_ops_are_the_public_vocabulary() -> None:
    import softmax_suite

    assert softmax_suite.OPS == ops.OPS == ("softmax", "log_softmax", "logsumexp", "softmax_vjp",
                                            "log_softmax_vjp", "logsumexp_vjp", "cross_entropy",
                                            "cross_entropy_vjp")
    assert set(softmax_suite.FORWARD_OPS + softmax_suite.VJP_OPS) == set(ops.OPS)
    assert ops.LOSS_OPS == ("cross_entropy", "cross_entropy_vjp")
