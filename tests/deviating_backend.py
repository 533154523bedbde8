"""scipy.special.logsumexp's two behaviours on bfloat16, planted, for the known-deviation tests: with
ml_dtypes 0.6 it promotes the input and returns float64 (an accuracy error, as the suite wants the
input's dtype back, yet a throughput that times fine); with ml_dtypes 0.7 it raises TypeError (an
error in every check)."""

from __future__ import annotations

import numpy as np


class Promotes:
    name = "promotes"
    version = "0"
    dtypes = ("bfloat16",)

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        wide = x.astype(np.float64)
        top = wide.max(axis=axis, keepdims=True)
        return np.squeeze(top + np.log(np.exp(wide - top).sum(axis=axis, keepdims=True)), axis=axis)


class Refuses(Promotes):
    name = "refuses"

    def logsumexp(self, x: np.ndarray, axis: int) -> np.ndarray:
        raise TypeError(f"dtype argument must be a NumPy dtype, but it is a {type(x.dtype)}.")
