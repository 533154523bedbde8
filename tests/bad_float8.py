"""Planted float8 errors, for `--backend tests.bad_float8:Name` and tests/test_float8.py.

Each class computes the three forward ops as the numpy backend does (the shifted formulas in float32)
and differs only in how a float8 result is made, so that only the float8 cases can catch it: every
other dtype goes through the numpy backend unchanged. They declare the float8 formats (`dtypes`), as
a user's kernel does.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from softmax_suite.backends import numpy_backend
from softmax_suite.dtypes import DTYPES, FLOAT8_DTYPES


def _float8(x: np.ndarray) -> bool:
    return x.dtype.name in FLOAT8_DTYPES


def _wide(op: str, x: np.ndarray, axis: int) -> np.ndarray:
    """The numpy backend's op of x computed in float32, not yet rounded into x's dtype."""
    function = getattr(numpy_backend, op)
    return function(x.astype(np.float32), axis)


class _Planted:
    dtypes = DTYPES

    def finish(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The float32 results made float8: the planted error."""
        raise NotImplementedError

    def _op(self, op: str, x: np.ndarray, axis: int) -> np.ndarray:
        if not _float8(x):
            return getattr(numpy_backend, op)(x, axis)
        with np.errstate(all="ignore"):
            return self.finish(_wide(op, x, axis), x.dtype)

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return self._op("softmax", x, axis)

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return self._op("log_softmax", x, axis)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        return self._op("logsumexp", x, axis)


class ThroughFloat16(_Planted):
    """float32 -> float16 -> float8: two roundings. A float32 result a hair beyond a float8 midpoint
    becomes the midpoint in float16, which then goes to the even neighbour: up to 0.5 + 2^-8 ULP off
    (float16 keeps 11 bits) instead of 0.5. float16's range also ends at 65504, inside e5m2's."""

    def finish(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return values.astype(np.float16).astype(dtype)


class Truncated(_Planted):
    """float32 -> float8 by truncation toward zero (the significand's extra bits dropped), then
    round-to-nearest's overflow rule: up to 1 ULP off, always toward zero."""

    def finish(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        info = ml_dtypes.finfo(dtype)
        p, emin = info.nmant + 1, int(np.log2(float(info.tiny)))
        v = values.astype(np.float64)
        binade = np.frexp(v)[1] - 1
        quantum = (np.maximum(binade, emin) - p + 1).astype(np.int64)
        return np.ldexp(np.trunc(np.ldexp(v, -quantum)), quantum).astype(np.float32).astype(dtype)


class Saturating(_Planted):
    """The OCP spec's saturating conversion: a finite result beyond the format's max becomes +-max
    (float8_e4m3fn: 448) instead of overflowing (NaN in e4m3fn, inf in e5m2)."""

    def finish(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        top = float(ml_dtypes.finfo(dtype).max)
        return np.where(np.isfinite(values), np.clip(values, -top, top), values).astype(dtype)


class Float8Accumulation(_Planted):
    """The exponentials rounded into float8 and summed in float8, one by one (a float8 accumulator):
    1 + t stalls once t's terms fall below half an ULP of the running sum. Correct otherwise."""

    def _parts(self, x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.moveaxis(x.astype(np.float32), axis, -1)
        a = np.max(rows, axis=-1, keepdims=True, initial=-np.inf)
        e = np.exp(rows - a).astype(x.dtype)
        total = np.zeros((*e.shape[:-1], 1), x.dtype)
        for j in range(e.shape[-1]):
            total = (total.astype(np.float32) + e[..., j : j + 1].astype(np.float32)).astype(x.dtype)
        return rows, a, total.astype(np.float32)

    def _op(self, op: str, x: np.ndarray, axis: int) -> np.ndarray:
        if not _float8(x):
            return getattr(numpy_backend, op)(x, axis)
        with np.errstate(all="ignore"):
            rows, a, total = self._parts(x, axis)
            if op == "softmax":
                out = np.exp(rows - a) / total
            elif op == "log_softmax":
                out = rows - a - np.log(total)
            else:
                return (a + np.log(total))[..., 0].astype(x.dtype)
            return np.moveaxis(out, -1, axis).astype(x.dtype)
