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
