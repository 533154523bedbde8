"""A softmax that is wrong only in a narrow region no fixed case reaches: the hunt's planted bug.

`--backend tests.narrow_bug:ExpTableSegment`. The story: a kernel's short-row path (rows of at most
SHORT_ROW entries) takes exp from a table whose segment for arguments in (-9.25, -9] has a coefficient
rounded to 12 bits, so every entry that trails its row's max by a gap d with 9 <= d < 9.25 comes out
2^-12 relatively too large before the row is normalised: 2^11 to 2^12 float32 ULPs (2^-12 / 2^-24,
by where y_j lies in its binade; 2070 for [0, -9]), where the budget allows about 8. In float16
and bfloat16 2^-12 is below an ULP: the bug shows in float32 and float64 only. Elsewhere, and for
log_softmax and logsumexp, it is tests.bad_softmax.Float64Upcast (correct).
"""

from __future__ import annotations

import numpy as np

from tests.bad_softmax import Float64Upcast, _back, _rows

SHORT_ROW = 4
BAND = (9.0, 9.25)
TABLE_ERROR = 2.0**-12


class ExpTableSegment(Float64Upcast):
    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        right = super().softmax(x, axis)
        rows = _rows(x, axis, np.float64)
        if not 2 <= rows.shape[-1] <= SHORT_ROW:
            return right
        with np.errstate(all="ignore"):
            d = np.max(rows, axis=-1, keepdims=True) - rows
            band = (d >= BAND[0]) & (d < BAND[1])
            e = np.exp(-d) * np.where(band, 1.0 + TABLE_ERROR, 1.0)
            wrong = _back(e / np.sum(e, axis=-1, keepdims=True), x, axis)
        hit = np.moveaxis(np.broadcast_to(band.any(axis=-1, keepdims=True), rows.shape), -1, axis)
        return np.where(hit, wrong, right)
