"""numpy's softmax, taking SLOW_SOFTMAX_SECONDS (default 0.05) more per call: a run that lasts long
enough for tests/test_resume.py to kill it halfway. `slow_to_time` is numpy's softmax, but a minute a
call in the throughput pass: a run whose throughput child is there to be killed with it."""

from __future__ import annotations

import os
import time

import numpy as np

from softmax_suite.backends import numpy_backend

TIMING_SLEEP_S = 60.0


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    time.sleep(float(os.environ.get("SLOW_SOFTMAX_SECONDS", "0.05")))
    return numpy_backend.softmax(x, axis)


def slow_to_time(x: np.ndarray, axis: int) -> np.ndarray:
    # pytest names the running item in PYTEST_CURRENT_TEST; the throughput pass's are test_throughput's.
    if "test_throughput.py" in os.environ.get("PYTEST_CURRENT_TEST", ""):
        time.sleep(TIMING_SLEEP_S)
    return numpy_backend.softmax(x, axis)
