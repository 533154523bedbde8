"""scipy.special: softmax, log_softmax and logsumexp, called as a user would call them.

Attention's forms are composed as a scipy user writes them (scipy.special has no mask argument:
logsumexp's `b` weights the exponentials, it does not drop entries): np.where(mask, x * scale, -inf),
then the op. The composition stays in the input's dtype, which is the dtype scipy computes in (16-bit
inputs are not widened here or by scipy): the scale and -inf are taken as scalars of that dtype, since
ml_dtypes' bfloat16 times a Python float would give float32. A row with nothing kept is all -inf,
and scipy's shifted softmax and log_softmax give it NaN (0/0; measured), logsumexp -inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softmax_suite.protocol import ATTENTION_OPTIONS, Backend, BackendUnavailable


def composed(x: np.ndarray, scale: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """x * scale, -inf where mask is False, in x's dtype."""
    kind = x.dtype.type
    with np.errstate(all="ignore"):  # the garbage under a mask may overflow when scaled
        if scale is not None:
            x = x * kind(scale)
        if mask is not None:
            x = np.where(mask, x, kind(-np.inf))
    return x


def load() -> Backend:
    try:
        import scipy
        import scipy.special
    except ImportError as error:
        raise BackendUnavailable(f"scipy is not installed ({error}); pip install scipy") from None

    def op(function: Any) -> Any:
        def call(x: np.ndarray, axis: int, scale: float | None = None, mask: np.ndarray | None = None) -> Any:
            return function(composed(x, scale, mask), axis=axis)

        return call

    return Backend(
        name="scipy",
        version=scipy.__version__,
        ops={
            "softmax": op(scipy.special.softmax),
            "log_softmax": op(scipy.special.log_softmax),
            "logsumexp": op(scipy.special.logsumexp),
        },
        to_device=lambda x, device: x,
        to_numpy=np.asarray,
        copy=np.copy,
        describe=lambda device: {"threads": 1},  # numpy's ufuncs and reductions run on one thread
        options=ATTENTION_OPTIONS,
        # Measured (scipy 1.17): a fully masked row gives softmax and log_softmax NaN, logsumexp -inf.
        fully_masked="nan",
    )
