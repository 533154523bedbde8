"""The softmax family as attention calls it, softmax(scale * x) over the entries a mask keeps, in
the oracle's terms: float64 logits that hold the product exactly, and the product's rounding in
the budget.

The exact question. z_j = s x_j for a kept entry and -inf for a masked one, whatever x_j holds
there (NaN and +-inf included). The oracle's policy for -inf entries (docs/invariants.md) then
gives a masked entry softmax 0, log_softmax -inf and a VJP of 0, exactly; the cotangent of a masked
output is set to 0 first, since a masked output is a constant (-inf or 0) whose gradient is 0.
A VJP of the scaled op is s J(z)^T g = J(z)^T (s g), so the VJPs' oracle takes the cotangents s g.

Exactness. s x_j and s g_j are computed in float64, exact when the significands of s and of the
format fit in 53 bits together (a scale of 24 bits for float32, any power of two for float64;
check_scale says which scales a format takes), unless they fall below 2^-969 (an error says so).
Such products have up to p + b bits, which the fast path is told (fastpath.inputs_of).

The product's rounding. A backend computes z^_j = fl(s x_j) = z_j (1 + d_j), |d_j| <= u, before
the softmax, so its logits are off by D_j = z_j d_j before any other rounding. To first order
softmax_j moves by the relative amount D_j - sum_k y_k D_k = sum_{k != j} y_k (D_j - D_k), whose
size is at most

    u P_j,   P_j = (1 - y_j) |z_j| + sum_{k != j} y_k |z_k|,

which log_softmax_j takes as an absolute error, and logsumexp moves by sum_k y_k D_k, at most
u sum_k y_k |z_k|. These enter the budgets (oracle.budget) as further gaps: P_j is added to the
gap |x_j - a| of softmax, log_softmax and the VJPs (whose y_j carries it), and sum_k y_k |z_k| to
logsumexp's W. A power-of-two scale rounds nothing and adds nothing. The bound is not
|z_j| + sum_k y_k |z_k|: the argmax's own rounding moves every logit's share alike, so a dominant
entry of 2^35 costs its softmax nothing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from softmax_suite.formats import Format, format_of
from softmax_suite.ops import SOFTMAX_VJP_OPS
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.exact import Reference, forward_references
from softmax_suite.oracle.gradients import vjp_references


def significant_bits(value: float) -> int:
    """The bits of value's significand from its leading to its last set bit (1 for a power of two)."""
    mantissa, _ = math.frexp(abs(value))
    bits = int(mantissa * 2**53)
    return 53 - ((bits & -bits).bit_length() - 1) if bits else 0


def check_scale(scale: float, fmt: Format) -> None:
    """A scale the oracle takes for inputs of fmt: positive, finite, and of few enough bits that
    its products with the format's values are exact in float64; a ValueError that says so."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale {scale!r}: use a positive finite number (the logits are multiplied by it)")
    room = 53 - fmt.p
    if significant_bits(scale) > max(room, 1):
        raise ValueError(f"scale {scale!r} has {significant_bits(scale)} significant bits; with {fmt.name} "
                         f"inputs the exact oracle takes at most {room} (round the scale into {fmt.name}: "
                         "the scale a framework multiplies by)")


def logits(x: np.ndarray, scale: float | None, mask: np.ndarray | None) -> np.ndarray:
    """z = scale * x exactly in float64, -inf where mask (broadcast to x, True = keep) is False."""
    z = x.astype(np.float64)
    if scale is not None:
        check_scale(scale, format_of(x.dtype))
        with np.errstate(invalid="ignore", under="ignore"):
            z *= scale
            # Below 2^-969 a product of 53 bits or fewer would lose its last bits to underflow (a
            # masked entry's does not count: it is -inf below).
            lost = (np.abs(z) < 2.0**-969) & (x != 0)
            if mask is not None:
                lost &= np.broadcast_to(mask, x.shape)
        if lost.any():
            raise ValueError(f"scale {scale!r} takes an input entry ({float(x[lost][0])!r}) below 2^-969, "
                             "where the product is not exact; use a larger scale or larger logits")
    if mask is not None:
        z[~np.broadcast_to(mask, x.shape)] = -np.inf
    return z


def scaled_cotangents(g: np.ndarray, g_row: np.ndarray, scale: float | None,
                      mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(s g with 0 where masked, s g_row), exact in float64 (module docstring)."""
    s = 1.0 if scale is None else scale
    full = g.astype(np.float64) * s
    if mask is not None:
        full[~np.broadcast_to(mask, g.shape)] = 0.0
    return full, g_row.astype(np.float64) * s


def references(vjp: bool, x: np.ndarray, axis: int, cotangents: tuple[np.ndarray, np.ndarray] | None,
               scale: float | None, mask: np.ndarray | None) -> dict[str, Reference]:
    """The exact references of the forward ops (or, with cotangents, the VJPs) of softmax(scale * x)
    over mask's kept entries, rounded into x's format, with the product's rounding in their terms."""
    fmt = format_of(x.dtype)
    z = logits(x, scale, mask)
    bits = fmt.p if scale is None or significant_bits(scale) == 1 else fmt.p + significant_bits(scale)
    with fastpath.inputs_of(bits):
        if vjp:
            found = vjp_references(z, *scaled_cotangents(*cotangents, scale, mask), axis, fmt)
        else:
            found = forward_references(z, axis, fmt)
    if scale is None or significant_bits(scale) == 1:
        return found
    return with_product_rounding(found, z, axis)


def with_product_rounding(found: dict[str, Reference], z: np.ndarray, axis: int) -> dict[str, Reference]:
    """The references with P_j added to their gaps and sum_k y_k |z_k| to logsumexp's W (module
    docstring)."""
    axis %= z.ndim
    with np.errstate(invalid="ignore", over="ignore"):
        size = np.where(np.isfinite(z), np.abs(z), 0.0)
        y = found["softmax"].rounded.astype(np.float64) if "softmax" in found \
            else np.asarray(found[SOFTMAX_VJP_OPS[0]].terms["y"])
        y = np.where(np.isfinite(y), y, 0.0)
        share = y * size
        weighted = np.sum(share, axis=axis, keepdims=True)
        extra = (1 - y) * size + (weighted - share)
    changed = {}
    for op, reference in found.items():
        terms = dict(reference.terms)
        if op == "logsumexp":
            terms["weighted_gap"] = terms["weighted_gap"] + np.squeeze(weighted, axis)
        else:
            terms["gap"] = terms["gap"] + extra
            if "sum_abs_g_y_gap" in terms:  # A_gap = sum_i |g_i| y_i gap_i, with the new gaps
                with np.errstate(invalid="ignore"):
                    g_abs = np.broadcast_to(terms["g_abs"], z.shape)
                    added = np.sum(g_abs * y * extra, axis=axis, keepdims=True)
                terms["sum_abs_g_y_gap"] = terms["sum_abs_g_y_gap"] + added
        changed[op] = dataclasses.replace(reference, terms=terms)
    return changed
