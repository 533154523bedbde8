"""A-priori error bounds for the case's n, dtype and conditioning, beside the measured error.

Forward ops: Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the log-sum-exp
and softmax functions", IMA J. Numer. Anal. 41(4):2311-2330, 2021 (arXiv:1909.03469), in
their model (each operation, exp and log with relative error at most u = 2^-p; recursive
summation of n terms), for the shifted log1p algorithm (their Alg. 4.1), with s = t the sum
of exp(x_i - a) over i != argmax and a = max x:

    logsumexp:     |err| <= [log1p(s) + s/(1+s) (n + max_i (a - x_i))] u + u |lse|
    log_softmax_j: |err| <= |x_j - a| u + [log1p(s) + s/(1+s) (n + max_i (a - x_i))] u + u |z_j|
    softmax:       max_j |err_j| <= [n + 2 + 2 (x_max - x_min)] u max_j y_j    (Thm 4.3, per row)

The paper does not treat gradients. For the VJPs the same model gives, to first order, with
rho_j = n + 3 + |x_j - a| + max_i |x_i - a| (the (n + 3) u of a computed softmax component,
plus exp's amplification of the rounding of x_j - a and of the denominator's terms) and
A = sum_i |g_i| y_i:

    softmax_vjp_j:     |err| <= u y_j [(rho_j + 2)(|g_j| + A) + (2n + 3 + 2 max_i |x_i - a|) A]
    log_softmax_vjp_j: |err| <= u [|g_j| + y_j sum_i |g_i| (rho_j + n + 2)]
    logsumexp_vjp_j:   |err| <= u |g| y_j (rho_j + 1)

The model ignores underflow; each bound adds one unit of the smallest subnormal for the
underflow of exp (for the VJPs, times 1 + what multiplies y_j: softmax_suite.oracle.budget.vjp_underflow),
or of the smallest normal where flushing to zero is accepted, and the forward bounds the error
D_sub of the sum from exponentials below the smallest normal (absolute for logsumexp and
log_softmax, relative for softmax), as in softmax_suite.oracle.budget.
Only entries with finite x enter the max; masked entries contribute exact zeros.
"""

from __future__ import annotations

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.ops import is_vjp
from softmax_suite.oracle.budget import sum_underflow, underflow_unit, vjp_underflow
from softmax_suite.oracle.exact import Reference

SOURCE = ("Blanchard, D. J. Higham and N. J. Higham, IMA J. Numer. Anal. 41(4), 2021, "
          "Alg. 4.1 and Thm 4.3")
FORMULAS = {
    "logsumexp": "[log1p(s) + s/(1+s) (n + max_i (a - x_i))] u + u |lse|",
    "log_softmax": "|x_j - a| u + [log1p(s) + s/(1+s) (n + max_i (a - x_i))] u + u |z_j|",
    "softmax": "max_j |err_j| <= [n + 2 + 2 (x_max - x_min)] u max_j y_j (Thm 4.3, per row)",
    "softmax_vjp": "u y_j [(rho_j + 2)(|g_j| + A) + (2n + 3 + 2 max gap) A], "
                   "rho_j = n + 3 + |x_j - a| + max gap (first order, BHH model)",
    "log_softmax_vjp": "u [|g_j| + y_j sum |g_i| (rho_j + n + 2)] (first order, BHH model)",
    "logsumexp_vjp": "u |g| y_j (rho_j + 1) (first order, BHH model)",
}


def bound(reference: Reference, axis: int, flush_to_zero: bool = False) -> np.ndarray:
    """The a-priori bound on the absolute error of each element (for softmax: of each row's
    largest error, broadcast over the row); inf where the exact value is not finite."""
    fmt = format_of(reference.dtype)
    u, n, terms = fmt.u, reference.row_length, reference.terms
    tiny = underflow_unit(fmt, flush_to_zero)
    with np.errstate(all="ignore"):
        exact = np.abs(np.ldexp(reference.mant, np.clip(reference.scale, -2000, 2000)))
        underflowed = sum_underflow(terms, fmt, flush_to_zero) if not is_vjp(reference.op) else 0.0
        if reference.op in ("logsumexp", "log_softmax"):
            log_part = (terms["log_tail"] + terms["tail"] * (n + terms["max_gap"])) * u + underflowed
            gap = terms["gap"] * u if reference.op == "log_softmax" else 0.0
            result = gap + log_part + u * exact + tiny
        elif reference.op == "softmax":
            largest = np.max(exact, axis=axis, keepdims=True, initial=0.0)
            result = ((n + 2 + 2 * terms["max_gap"]) * u + underflowed) \
                * np.broadcast_to(largest, exact.shape) + tiny
        else:
            y, g = terms["y"], terms["g_abs"]
            rho = n + 3 + terms["gap"] + terms["max_gap"]
            underflow = vjp_underflow(reference.op, terms, fmt, flush_to_zero)
            if reference.op == "softmax_vjp":
                weight = terms["sum_abs_g_y"]
                inner = (rho + 2) * (g + weight) + (2 * n + 3 + 2 * terms["max_gap"]) * weight
                result = u * np.where(y > 0, y * inner, 0.0) + underflow
            elif reference.op == "log_softmax_vjp":
                result = u * (g + np.where(y > 0, y * terms["sum_abs_g"] * (rho + n + 2), 0.0)) \
                    + underflow
            elif reference.op == "logsumexp_vjp":
                result = u * np.where(y > 0, g * y * (rho + 1), 0.0) + underflow
            else:
                raise KeyError(f"no a-priori bound for {reference.op}: FORMULAS names the ops with one")
    return np.where(np.isfinite(reference.mant), result, np.inf)


def measured_over_bound(reference: Reference, abs_error: np.ndarray, axis: int,
                        flush_to_zero: bool = False) -> np.ndarray:
    """The measured error over the bound, per element (softmax: per row, on its largest error);
    NaN where the error is not a number."""
    bounds = bound(reference, axis, flush_to_zero)
    errors = abs_error
    if reference.op == "softmax" and errors.size:
        filled = np.where(np.isnan(errors), -np.inf, errors)
        row_max = np.max(filled, axis=axis, keepdims=True)
        errors = np.where(np.isnan(errors), np.nan, np.broadcast_to(row_max, errors.shape))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return errors / bounds
