"""Gradient accuracy: the VJPs of softmax, log_softmax and logsumexp against the exact oracle.

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case x
cotangent kind; ids read `test_softmax_vjp[torch-cpu-float32-glossary-random]`.
"""

from softmax_suite.suites.accuracy import Target


def test_softmax_vjp(target: Target, check_accuracy) -> None:
    check_accuracy(target)


def test_log_softmax_vjp(target: Target, check_accuracy) -> None:
    check_accuracy(target)


def test_logsumexp_vjp(target: Target, check_accuracy) -> None:
    check_accuracy(target)
