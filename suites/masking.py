"""What a fully masked row must give: the exact reference with such rows set by the backend's declared
convention (softmax_suite.protocol.FULLY_MASKED), and a record's account of a case's mask.

The softmax of no entries is 0/0. The oracle gives the IEEE answer, NaN (and logsumexp -inf, the
log of an empty sum); the "zero" convention of FlashAttention and torch's SDPA gives softmax 0 and
log_softmax -inf. Both are judged exactly; anything else (a uniform 1/n row, a NaN under "zero",
zeros under "nan") fails. The VJPs have no convention: every entry of such a row is masked, and a
masked entry's gradient is exactly 0 (a NaN there is the where-mask NaN gradient, a failure).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from softmax_suite.ops import is_vjp
from softmax_suite.oracle.exact import Reference

# The value each op's elements take on a fully masked row under "zero" (logsumexp keeps -inf), and
# the VJPs' under either.
ZERO_CONVENTION = {"softmax": 0.0, "log_softmax": -np.inf, "softmax_vjp": 0.0, "log_softmax_vjp": 0.0,
                   "logsumexp_vjp": 0.0}


def fully_masked_rows(mask: np.ndarray, axis: int) -> np.ndarray:
    """Per row (x's shape without axis): whether mask keeps none of its entries."""
    return ~np.any(mask, axis=axis)


def under_convention(reference: Reference, mask: np.ndarray, axis: int, convention: str) -> Reference:
    """reference with its fully masked rows as convention says ("nan": the oracle's own values); a
    VJP's are 0 whatever the convention."""
    if reference.op not in ZERO_CONVENTION or (convention == "nan" and not is_vjp(reference.op)):
        return reference
    rows = fully_masked_rows(mask, axis)
    if not rows.any():
        return reference
    where = np.broadcast_to(np.expand_dims(rows, axis % mask.ndim), reference.shape)
    value = ZERO_CONVENTION[reference.op]
    # The oracle's terms there are NaN (its row is 0/0), and a NaN budget would let any value pass: an
    # exact 0 owes nothing but an underflow's unit, so every term is 0.
    terms = {name: np.where(where, 0.0, term) if np.shape(term) == reference.shape else term
             for name, term in reference.terms.items()}
    return dataclasses.replace(
        reference,
        rounded=np.where(where, reference.rounded.dtype.type(value), reference.rounded),
        # The exact value's parts: mant 0 is an exact zero, -inf a non-finite exact value.
        mant=np.where(where, value, reference.mant),
        mant_lo=np.where(where, 0.0, reference.mant_lo),
        scale=np.where(where, 0, reference.scale),
        terms=terms,
    )


def mask_summary(mask: np.ndarray, axis: int) -> dict:
    """A record's account of a case's mask: entries kept and masked, rows with none kept."""
    return {"kept": int(mask.sum()), "masked": int(mask.size - mask.sum()),
            "fully_masked_rows": int(fully_masked_rows(mask, axis).sum())}


def returned_convention(op: str, got: np.ndarray, mask: np.ndarray, axis: int) -> str | None:
    """What op returned on the fully masked rows: "nan" (every element NaN), "zero" (the "zero"
    convention's values: 0, or -inf for log_softmax and logsumexp) or "other"; None without such rows."""
    rows = fully_masked_rows(mask, axis)
    if not rows.any():
        return None
    where = rows if got.shape == rows.shape else np.broadcast_to(np.expand_dims(rows, axis % mask.ndim),
                                                                  got.shape)
    values = got[where].astype(np.float64)
    if np.isnan(values).all():
        return "nan"
    zero = -np.inf if op in ("log_softmax", "logsumexp") else 0.0
    return "zero" if np.all(values == zero) else "other"
