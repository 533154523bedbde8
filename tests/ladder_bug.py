"""A softmax that is wrong only on long rows of (nearly) equal entries: the ladder move's planted bug.

`--backend tests.ladder_bug:HalfRowSum`. The story: a float16 kernel sums exp(x_j - max) in float32
but stores the row's sum in float16 before dividing. The stored sum is right to float16's precision
while it stays below 65520; a row of 65520 or more entries near its max sums past it, the sum rounds
to inf and every output to 0 (65519 equal entries: 1/65504 for 1/65519, within an ULP). No row of the
hunt's default lengths (up to 1024) or of the catalogue's short cases reaches it. Elsewhere (other
dtypes, log_softmax, logsumexp) it is tests.bad_softmax.Float64Upcast (correct).
"""

from __future__ import annotations

import numpy as np

from tests.bad_softmax import Float64Upcast, _back, _rows

OVERFLOW = 65520  # the least float32 sum float16 rounds to inf


class HalfRowSum(Float64Upcast):
    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.dtype != np.float16:
            return super().softmax(x, axis)
        rows = _rows(x, axis, np.float32)
        with np.errstate(all="ignore"):
            top = np.max(rows, axis=-1, keepdims=True)
            e = np.exp(rows - top)
            total = np.sum(e, axis=-1, keepdims=True, dtype=np.float32).astype(np.float16)
            wrong = _back(e / total.astype(np.float32), x, axis)
        right = super().softmax(x, axis)
        # Rows the policy decides (NaN, +inf, all -inf) are answered as the correct model does.
        regular = np.isfinite(np.moveaxis(top, -1, axis)) & ~np.isnan(x).any(axis=axis, keepdims=True)
        return np.where(regular, wrong, right)
