"""Error budgets: how far from the exact value a correct shifted implementation may land.

The budget follows the rounding-error analysis of Blanchard, D. J. Higham and N. J. Higham,
"Accurately computing the log-sum-exp and softmax functions" (IMA J. Numer. Anal. 41(4), 2021),
Alg. 4.1 and Thm 4.3, applied componentwise, with u = 2^-p the unit roundoff of the output format:

* x_j - a is rounded with error <= u |x_j - a|, and exp turns that into a relative error of
  |x_j - a| u in exp(x_j - a): the gap term c_exp * |x_j - a|.
* The sum of the n exponentials has relative error <= sigma(n) u for pairwise (or blocked, or
  wider-accumulated) summation, sigma(n) = ceil(log2 n): the term c_sum * sigma(n). Recursive
  summation in the output format, with its (n - 1) u worst case, is outside the budget on
  purpose: that is the "float16 accumulation" bug.
* Each term's own exp error weighs in by its share of the sum: W = sum_i y_i |x_i - a|.
* Those two move exp's argument by up to t = c_exp (|x_j - a| + W) u, a relative error of e^t - 1:
  below, read each such c_exp (...) u as expm1 of it, which is the same to first order and stays a
  bound where t is not small (a scaled logit's rounding, oracle.scaled, can move it by nats).
* c0 covers the O(1) roundings (exp, division, log1p, the final rounding).

    softmax_j:      |err| <= [(c0 + c_exp (|x_j - a| + W) + c_sum sigma(n)) u + D_sub] y_j + ulp_min
    logsumexp:      |err| <= E_L + u |lse|
    log_softmax_j:  |err| <= c_exp |x_j - a| u + E_L + u |z_j|
    with            E_L = (L + q (c0 + c_sum sigma(n)) + c_exp W) u + D_sub,
                    L = log1p(t), q = t / (1 + t), t = sum_{i != argmax} exp(x_i - a)

(ulp_min, one unit of the smallest subnormal, is the underflow of exp and of the division.)

Exponentials below the smallest normal lose the relative accuracy the terms above assume:
each rounds with an absolute error of up to half a unit of the smallest subnormal (a whole
unit allows for an exp that is not correctly rounded there), and one that is flushed to zero
loses itself. With N_sub such terms in the row and T_sub their sum (n_subnormal and
subnormal_tail of the reference), the computed sum t errs by up to

    D_sub = N_sub ulp_min  (+ T_sub for a backend measured to flush subnormals to zero)

on top of the relative error above. Since 1 + t >= 1, that is a relative error of at most
D_sub in 1 + t, which softmax_j inherits (u times the bracket above, plus D_sub, relative),
and an absolute error of at most D_sub in L = log1p(t), which logsumexp and log_softmax
inherit (E_L below gains D_sub). It is negligible unless the exact result itself is as tiny as
the underflowed terms: logsumexp([0, -104, ..., -104]) in float32, 370 entries, is the sum
2.5e-43 of terms of 6.8e-46 each, below half the smallest subnormal (1.4e-45), where a correct
float32 implementation returns anything from 0 to about 2 N_sub ulp_min.
The budget of an element, in ULPs of its exact value, is 0.5 + |err| / ulp(v). The q factor
is what the log1p form buys: log(sum) instead of log1p loses L entirely when one entry
dominates (logsumexp([0, -40]) = 4.25e-18, log(sum) returns 0) and exceeds the budget.

The VJPs (cotangent g, A = sum_i |g_i| y_i, A_gap = sum_i |g_i| y_i |x_i - a|) are computed
from y with the relative error rho_j u, rho_j = c0 + c_exp (|x_j - a| + W) + c_sum sigma(n)
+ D_sub / u,
above; each further product, difference and sum adds its own rounding:

    softmax_vjp_j:     y (g - <g, y>)  |err| <= u y_j [(rho_j + 2)(|g_j| + A)
                                            + (c0 + c_exp W + 2 c_sum sigma(n)) A + c_exp A_gap]
                                            + ulp_min (1 + |g_j| + A)
    log_softmax_vjp_j: g - y sum(g)    |err| <= u [|g_j| + y_j sum_i |g_i| (rho_j + c_sum sigma(n) + 2)]
                                            + ulp_min (1 + sum_i |g_i|)
    logsumexp_vjp_j:   g y             |err| <= u |g| y_j (rho_j + 1) + ulp_min (1 + |g|)

(An implementation that keeps y in the output format may see y_j underflow, off by up to
ulp_min; the multiplier of y_j carries that into dx_j: the ulp_min terms. Where flushing to
zero is accepted, the unit of the result's own underflow is the smallest normal, and so is
y_j's where y_j is below it: a flushing implementation returns 0 there, so the check of such
elements is only that loose; flush_to_zero = "fail" checks them to the last subnormal.)
The log_softmax VJP is conventionally computed from the saved output, y_j = exp(z_j^), and
the rounding of z_j = x_j - lse adds |z_j| u to y_j's relative error: for that op rho_j
carries a further c_exp (|x_j - a| + log1p(t)).

These bound the error by u times the natural scale of the terms (y_j (|g_j| + A) and
|g_j| + y_j sum |g_i|), not by |dx_j|: where g - <g, y> cancels, as with a constant
cotangent whose exact softmax VJP is 0, a backward-stable implementation stays within them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from softmax_suite.formats import Format, format_of
from softmax_suite.oracle.exact import Reference
from softmax_suite.oracle.rounding import ulp_exponent


@dataclass(frozen=True)
class BudgetConstants:
    """The constants of the budget; configurable in pyproject.toml [tool.softmax-suite.budget]."""

    c0: float = 3.0
    c_exp: float = 1.0
    c_sum: float = 2.0

    def as_dict(self) -> dict:
        return asdict(self)


# e^600 - 1 = 3.8e260 is past any relative error a correct value can show (a float64 in (0, 1] is
# at least 4.9e-324; a wider gap makes the exact value itself round to 0), and times a value's
# ULP count (at most 2^64) it stays finite, where e^710 would be inf and inf * 0 NaN.
EXP_ERROR_CAP = 600.0


def _exp_error(t: np.ndarray) -> np.ndarray:
    """The relative error e^t - 1 of exp under an argument error t (module docstring), capped at
    EXP_ERROR_CAP."""
    return np.expm1(np.minimum(t, EXP_ERROR_CAP))


def summation_depth(n: int) -> int:
    """sigma(n) = ceil(log2 n): the depth of a pairwise summation tree over n terms."""
    return math.ceil(math.log2(n)) if n > 1 else 0


# The VJPs made like log_softmax's, g - y sum(g): cross-entropy's gradient is one (oracle.losses).
LOG_SOFTMAX_VJPS = ("log_softmax_vjp", "cross_entropy_vjp")


def _softmax_vjp(terms: dict, rho: np.ndarray, k: BudgetConstants, summation: float) -> np.ndarray:
    y, g, weight = terms["y"], terms["g_abs"], terms["sum_abs_g_y"]
    inner = (k.c0 + k.c_exp * terms["weighted_gap"] + 2 * summation) * weight \
        + k.c_exp * terms["sum_abs_g_y_gap"]
    return np.where(y > 0, y * ((rho + 2) * (g + weight) + inner), 0.0)


def _log_softmax_vjp(terms: dict, rho: np.ndarray, k: BudgetConstants, summation: float) -> np.ndarray:
    y = terms["y"]
    return terms["g_abs"] + np.where(y > 0, y * terms["sum_abs_g"] * (rho + summation + 2), 0.0)


def _cross_entropy_vjp(terms: dict, rho: np.ndarray, k: BudgetConstants, summation: float) -> np.ndarray:
    # log_softmax's VJP at the smoothed target's cotangent, and the rounding of its factor (a mean's
    # 1 / N): one more unit of the natural scale (oracle.losses).
    return _log_softmax_vjp(terms, rho, k, summation) + natural_scale("log_softmax_vjp", terms)


def _logsumexp_vjp(terms: dict, rho: np.ndarray, k: BudgetConstants, summation: float) -> np.ndarray:
    y = terms["y"]
    return np.where(y > 0, terms["g_abs"] * y * (rho + 1), 0.0)


def natural_scale(op: str, terms: dict) -> np.ndarray:
    """The natural scale of a VJP element, the size of the terms it is made of: y_j (|g_j| + A),
    |g_j| + y_j sum_i |g_i| and |g| y_j (module docstring)."""
    y, g = terms["y"], terms["g_abs"]
    if op == "softmax_vjp":
        return y * (g + terms["sum_abs_g_y"])
    return g + y * terms["sum_abs_g"] if op in LOG_SOFTMAX_VJPS else g * y


def vjp_multiplier(op: str, terms: dict) -> np.ndarray:
    """What multiplies y_j in the VJP: an underflow of y_j (up to ulp_min) is scaled by it."""
    if op == "softmax_vjp":
        return terms["g_abs"] + terms["sum_abs_g_y"]
    return terms["sum_abs_g"] if op in LOG_SOFTMAX_VJPS else terms["g_abs"]


def vjp_underflow(op: str, terms: dict, fmt: Format, flush_to_zero: bool) -> np.ndarray:
    """ulp_min (1 + multiplier): the underflow of the result and of y_j, carried into dx_j. Where
    flushing is accepted, any result below the smallest normal may be 0, and so may a y_j below
    it: their unit is then the smallest normal."""
    with np.errstate(invalid="ignore"):
        flushable = flush_to_zero & (terms["y"] < fmt.min_normal)
    unit = np.where(flushable, fmt.min_normal, fmt.min_subnormal)
    return underflow_unit(fmt, flush_to_zero) + unit * vjp_multiplier(op, terms)


def sum_underflow(terms: dict, fmt: Format, flush_to_zero: bool) -> np.ndarray:
    """D_sub: the absolute error of the sum t from exponentials below the smallest normal
    (module docstring)."""
    return terms["n_subnormal"] * fmt.min_subnormal + (terms["subnormal_tail"] if flush_to_zero else 0.0)


def underflow_unit(fmt: Format, flush_to_zero: bool) -> float:
    """The absolute error one underflow may cost: the smallest subnormal, or where flushing to
    zero is accepted the smallest normal."""
    return fmt.min_normal if flush_to_zero else fmt.min_subnormal


# The error of each VJP element in units of u (module docstring), from the reference's terms.
# Each op's budget as text, for the records and the report (docs/budgets.md derives them).
BUDGET_FORMULAS = {
    "softmax": "[(c0 + c_exp (|x_j - a| + W) + c_sum ceil(log2 n)) u + D_sub] y_j + ulp_min",
    "log_softmax": "c_exp |x_j - a| u + E_L + u |z_j|",
    "logsumexp": "E_L + u |lse|",
    "softmax_vjp": "u y_j [(rho_j + 2)(|g_j| + A) + (c0 + c_exp W + 2 c_sum ceil(log2 n)) A "
                   "+ c_exp A_gap] + ulp_min (1 + |g_j| + A)",
    "log_softmax_vjp": "u [|g_j| + y_j sum|g| (rho_j + c_exp |z_j| + c_sum ceil(log2 n) + 2)] "
                       "+ ulp_min (1 + sum|g|)",
    "logsumexp_vjp": "u |g| y_j (rho_j + 1) + ulp_min (1 + |g|)",
    "cross_entropy": "sum_c h_c (c_exp |x_c - a| u + E_L + u |z_c|) + c_sum ceil(log2 C) u [e > 0] loss "
                     "+ c0 u loss; over rows: + c_sum ceil(log2 N) u sum (sum), + c0 u mean (mean)",
    "cross_entropy_vjp": "log_softmax_vjp's at g = -F h (h_c = (1 - e) w_t [c = t] + e w_c / C) "
                         "+ u (|g_j| + y_j sum|g|)",
}

VJP_BUDGETS = {"softmax_vjp": _softmax_vjp, "log_softmax_vjp": _log_softmax_vjp,
               "logsumexp_vjp": _logsumexp_vjp, "cross_entropy_vjp": _cross_entropy_vjp}


@dataclass(frozen=True)
class Budget:
    """Per-element budgets in units of 2^exponent: the ULP of the exact value, or for a VJP
    whose allowance dwarfs that ULP (an exact 0 from cancellation) a unit 2^-60 of the
    allowance, so that neither the budget nor the error overflows float64."""

    units: np.ndarray
    exponent: np.ndarray
    ulp_exponent: np.ndarray

    @property
    def ulp(self) -> np.ndarray:
        """The budget in ULPs of the exact value (inf where that overflows)."""
        with np.errstate(over="ignore"):
            return np.ldexp(self.units, self.exponent - self.ulp_exponent)


def budget_ulp(reference: Reference, constants: BudgetConstants = BudgetConstants(),
               flush_to_zero: bool = False) -> np.ndarray:
    """Per-element error budget in ULPs of the exact value (inf where no number is expected)."""
    return budget(reference, constants, flush_to_zero).ulp


def budget(reference: Reference, constants: BudgetConstants = BudgetConstants(),
           flush_to_zero: bool = False) -> Budget:
    """Per-element error budget (inf where no number is expected). flush_to_zero accepts
    intermediates flushed to zero: the VJPs' underflow unit becomes the smallest normal."""
    fmt = format_of(reference.dtype)
    u = fmt.u
    c0, c_exp, c_sum = constants.c0, constants.c_exp, constants.c_sum
    summation = c_sum * summation_depth(reference.row_length)
    terms = reference.terms
    scale = reference.scale
    quantum = ulp_exponent(scale, fmt, reference.mant)
    unit = quantum
    magnitude = np.abs(reference.mant)  # |v| / 2^scale, in [1, 2) or 0
    with np.errstate(all="ignore"):
        relative_units = np.ldexp(magnitude, scale - quantum)  # |v| / ulp(v)
        if reference.op == "cross_entropy":  # its terms are the multipliers (oracle.losses)
            return _loss_budget(terms, constants, fmt, quantum, flush_to_zero, np.isfinite(reference.mant))
        underflowed = sum_underflow(terms, fmt, flush_to_zero)
        log_error = (terms["log_tail"] + terms["tail"] * (c0 + summation)
                     + c_exp * terms["weighted_gap"]) * u + underflowed
        if reference.op == "softmax":
            # The gaps' error moves exp's argument: a relative error of e^t - 1, not t, once t is not small.
            rel = (c0 + summation) * u + _exp_error(c_exp * (terms["gap"] + terms["weighted_gap"]) * u) \
                + underflowed
            spread = np.where(magnitude == 0, 0.0, rel * relative_units)
            # A flushed exp or quotient gives a flushed result, which is counted apart
            # (flushed_subnormal): the unit stays the smallest subnormal here.
            underflow = np.ldexp(fmt.min_subnormal, -quantum)
            units = 0.5 + spread + underflow
        elif reference.op == "logsumexp":
            units = 0.5 + np.ldexp(log_error, -quantum) + u * relative_units
        elif reference.op == "log_softmax":
            absolute = c_exp * terms["gap"] * u + log_error
            units = 0.5 + np.ldexp(absolute, -quantum) + u * relative_units
        elif reference.op in VJP_BUDGETS:
            shift = terms["gap"] + terms["weighted_gap"]
            if reference.op in LOG_SOFTMAX_VJPS:  # y_j = exp(z_j^) from the rounded output
                shift = shift + terms["gap"] + terms["log_tail"]
            rho = c0 + _exp_error(c_exp * shift * u) / u + summation + underflowed / u
            allowance = u * VJP_BUDGETS[reference.op](terms, rho, constants, summation) \
                + vjp_underflow(reference.op, terms, fmt, flush_to_zero)
            unit = np.maximum(quantum, np.frexp(allowance)[1] - 61)
            units = np.ldexp(0.5, quantum - unit) + np.ldexp(allowance, -unit)
        else:
            raise ValueError(f"no budget for op {reference.op!r}")
    finite = np.isfinite(reference.mant)
    return Budget(units=np.where(finite, units, np.inf), exponent=np.where(finite, unit, quantum),
                  ulp_exponent=quantum)


def _loss_budget(terms: dict, k: BudgetConstants, fmt: Format, quantum: np.ndarray, flush_to_zero: bool,
                 finite: np.ndarray) -> Budget:
    """cross_entropy's budget in ULPs of its exact value, from the multipliers of each constant."""
    with np.errstate(all="ignore"):
        absolute = fmt.u * (k.c0 * terms["k_c0"] + k.c_exp * terms["k_exp"] + k.c_sum * terms["k_sum"]
                            + terms["k_one"]) + fmt.min_subnormal * terms["k_sub"] \
            + (terms["k_tail"] if flush_to_zero else 0.0)
        units = 0.5 + np.ldexp(absolute, -quantum)
    return Budget(units=np.where(finite, units, np.inf), exponent=quantum, ulp_exponent=quantum)
