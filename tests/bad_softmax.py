"""Deliberately wrong softmax implementations, and one correct one, for `--backend tests.bad_softmax:Name`.

Each class has softmax, log_softmax and logsumexp(x, axis) on numpy arrays, returning the input dtype.
"""

from __future__ import annotations

import numpy as np


def _working(x: np.ndarray) -> type:
    """float32 for 16-bit inputs (as numpy_backend and the serious libraries do), else the input's."""
    return np.float32 if x.dtype.itemsize < 4 else x.dtype.type


def _rows(x: np.ndarray, axis: int, dtype: type) -> np.ndarray:
    """x with the reduction axis last and C-contiguous in dtype, so that np.sum sums pairwise."""
    return np.ascontiguousarray(np.moveaxis(x, axis, -1), dtype=dtype)


def _back(values: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Elementwise results with the reduction axis put back, rounded once into x's dtype."""
    return np.moveaxis(values, -1, axis).astype(x.dtype)


def _without_argmax(e: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A copy of e with one argmax entry of each row set to 0, so that the row sum is 1 + t."""
    e = e.copy()
    if e.shape[-1]:
        np.put_along_axis(e, np.argmax(d, axis=-1, keepdims=True), 0.0, axis=-1)
    return e


class Float64Upcast:
    """Correct: the shifted log1p formulas in float64, the special-value policy of oracle/exact.py,
    and one rounding into the input dtype at the end."""

    def _parts(self, x: np.ndarray, axis: int):
        rows = _rows(x, axis, np.float64)
        with np.errstate(all="ignore"):
            nan = np.isnan(rows).any(axis=-1, keepdims=True)
            posinf = np.isposinf(rows).any(axis=-1, keepdims=True)
            top = np.max(np.where(np.isnan(rows), -np.inf, rows), axis=-1, keepdims=True,
                         initial=-np.inf)
            # Rows with NaN, +inf, only -inf, or nothing are decided by the policy, not computed.
            regular = ~nan & np.isfinite(top)
            a = np.where(regular, top, 0.0)
            d = rows - a
            e = np.exp(d)
            t = np.sum(_without_argmax(e, np.where(np.isnan(d), -np.inf, d)), axis=-1, keepdims=True)
            irregular_lse = np.where(nan, np.nan, np.where(posinf, np.inf, -np.inf))
        return rows, regular, a, d, e, t, irregular_lse

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, regular, _, _, e, t, _ = self._parts(x, axis)
        return _back(np.where(regular, e / (1.0 + t), np.nan), x, axis)

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, regular, _, d, _, t, _ = self._parts(x, axis)
        return _back(np.where(regular, d - np.log1p(t), np.nan), x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, regular, a, _, _, t, irregular = self._parts(x, axis)
        return np.where(regular, a + np.log1p(t), irregular)[..., 0].astype(x.dtype)


class NoMaxShift:
    """Wrong: exp(x) / sum(exp(x)) with no max shift, so exp overflows (inf / inf = NaN) for logits
    beyond log(max) of the working format, and underflows (0 / 0) for very negative rows."""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        with np.errstate(all="ignore"):
            e = np.exp(_rows(x, axis, _working(x)))
            return _back(e / np.sum(e, axis=-1, keepdims=True), x, axis)

    def _lse(self, rows: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.log(np.sum(np.exp(rows), axis=-1, keepdims=True))

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        rows = _rows(x, axis, _working(x))
        with np.errstate(all="ignore"):
            return _back(rows - self._lse(rows), x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        return self._lse(_rows(x, axis, _working(x)))[..., 0].astype(x.dtype)


class LogOfSoftmax(Float64Upcast):
    """Wrong log_softmax: the log of the returned (rounded) softmax. The dominant entry's
    -log1p(t) is lost when y_k rounds near 1, and a probability that underflows to 0 gives -inf
    for a finite exact value. softmax and logsumexp are Float64Upcast's (correct)."""

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        y = self.softmax(x, axis)
        with np.errstate(all="ignore"):
            return np.log(y.astype(_working(x))).astype(x.dtype)


class Float16Accumulation:
    """Wrong: the shifted formulas, but every row sum is accumulated sequentially in float16
    (recursive summation, whatever the input dtype): a sum of ones stalls at 2048, and every
    row sum carries float16's relative error of 2^-11 or worse."""

    def _parts(self, x: np.ndarray, axis: int):
        rows = _rows(x, axis, _working(x))
        with np.errstate(all="ignore"):
            a = np.max(rows, axis=-1, keepdims=True, initial=-np.inf)
            d = rows - a
            e = np.exp(d)
        return a, d, e

    @staticmethod
    def _float16_sum(e: np.ndarray) -> np.ndarray:
        # cumsum (add.accumulate) stores each partial sum as float16 before the next add; unlike
        # add.reduce, which numpy sums pairwise in float32 for float16 and rounds only once.
        if not e.shape[-1]:
            return np.zeros((*e.shape[:-1], 1), dtype=e.dtype)
        with np.errstate(all="ignore"):
            return np.cumsum(e.astype(np.float16), axis=-1)[..., -1:].astype(e.dtype)

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, _, e = self._parts(x, axis)
        with np.errstate(all="ignore"):
            return _back(e / self._float16_sum(e), x, axis)

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        a, d, e = self._parts(x, axis)
        t = self._float16_sum(_without_argmax(e, d))
        with np.errstate(all="ignore"):
            return _back(np.where(np.isposinf(a), np.nan, d - np.log1p(t)), x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        a, d, e = self._parts(x, axis)
        t = self._float16_sum(_without_argmax(e, d))
        with np.errstate(all="ignore"):
            return np.where(np.isinf(a), a, a + np.log1p(t))[..., 0].astype(x.dtype)


class Float16RowSum(Float64Upcast):
    """Wrong for float16: softmax as e / sum(e) with the row sum rounded to float16 (numpy adds
    float16 pairwise in float32 and rounds once), as jax and scipy do: 65536 equal logits sum to
    65536, beyond float16's 65504, so the sum is inf and every output 0 where the exact one is
    the subnormal 2^-16. Other dtypes and ops are Float64Upcast's."""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.dtype != np.float16:
            return super().softmax(x, axis)
        rows = _rows(x, axis, np.float32)
        with np.errstate(all="ignore"):
            e = np.exp(rows - np.max(rows, axis=-1, keepdims=True, initial=-np.inf)).astype(np.float16)
            return _back(e / np.sum(e, axis=-1, keepdims=True), x, axis)


class LogSumNotLog1p:
    """Wrong logsumexp and log_softmax: a + log(sum) and d - log(sum) instead of the log1p form, in
    the working format. When one entry dominates, sum = 1 + t rounds and t's digits are lost
    (lse([0, -40]) in float64 comes out 0 instead of 4.25e-18). softmax is correct."""

    def _parts(self, x: np.ndarray, axis: int):
        rows = _rows(x, axis, _working(x))
        with np.errstate(all="ignore"):
            a = np.max(rows, axis=-1, keepdims=True, initial=-np.inf)
            d = rows - a
            total = np.sum(np.exp(d), axis=-1, keepdims=True)
        return a, d, total

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, d, total = self._parts(x, axis)
        with np.errstate(all="ignore"):
            return _back(np.exp(d) / total, x, axis)

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        a, d, total = self._parts(x, axis)
        with np.errstate(all="ignore"):
            return _back(np.where(np.isposinf(a), np.nan, d - np.log(total)), x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        a, _, total = self._parts(x, axis)
        with np.errstate(all="ignore"):
            return np.where(np.isinf(a), a, a + np.log(total))[..., 0].astype(x.dtype)


# Gradients. Each VJP op is op(x, g, axis): g has x's shape for softmax_vjp and log_softmax_vjp,
# and x's shape without the reduction axis for logsumexp_vjp.

def _wide(x: np.ndarray) -> type:
    """The format the gradients below are computed in: float64, and for float64 inputs the x87
    80-bit long double (64-bit significand, u = 2^-64), so that the one rounding into the input
    dtype at the end dominates the error in every dtype."""
    return np.longdouble if x.dtype.itemsize >= 8 else np.float64


def _probabilities(x: np.ndarray, axis: int, dtype: type) -> np.ndarray:
    """softmax(x) in dtype, reduction axis last, by the shifted formula exp(x - a) / sum; the
    policy's NaN for a row holding NaN or +inf, or only -inf; 0 for a masked (-inf) entry."""
    rows = _rows(x, axis, dtype)
    with np.errstate(all="ignore"):
        nan = np.isnan(rows).any(axis=-1, keepdims=True)
        posinf = np.isposinf(rows).any(axis=-1, keepdims=True)
        top = np.max(np.where(np.isnan(rows), -np.inf, rows), axis=-1, keepdims=True, initial=-np.inf)
        undefined = nan | posinf | np.isneginf(top)
        e = np.exp(rows - np.where(undefined, 0.0, top))
        return np.where(undefined, np.nan, e / np.sum(e, axis=-1, keepdims=True))


def _cotangent_rows(g: np.ndarray, axis: int, dtype: type) -> np.ndarray:
    """The full cotangent in dtype, reduction axis last, a row with a non-finite entry all NaN
    (the oracle's policy: a non-finite cotangent gives NaN VJPs for its row)."""
    rows = _rows(g, axis, dtype)
    return np.where(np.isfinite(rows).all(axis=-1, keepdims=True), rows, np.nan)


def _row_cotangent(g: np.ndarray, dtype: type) -> np.ndarray:
    """logsumexp's per-row cotangent in dtype, shaped to broadcast against rows (axis last)."""
    return np.asarray(g, dtype=dtype)[..., None]


class Float64UpcastGradients(Float64Upcast):
    """Correct: the analytic VJPs y (g - <g, y>), g - y sum(g) and g y, with x and g upcast
    (float64; float64 inputs in 80-bit long double), numpy's pairwise sums, and one rounding into
    the input dtype at the end. A row the forward policy makes NaN (NaN, +inf, only -inf) has NaN
    VJPs; a masked (-inf) entry has y = 0, so 0 for softmax and logsumexp and g_j for
    log_softmax. The forward ops are Float64Upcast's."""

    def softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = _probabilities(x, axis, _wide(x)), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(y * (gr - np.sum(gr * y, axis=-1, keepdims=True)), x, axis)

    def log_softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = _probabilities(x, axis, _wide(x)), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(gr - y * np.sum(gr, axis=-1, keepdims=True), x, axis)

    def logsumexp_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y = _probabilities(x, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(y * _row_cotangent(g, _wide(x)), x, axis)


_MIN_NORMAL = {np.dtype(np.float16): 2.0**-14, np.dtype(np.float32): 2.0**-126,
               np.dtype(np.float64): 2.0**-1022}


def _flushed(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """values with everything below the smallest normal of dtype made 0 (bfloat16 shares float32's)."""
    tiny = _MIN_NORMAL.get(np.dtype(dtype), 2.0**-126)
    return np.where(np.abs(values) < tiny, 0.0, values)


class FlushToZero(Float64UpcastGradients):
    """Correct but for flushing subnormals to zero, as a CPU in FTZ/DAZ mode does: y, the products
    made of it and every result below the smallest normal of the input dtype are 0."""

    def _y(self, x: np.ndarray, axis: int) -> np.ndarray:
        return _flushed(_probabilities(x, axis, _wide(x)), x.dtype)

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return _back(self._y(x, axis), x, axis)

    def softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = self._y(x, axis), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(_flushed(y * (gr - np.sum(gr * y, axis=-1, keepdims=True)), x.dtype), x, axis)

    def log_softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = self._y(x, axis), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(_flushed(gr - y * np.sum(gr, axis=-1, keepdims=True), x.dtype), x, axis)

    def logsumexp_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        with np.errstate(all="ignore"):
            return _back(_flushed(self._y(x, axis) * _row_cotangent(g, _wide(x)), x.dtype), x, axis)


class MissingInnerProduct:
    """Wrong softmax VJP: y * g, the - y <g, y> term dropped (the Jacobian's diagonal only).
    Computed as accurately as Float64UpcastGradients: the error is the missing term, y_j |<g, y>|."""

    def softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = _probabilities(x, axis, _wide(x)), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(y * gr, x, axis)


class WrongSign:
    """Wrong softmax VJP: y (<g, y> - g), the negated gradient. Right wherever the exact VJP is
    0 (a constant cotangent, a single-entry row), wrong by 2 |dx_j| elsewhere."""

    def softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = _probabilities(x, axis, _wide(x)), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(y * (np.sum(gr * y, axis=-1, keepdims=True) - gr), x, axis)


class LogSoftmaxVjpTimesG:
    """Wrong log_softmax VJP: g - y g instead of g - y sum(g) (the Jacobian's diagonal only).
    The error is y_j (sum(g) - g_j): none for a single-entry row."""

    def log_softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        y, gr = _probabilities(x, axis, _wide(x)), _cotangent_rows(g, axis, _wide(x))
        with np.errstate(all="ignore"):
            return _back(gr - y * gr, x, axis)


class Float16GradientAccumulation:
    """Wrong for 16-bit dtypes: the softmax and log_softmax VJPs computed entirely in the input
    dtype from the saved forward output y (the softmax rounded to the input dtype), each product
    and difference rounded to it, and <g, y> and sum(g) accumulated recursively in it (a running
    sum, np.cumsum: each partial sum rounded to the input dtype before the next add; unlike
    np.add.reduce, which sums float16 pairwise in float32). Terms below half an ULP of the partial
    sum vanish: a float16 sum of 0.75s stalls at 2048, a bfloat16 one at 256. float32 and float64
    are Float64UpcastGradients' (correct); logsumexp_vjp (no sum) is left out."""

    correct = Float64UpcastGradients()

    @staticmethod
    def _running_sum(terms: np.ndarray) -> np.ndarray:
        if not terms.shape[-1]:
            return np.zeros((*terms.shape[:-1], 1), dtype=terms.dtype)
        return np.cumsum(terms, axis=-1)[..., -1:]

    def _saved(self, x: np.ndarray, g: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(y, g) in x's dtype, reduction axis last: y rounded once from the correct softmax."""
        return _probabilities(x, axis, np.float64).astype(x.dtype), _rows(g, axis, x.dtype.type)

    def softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        if x.dtype.itemsize >= 4:
            return self.correct.softmax_vjp(x, g, axis)
        y, gr = self._saved(x, g, axis)
        with np.errstate(all="ignore"):
            return _back(y * (gr - self._running_sum(gr * y)), x, axis)

    def log_softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        if x.dtype.itemsize >= 4:
            return self.correct.log_softmax_vjp(x, g, axis)
        y, gr = self._saved(x, g, axis)
        with np.errstate(all="ignore"):
            return _back(gr - y * self._running_sum(gr), x, axis)


# ---------------------------------------------------------------------------------------------------
# Invariants (tests/test_invariants.py). Each class below breaks properties a correct softmax keeps
# (suites/invariants.py), chosen so that the invariants it fails are known exactly; the forward ops
# it does not define are Float64Upcast's (correct).

_PRECISION = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}


class Nondeterministic(Float64Upcast):
    """Wrong softmax: each call moves a different random half of the outputs that are not their row's
    largest one ULP toward zero, as a reduction whose order follows thread timing might. Every call
    stays within the budgets (each output is still within 1.5 ULP of the exact value, the row sum
    within its budget, the order kept), but no two calls agree."""

    def __init__(self) -> None:
        self.calls = 0

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        y = np.ascontiguousarray(super().softmax(x, axis))
        self.calls += 1
        wide = y.astype(np.float64)
        top = wide == np.max(wide, axis=axis, keepdims=True, initial=-np.inf)
        nudge = (np.random.default_rng(self.calls).random(y.shape) < 0.5) & ~top & (wide > 0)
        bits = y.view(f"u{y.itemsize}").copy()
        bits[nudge] -= 1  # the next number toward zero, for a positive finite value
        return bits.view(y.dtype)


class Float16Logits(Float64Upcast):
    """Wrong softmax for float32 and float64: the logits are rounded to float16 first (a cast in the
    wrong place of a mixed-precision kernel), then the correct softmax. fl16(x + c) - c is not fl16(x),
    so softmax(x + c) and softmax(x) differ by about |x| 2^-11 relatively; the rounding is monotone and
    element-wise, so sums, order, permutations and determinism are kept. (A float16 or bfloat16 input
    is not changed by it.)"""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return super().softmax(x.astype(np.float16).astype(x.dtype), axis)


class RemainderLoop(Float64Upcast):
    """Wrong softmax: a vectorised kernel whose scalar remainder loop, the last entry of each row, rounds
    its exponential to 8 significant bits (bfloat16's). The row is still normalised by the sum of what was
    computed and exp(x_j - a) <= 1 keeps its place, so sums and order hold; but which entry loses its bits
    depends on where it stands, so softmax(Px) is not P softmax(x)."""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        rows = _rows(x, axis, np.float64)
        with np.errstate(all="ignore"):
            e = np.exp(rows - np.max(rows, axis=-1, keepdims=True, initial=-np.inf))
            if e.shape[-1]:
                fraction, exponent = np.frexp(e[..., -1])
                e[..., -1] = np.ldexp(np.rint(fraction * 2**8) / 2**8, exponent)
            return _back(e / np.sum(e, axis=-1, keepdims=True), x, axis)


class Softmin(Float64Upcast):
    """Wrong: a sign slip, softmax(-x), log_softmax(-x) and logsumexp(-x). softmax and log_softmax keep
    their sums, shifts, permutations and determinism, but the largest output sits at the argmin;
    logsumexp(-(x + c)) = logsumexp(-x) - c, not + c."""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return super().softmax(-x, axis)

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return super().log_softmax(-x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        return super().logsumexp(-x, axis)


class LogMeanExp(Float64Upcast):
    """Wrong logsumexp and log_softmax: the log of the mean of the exponentials, not of their sum, so
    logsumexp - log n and log_softmax + log n (computed in float64, rounded once). logsumexp falls
    below max x in every row of n >= 2 entries that are not all equal; log_softmax turns positive at
    the largest entries and exp(log_softmax) is n softmax. Shifts and permutations are kept; softmax
    is correct."""

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, regular, _, d, _, t, _ = self._parts(x, axis)
        return _back(np.where(regular, d - np.log1p(t) + np.log(x.shape[axis]), np.nan), x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, regular, a, _, _, t, irregular = self._parts(x, axis)
        lse = np.where(regular, a + np.log1p(t) - np.log(max(x.shape[axis], 1)), irregular)
        return lse[..., 0].astype(x.dtype)


class ApproximateLog(Float64Upcast):
    """Wrong log_softmax: the normaliser's log taken by a fast approximation that errs low by a few
    units of u, here log1p(t) - 4u (u of the output format). Each log-probability moves by 4u, within a
    few ULPs of exp(log_softmax) = softmax, but where one entry dominates (t < 4u) its log-probability,
    exactly -log1p(t) ~ -t, comes out positive."""

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        _, regular, _, d, _, t, _ = self._parts(x, axis)
        u = 2.0 ** -_PRECISION[x.dtype.name]
        return _back(np.where(regular, d - (np.log1p(t) - 4 * u), np.nan), x, axis)


class HalfPrecisionNormaliser(Float64Upcast):
    """Wrong softmax for float32 and float64: exp(x - a) divided by the row sum S rounded to float16 (a
    mixed-precision slip in the normaliser). The order, shifts and permutations are kept, but each row
    sums to S / fl16(S), up to 2^-11 away from 1, and the correct log_softmax no longer agrees with it."""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        rows = _rows(x, axis, np.float64)
        with np.errstate(all="ignore"):
            e = np.exp(rows - np.max(rows, axis=-1, keepdims=True, initial=-np.inf))
            total = np.sum(e, axis=-1, keepdims=True).astype(np.float16).astype(np.float64)
            return _back(e / total, x, axis)
