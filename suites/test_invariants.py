"""Invariants: the properties a correct softmax, log_softmax and logsumexp keep (suites.invariants:
sums, shifts, permutations, order, sign, exp(log_softmax) = softmax, lse >= max, determinism).

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case; ids read
`test_softmax_invariants[torch-cpu-float32-glossary]`.
"""

from softmax_suite.suites.accuracy import Target


def test_softmax_invariants(target: Target, check_invariants) -> None:
    check_invariants(target)


def test_log_softmax_invariants(target: Target, check_invariants) -> None:
    check_invariants(target)


def test_logsumexp_invariants(target: Target, check_invariants) -> None:
    check_invariants(target)
