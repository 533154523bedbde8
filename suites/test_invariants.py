"""Invariants: the properties a correct softmax, log_softmax and logsumexp keep (suites.invariants:
sums, shifts, permutations, order, sign, exp(log_softmax) = softmax, lse >= max, determinism).

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case; ids read
`test_softmax_invariants[torch-cpu-float32-glossary]`.
"""

from softmax_suite.suites.invariants import OP_INVARIANTS
from softmax_suite.suites.items import check_functions

# the forward ops that have invariants, in the table's order
globals().update(check_functions("invariants", OP_INVARIANTS))
