"""numpy's softmax, taking SLOW_SOFTMAX_SECONDS (default 0.05) more per call: a run that lasts long
enough for tests/test_resume.py to kill it halfway."""

from __future__ import annotations

import os
import time

import numpy as np

from softmax_suite.backends import numpy_backend


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    time.sleep(float(os.environ.get("SLOW_SOFTMAX_SECONDS", "0.05")))
    return numpy_backend.softmax(x, axis)
