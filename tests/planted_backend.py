"""A softmax whose speed or accuracy a test changes between runs through the environment, under
one backend name (a baseline's key names the backend): PLANTED_SLOWDOWN=k computes it about k
times (k = 1.5: once more on the first half of each row), PLANTED_ERROR=k moves every output k
float32 ULPs up."""

from __future__ import annotations

import os

import numpy as np


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    wide = x.astype(np.float64)
    e = np.exp(wide - wide.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


class Softmax:
    name = "planted"
    dtypes = ("float32",)

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        extra = float(os.environ.get("PLANTED_SLOWDOWN", "1")) - 1
        for _ in range(int(extra)):
            _softmax(x, axis)
        if extra % 1:
            part = x.shape[axis] * (extra % 1)
            _softmax(np.take(x, np.arange(int(part)), axis=axis), axis)
        y = _softmax(x, axis)
        for _ in range(int(os.environ.get("PLANTED_ERROR", "0"))):
            y = np.nextafter(y, np.float32(np.inf))
        return y
