"""The op table: every op of the softmax family as one record, read by every room.

How to add an op (docs/architecture.md has the whole walk-through):

1. Add its `Op` to TABLE below: its name, the forward op it belongs to (itself for a forward op),
   the shape of its output and, for a VJP, of its cotangent (LIKE_X: x's shape; PER_ROW: x's
   shape without the reduced axis; LOSS: a loss's, per row for reduction "none", a scalar
   otherwise), the short name the report's columns use, and loss=True for an op of the loss cases
   (integer targets and the loss's options: softmax_suite.suites.losses).
2. Give the oracle its exact formula (oracle/exact.py for a forward op, oracle/gradients.py for a
   VJP, oracle/losses.py for a loss), keyed by the op's name.
3. Give it a budget and the budget's formula as text (oracle/budget.py), keyed by its name.
4. Give each backend adapter a callable under its name: forward ops are called op(x, axis), VJPs
   op(x, g, axis); a loss op also takes target= and reduction= (softmax_suite.protocol).

Everything else reads this table: the pytest items (suites/test_*.py), the CLI's choices, the
shapes of inputs, cotangents and outputs, the bytes a call moves (throughput), reproducers and
the report's columns. tests/test_ops.py checks that every room knows every op.
"""

from __future__ import annotations

from dataclasses import dataclass

LIKE_X, PER_ROW, LOSS = "like_x", "per_row", "loss"
SHAPES = (LIKE_X, PER_ROW, LOSS)


@dataclass(frozen=True)
class Op:
    name: str
    forward: str
    short: str
    output: str
    cotangent: str | None = None
    loss: bool = False

    @property
    def vjp(self) -> bool:
        """A vector-Jacobian product: called op(x, g, axis), with a cotangent g."""
        return self.cotangent is not None

    @property
    def arguments(self) -> tuple[str, ...]:
        return ("x", "g", "axis") if self.vjp else ("x", "axis")


TABLE: tuple[Op, ...] = (
    Op("softmax", "softmax", "sm", LIKE_X),
    Op("log_softmax", "log_softmax", "lsm", LIKE_X),
    Op("logsumexp", "logsumexp", "lse", PER_ROW),
    # A VJP's cotangent has its forward op's output shape; its output has x's.
    Op("softmax_vjp", "softmax", "sm_vjp", LIKE_X, cotangent=LIKE_X),
    Op("log_softmax_vjp", "log_softmax", "lsm_vjp", LIKE_X, cotangent=LIKE_X),
    Op("logsumexp_vjp", "logsumexp", "lse_vjp", LIKE_X, cotangent=PER_ROW),
    # Cross-entropy of logits x (N, C) and integer targets (N,): the loss training calls softmax
    # through, and its gradient with respect to x for the loss's cotangent.
    Op("cross_entropy", "cross_entropy", "ce", LOSS, loss=True),
    Op("cross_entropy_vjp", "cross_entropy", "ce_vjp", LIKE_X, cotangent=LOSS, loss=True),
)

BY_NAME: dict[str, Op] = {op.name: op for op in TABLE}
OPS: tuple[str, ...] = tuple(op.name for op in TABLE)
FORWARD_OPS: tuple[str, ...] = tuple(op.name for op in TABLE if not op.vjp)
VJP_OPS: tuple[str, ...] = tuple(op.name for op in TABLE if op.vjp)
LOSS_OPS: tuple[str, ...] = tuple(op.name for op in TABLE if op.loss)
# The softmax family proper, which the oracle computes together (oracle.exact, oracle.gradients).
SOFTMAX_FORWARD_OPS: tuple[str, ...] = tuple(op for op in FORWARD_OPS if op not in LOSS_OPS)
SOFTMAX_VJP_OPS: tuple[str, ...] = tuple(op for op in VJP_OPS if op not in LOSS_OPS)
REDUCTIONS = ("none", "mean", "sum")
# The ops the throughput check times: a throughput shape has no targets, so the loss ops are not
# timed (docs/cross-entropy.md).
TIMED_OPS: tuple[str, ...] = tuple(op for op in OPS if op not in LOSS_OPS)


# Names other libraries give these ops: never accepted (a gradient is not always a VJP of the same
# cotangent), suggested in the message for an unknown op.
OP_SYNONYMS: dict[str, str] = {
    **{f"{op}_{word}": f"{op}_vjp" for op in ("softmax", "log_softmax", "logsumexp")
       for word in ("grad", "gradient", "backward", "bwd")},
    "logsoftmax": "log_softmax", "lse": "logsumexp", "log_sum_exp": "logsumexp",
    **{name: "cross_entropy" for name in ("crossentropy", "cross_entropy_loss", "nll_loss", "ce")},
    **{f"cross_entropy_{word}": "cross_entropy_vjp" for word in ("grad", "gradient", "backward", "bwd")},
}


def op_named(name: str) -> Op:
    """The table's record of an op; a KeyError that lists the ops for any other name."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}: the ops are {', '.join(OPS)}") from None


def is_vjp(name: str) -> bool:
    """Whether name is a VJP of the table (False for a name it does not hold: a results file of
    another version may name one)."""
    return name in BY_NAME and BY_NAME[name].vjp


def shaped(rule: str, shape: tuple[int, ...], axis: int, reduction: str = "none") -> tuple[int, ...]:
    """An array's shape under rule, for an input of shape reduced along axis (and a loss's
    reduction: a LOSS is one value for "mean" and "sum")."""
    if rule == LOSS and reduction != "none":
        return ()
    if rule == LIKE_X or not shape:
        return tuple(shape)
    axis %= len(shape)
    return tuple(size for i, size in enumerate(shape) if i != axis)


def output_shape(name: str, shape: tuple[int, ...], axis: int, reduction: str = "none") -> tuple[int, ...]:
    return shaped(op_named(name).output, shape, axis, reduction)


def cotangent_of(name: str, full, per_row, reduction: str = "none"):
    """Of the two cotangents built for a case (x's shape, and one per row), the one op takes (for a
    reduced loss, a scalar: the first of the per-row ones); None for a forward op."""
    rule = op_named(name).cotangent
    if rule == LOSS and reduction != "none":
        return per_row.reshape(-1)[:1].reshape(())
    return None if rule is None else full if rule == LIKE_X else per_row


def elements_moved(name: str, elements: int, rows: int) -> int:
    """The elements a call must read and write at least: x, the cotangent and the output, each
    either x's size or one per row (a loss's targets and per-row values: one per row)."""
    op = op_named(name)
    size = {LIKE_X: elements, PER_ROW: rows, LOSS: rows}
    targets = rows if op.loss else 0
    return size[LIKE_X] + size[op.output] + (size[op.cotangent] if op.cotangent else 0) + targets
