"""Forward accuracy: softmax, log_softmax and logsumexp of every case against the exact oracle.

The plugin (softmax_suite.runner.plugin) parametrizes `target` over backend x device x dtype x case.
"""

from softmax_suite.suites.accuracy import Target


def test_softmax(target: Target, check_accuracy) -> None:
    check_accuracy(target)


def test_log_softmax(target: Target, check_accuracy) -> None:
    check_accuracy(target)


def test_logsumexp(target: Target, check_accuracy) -> None:
    check_accuracy(target)
