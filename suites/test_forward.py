"""Forward accuracy: softmax, log_softmax and logsumexp of every case against the exact oracle.

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case.
"""

from softmax_suite.ops import FORWARD_OPS
from softmax_suite.suites.items import check_functions

globals().update(check_functions("accuracy", FORWARD_OPS))
