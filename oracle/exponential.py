"""exp(d) of exact gaps d = dh + dl <= 0 on numpy arrays, as m * 2^E with a proven relative bound.

The binary exponent E is an integer array kept apart from m, so values far below float64's
range (down to exp(-MAX_GAP)) keep their full relative accuracy.

Argument reduction (both accuracies). lam = ln 2 / 2^18 = C1 + C2 + C3 + C4 + rho, where C1,
C2, C3 hold 23 significant bits each, C4 is a float64 and |rho| < 2^-140 (all from mpmath at
import). N = rint(dh * K) with K ~ 1/lam, |N| < 2^30 for |d| <= MAX_GAP = 2048, so N*C1, N*C2
and N*C3 are exact; dh - N*C1 is exact by Sterbenz's lemma (dh and N*C1 lie within a factor 2
of each other when N != 0). With N = 2^18 E + 64 i + j (0 <= i < 4096, 0 <= j < 64):

    exp(d) = 2^E * T[i] * S[j] * exp(r),  T[i] = 2^(i/4096),  S[j] = 2^(j/2^18),  r = d - N lam,

and |r| <= (1/2 + 2^-22) lam + |dl| < 2^-19.4 (K's rounding moves N by at most 2^-23).

float64 accuracy (exp_float). r = ((dh - N C1) - N C2) + (dl - N C3) errs by at most
4u |r| + u |N C3| + |N| |C4 + rho| < 2^-69 (u = 2^-53). p = 1 + r (1 + r/2) approximates e^r
within |r|^3/6 e^|r| < 2^-60.6, and its three roundings add u (1 + 2^-18). T[i], S[j] are
rounded to float64 (u each) and m = T S p rounds twice (u each): in all, with the second-order
products, |m 2^E - exp(d)| <= FLOAT_ERROR exp(d), FLOAT_ERROR = 6u.

Double-word accuracy (exp_double). r = rh + rl is formed with two_sum from dh - N C1, N C2,
N C3 and dl, the four rounding errors (each below 2^-72) and N C4 summed in float64: error
below 2^-108. p = 1 + r + r^2/2 + r^3/6 + r^4/24: the remainder is below |r|^5/120 < 2^-103.9;
r^2 = two_prod(rh, rh) + 2 rh rl exactly up to 2^-145; the float64 part c = r^3/6 + r^4/24
(below 2^-60.8) errs by at most 2^-110; the final double-word sum 1 + rh + r^2/2 + small errs
by at most 2^-104.4. So p errs by less than 2^-102.5. T and S are double-words within 2^-106
of the exact values, and the two products add 2 MUL_ERROR (softmax_suite.oracle.doubleword): in all
DOUBLE_ERROR = 2^-100, with room to spare.
"""

from __future__ import annotations

from functools import cache

import mpmath
import numpy as np

from softmax_suite.oracle import doubleword as dw

MAX_GAP = 2048.0
FLOAT_ERROR = 6 * dw.U
DOUBLE_ERROR = 2.0**-100
_FRACTION_BITS = 18


@cache
def _constants() -> dict[str, object]:
    """Reduction constants and the tables, exact to well below 2^-106 (computed once)."""
    with mpmath.workprec(400):
        lam = mpmath.log(2) / 2**_FRACTION_BITS
        pieces, rest = [], lam
        for bits in (23, 23, 23, 53):
            piece = mpmath.mpf(mpmath.libmp.normalize(*rest._mpf_, bits, mpmath.libmp.round_nearest))
            pieces.append(float(piece))
            rest -= piece
        assert abs(rest) < mpmath.mpf(2) ** -140

        def table(count: int, denominator: int) -> tuple[np.ndarray, np.ndarray]:
            exact = [mpmath.power(2, mpmath.mpf(k) / denominator) for k in range(count)]
            high = np.array([float(v) for v in exact])
            low = np.array([float(v - mpmath.mpf(h)) for v, h in zip(exact, high, strict=True)])
            return high, low

        return {"K": float(1 / lam), "C": pieces, "T": table(4096, 4096),
                "S": table(64, 2**_FRACTION_BITS)}


# Adding 1.5 * 2^52 rounds |v| < 2^51 to an integer N, ties to even as rint does, and leaves the
# sum's bits at BITS + N (BITS a multiple of 2^18): one addition instead of rint and a conversion.
# Indices stay int64 (numpy's take converts others first); exponents become int32 (numpy's
# ldexp is several times slower with int64 exponents).
_SHIFTER = 1.5 * 2.0**52
_SHIFTER_BITS = int(np.float64(_SHIFTER).view(np.int64))


def _reduce(dh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N as float, E, i, j, dh - N C1) for gaps with |dh| <= MAX_GAP."""
    constants = _constants()
    shifted = np.ascontiguousarray(dh * constants["K"])
    shifted += _SHIFTER  # in place, here and below: fewer temporaries, the same roundings
    n = shifted - _SHIFTER
    bits = shifted.view(np.int64)
    exponent = bits >> _FRACTION_BITS
    exponent -= _SHIFTER_BITS >> _FRACTION_BITS
    index = bits >> 6
    index &= 4095
    head = n * constants["C"][0]
    np.subtract(dh, head, out=head)
    return n, exponent.astype(np.int32), index, bits & 63, head


def exp_float(dh: np.ndarray, dl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, E) with m 2^E = exp(dh + dl) within FLOAT_ERROR relative."""
    constants = _constants()
    _, c2, c3, _ = constants["C"]
    n, exponent, i, j, r = _reduce(dh)
    r -= n * c2
    r += dl - n * c3  # r = ((dh - N C1) - N C2) + (dl - N C3)
    p = 0.5 * r
    p += 1.0
    p *= r
    p += 1.0  # p = 1 + r (1 + r / 2)
    m = constants["T"][0].take(i)
    m *= constants["S"][0].take(j)
    m *= p
    return m, exponent


def exp_double(dh: np.ndarray, dl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mh, ml, E) with (mh + ml) 2^E = exp(dh + dl) within DOUBLE_ERROR relative."""
    constants = _constants()
    _, c2, c3, c4 = constants["C"]
    n, exponent, i, j, head = _reduce(dh)
    s, e1 = dw.two_sum(head, -(n * c2))
    s, e2 = dw.two_sum(s, -(n * c3))
    s, e3 = dw.two_sum(s, dl)
    rh, rl = dw.fast_two_sum(s, ((e1 + e2) + e3) - n * c4)
    qh, ql = dw.two_prod(rh, rh)
    cubic = (rh * qh) * (1.0 / 6.0 + rh * (1.0 / 24.0))
    small = ((rl + 0.5 * ql) + rh * rl) + cubic
    s1, f1 = dw.two_sum(rh, 0.5 * qh)
    s2, f2 = dw.fast_two_sum(np.ones_like(s1), s1)
    ph, pl = dw.fast_two_sum(s2, (f1 + f2) + small)
    th, tl = constants["T"][0].take(i), constants["T"][1].take(i)
    sh, sl = constants["S"][0].take(j), constants["S"][1].take(j)
    mh, ml = dw.mul(*dw.mul(th, tl, sh, sl), ph, pl)
    return mh, ml, exponent
