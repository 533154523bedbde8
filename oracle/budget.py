"""Error budgets: how far from the exact value a correct shifted implementation may land.

The budget follows the rounding-error analysis of Blanchard, Higham and Mary, "Accurately
computing the log-sum-exp and softmax functions" (IMA J. Numer. Anal. 41(4), 2021), Alg. 4.1
and Thm 4.3, applied componentwise, with u = 2^-p the unit roundoff of the output format:

* x_j - a is rounded with error <= u |x_j - a|, and exp turns that into a relative error of
  |x_j - a| u in exp(x_j - a): the gap term c_exp * |x_j - a|.
* The sum of the n exponentials has relative error <= sigma(n) u for pairwise (or blocked, or
  wider-accumulated) summation, sigma(n) = ceil(log2 n): the term c_sum * sigma(n). Recursive
  summation in the output format, with its (n - 1) u worst case, is outside the budget on
  purpose: that is the "float16 accumulation" bug.
* Each term's own exp error weighs in by its share of the sum: W = sum_i y_i |x_i - a|.
* c0 covers the O(1) roundings (exp, division, log1p, the final rounding).

    softmax_j:      |err| <= (c0 + c_exp (|x_j - a| + W) + c_sum sigma(n)) u y_j + ulp_min
    logsumexp:      |err| <= E_L + u |lse|
    log_softmax_j:  |err| <= c_exp |x_j - a| u + E_L + u |z_j|
    with            E_L = (L + q (c0 + c_sum sigma(n)) + c_exp W) u,
                    L = log1p(t), q = t / (1 + t), t = sum_{i != argmax} exp(x_i - a)

(ulp_min, one unit of the smallest subnormal, is the underflow of exp and of the division.)
The budget of an element, in ULPs of its exact value, is 0.5 + |err| / ulp(v). The q factor
is what the log1p form buys: log(sum) instead of log1p loses L entirely when one entry
dominates (logsumexp([0, -40]) = 4.25e-18, log(sum) returns 0) and exceeds the budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from oracle.exact import Reference
from oracle.formats import format_of
from oracle.rounding import ulp_exponent


@dataclass(frozen=True)
class BudgetConstants:
    """The constants of the budget; configurable in pyproject.toml [tool.softmax-suite.budget]."""

    c0: float = 3.0
    c_exp: float = 1.0
    c_sum: float = 2.0

    def as_dict(self) -> dict:
        return asdict(self)


def summation_depth(n: int) -> int:
    """sigma(n) = ceil(log2 n): the depth of a pairwise summation tree over n terms."""
    return math.ceil(math.log2(n)) if n > 1 else 0


def budget_ulp(reference: Reference, constants: BudgetConstants = BudgetConstants()) -> np.ndarray:
    """Per-element error budget in ULPs of the exact value (inf where no number is expected)."""
    fmt = format_of(reference.dtype)
    u = fmt.u
    c0, c_exp, c_sum = constants.c0, constants.c_exp, constants.c_sum
    summation = c_sum * summation_depth(reference.row_length)
    terms = reference.terms
    scale = reference.scale
    quantum = ulp_exponent(scale, fmt, reference.mant)
    magnitude = np.abs(reference.mant)  # |v| / 2^scale, in [1, 2) or 0
    with np.errstate(all="ignore"):
        relative_units = np.ldexp(magnitude, scale - quantum)  # |v| / ulp(v)
        log_error = (terms["log_tail"] + terms["tail"] * (c0 + summation)
                     + c_exp * terms["weighted_gap"]) * u
        if reference.op == "softmax":
            rel = (c0 + c_exp * (terms["gap"] + terms["weighted_gap"]) + summation) * u
            spread = np.where(magnitude == 0, 0.0, rel * relative_units)
            underflow = np.ldexp(1.0, fmt.emin - fmt.p + 1 - quantum)
            budget = 0.5 + spread + underflow
        elif reference.op == "logsumexp":
            budget = 0.5 + np.ldexp(log_error, -quantum) + u * relative_units
        elif reference.op == "log_softmax":
            absolute = c_exp * terms["gap"] * u + log_error
            budget = 0.5 + np.ldexp(absolute, -quantum) + u * relative_units
        else:
            raise ValueError(f"no budget for op {reference.op!r}")
    return np.where(np.isfinite(reference.mant), budget, np.inf)
