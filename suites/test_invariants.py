"""Invariants: the properties a correct softmax, log_softmax and logsumexp keep (suites.invariants:
sums, shifts, permutations, order, sign, exp(log_softmax) = softmax, lse >= max, determinism).

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case; ids read
`test_softmax_invariants[torch-cpu-float32-glossary]`.
"""

from softmax_suite.ops import FORWARD_OPS
from softmax_suite.suites.items import check_functions

globals().update(check_functions("invariants", FORWARD_OPS))
