"""Gradient accuracy: the VJPs of softmax, log_softmax and logsumexp against the exact oracle.

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case x
cotangent kind; ids read `test_softmax_vjp[torch-cpu-float32-glossary-random]`.
"""

from softmax_suite.ops import VJP_OPS
from softmax_suite.suites.items import check_functions

globals().update(check_functions("accuracy", VJP_OPS))
