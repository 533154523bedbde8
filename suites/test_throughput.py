"""Throughput: each op per backend, device, dtype and shape, timed with pytest-benchmark against
the same backend's copy of the same size (softmax_suite.suites.throughput). Runs in one process.

The plugin (runner.plugin) parametrizes `target` over backend x device x dtype x shape (--sweep).
"""

from softmax_suite.ops import TIMED_OPS
from softmax_suite.suites.items import check_functions

globals().update(check_functions("throughput", TIMED_OPS))
