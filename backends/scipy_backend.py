"""scipy.special: softmax, log_softmax and logsumexp, called as a user would call them."""

from __future__ import annotations

import numpy as np

from softmax_suite.protocol import Backend, BackendUnavailable


def load() -> Backend:
    try:
        import scipy
        import scipy.special
    except ImportError as error:
        raise BackendUnavailable(f"scipy is not installed ({error}); pip install scipy") from None

    return Backend(
        name="scipy",
        version=scipy.__version__,
        ops={
            "softmax": lambda x, axis: scipy.special.softmax(x, axis=axis),
            "log_softmax": lambda x, axis: scipy.special.log_softmax(x, axis=axis),
            "logsumexp": lambda x, axis: scipy.special.logsumexp(x, axis=axis),
        },
        to_device=lambda x, device: x,
        to_numpy=np.asarray,
        copy=np.copy,
        describe=lambda device: {"threads": 1},  # numpy's ufuncs and reductions run on one thread
    )
